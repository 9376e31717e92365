"""A sync handle on a running provider simulator (its ``/_sim/`` admin API)."""

from __future__ import annotations

from typing import Any

import httpx


class SimulatorHandle:
    """Where the simulator listens, and how to reset, configure and inspect it."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.openai_base_url = self.url + "/v1"
        self.anthropic_base_url = self.url

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(method, f"{self.url}/_sim/{path}", timeout=10, **kw)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        return bool(self._call("GET", "health").get("ok"))

    def reset(self) -> None:
        """Clear log, faults and rate windows; restore the start-up config."""
        self._call("POST", "reset")

    def configure(self, **kw: Any) -> dict[str, Any]:
        """Change ``latency``, ``error_rate``, ``rpm``, ``tpm``, ``seed``, ``fault_mix``
        (``{"429": 0.15, "500": 0.1}``), ``stream_tps`` or ``record_stream_times`` live."""
        result: dict[str, Any] = self._call("POST", "config", json=kw)
        return result

    def faults(self, faults: list[dict[str, Any]], match: str | None = None) -> None:
        """Queue scripted faults, e.g. ``[{"status": 429, "retry_after": 1.5}, {"delay": 30}]``;
        with ``match``, only requests whose model or message text contains it consume them."""
        body: dict[str, Any] = {"faults": faults}
        if match is not None:
            body["match"] = match
        self._call("POST", "faults", json=body)

    def pending_faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = self._call("GET", "faults")["faults"]
        return faults

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def outage(self, seconds: float, status: int = 503, match: str | None = None) -> None:
        """Answer every request (whose model contains ``match``) ``status`` for ``seconds``."""
        body: dict[str, Any] = {"seconds": seconds, "status": status}
        if match is not None:
            body["match"] = match
        self._call("POST", "outage", json=body)

    def recover(self) -> None:
        """End an outage now."""
        self._call("DELETE", "outage")

    def log(self, since: int = 0) -> list[dict[str, Any]]:
        """Requests received since the last reset, in arrival order."""
        requests: list[dict[str, Any]] = self._call("GET", "log", params={"since": since})[
            "requests"
        ]
        return requests
