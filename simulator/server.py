"""Run the simulator: ``python -m simulator`` (and ``courier simulate``).

Latency is slept before the first byte, streams included. Keys are never
logged; the request log keeps only their last four characters.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from simulator.app import create_app
from simulator.state import SimConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="An OpenAI + Anthropic HTTP API simulator for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="probability of an injected fault"
    )
    parser.add_argument(
        "--fault-mix",
        default="",
        help="a share per injected status, e.g. 429=0.15,500=0.10,503=0.05 (replaces --error-rate)",
    )
    parser.add_argument("--rpm", type=int, default=0, help="requests/min per key (0 = no limit)")
    parser.add_argument("--tpm", type=int, default=0, help="tokens/min per key (0 = no limit)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the error-injection dice")
    parser.add_argument(
        "--stream-tps",
        type=float,
        default=0.0,
        help="events per second of a streamed answer (0 = all at once)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    return parser


def serve(
    host: str = "127.0.0.1",
    port: int = 9100,
    latency: float = 0.0,
    error_rate: float = 0.0,
    rpm: int = 0,
    tpm: int = 0,
    seed: int = 0,
    log_level: str = "warning",
    fault_mix: str = "",
    stream_tps: float = 0.0,
) -> None:
    """Serve until SIGINT/SIGTERM (in-flight requests get 1 s to finish)."""
    config = SimConfig(
        latency=latency, error_rate=error_rate, rpm=rpm, tpm=tpm, seed=seed, stream_tps=stream_tps
    )
    app = create_app(SimConfig().updated({**config.to_json(), "fault_mix": fault_mix}))
    mix = f" fault_mix={fault_mix}" if fault_mix else ""
    print(
        f"courier simulator on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1) "
        f"latency={latency}s error_rate={error_rate}{mix} rpm={rpm or 'unlimited'} "
        f"tpm={tpm or 'unlimited'} seed={seed} stream_tps={stream_tps or 'unpaced'}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="auto",
        http="auto",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=4096,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        serve(
            host=args.host,
            port=args.port,
            latency=args.latency,
            error_rate=args.error_rate,
            rpm=args.rpm,
            tpm=args.tpm,
            seed=args.seed,
            log_level=args.log_level,
            fault_mix=args.fault_mix,
            stream_tps=args.stream_tps,
        )
    except ValueError as exc:  # invalid settings
        raise SystemExit(f"simulator: {exc}") from None
