"""Courier's provider simulator: the OpenAI and Anthropic HTTP APIs, deterministic and local.

``python -m simulator --port 9100 --latency 1 --rpm 60`` (or ``courier simulate``);
point the SDKs at ``http://127.0.0.1:9100/v1`` (OpenAI) or ``http://127.0.0.1:9100``
(Anthropic). Modules: ``app`` (routes), ``pipeline`` (the order of checks),
``openai_api`` / ``anthropic_api`` (wire shapes), ``replies`` (deterministic content),
``limits`` (RPM/TPM windows and headers), ``faults`` (scripted and random faults, outages),
``state`` (config, log), ``admin`` (``/_sim/``), ``server`` (CLI and uvicorn).
"""

from __future__ import annotations


def serve(
    host: str = "127.0.0.1",
    port: int = 9100,
    latency: float = 0.0,
    error_rate: float = 0.0,
    rpm: int = 0,
    tpm: int = 0,
    seed: int = 0,
) -> None:
    """Run the simulator in this process until interrupted (see :mod:`.server`)."""
    from simulator.server import serve as _serve

    _serve(host, port, latency, error_rate, rpm, tpm, seed)


def main(argv: list[str] | None = None) -> None:
    """The ``python -m simulator`` command line."""
    from simulator.server import main as _main

    _main(argv)
