"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol: enough to
load a page, run JavaScript in it, type and click like a person. No browser download: the
binary comes from the distribution (``.ci/run`` installs it)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support.procs import wait_until


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; a context manager."""

    def __init__(self, binary: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="courier-chromium-"))
        self.proc = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1280,2000",
                f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = self.profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", 30)
        port = port_file.read_text().split()[0]
        pages: list[dict[str, Any]] = []

        def page_listed() -> bool:
            pages[:] = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            return any(p.get("type") == "page" for p in pages)

        wait_until(page_listed, 30)
        page = next(p for p in pages if p.get("type") == "page")
        self.ws: ClientConnection = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.send("Network.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if "method" in message:
                self.events.append(message)
            elif message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def goto(self, url: str) -> None:
        """Load the page, waiting until its document is complete (not the previous one)."""
        self.evaluate("window.__courier_old_page = true")
        self.send("Page.navigate", url=url)
        self.wait_for(
            "!window.__courier_old_page && document.readyState === 'complete' && "
            f"location.href === {json.dumps(url)}"
        )

    def requests_leaving(self, origin: str) -> dict[str, str]:
        """Every request the page made to anywhere but ``origin``: URL → how it ended
        (``blocked:csp`` when the browser refused to send it)."""
        urls = {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        }
        ends: dict[str, str] = {}
        for e in self.events:
            if e["method"] == "Network.loadingFailed":
                reason = e["params"].get("blockedReason")
                ends[e["params"]["requestId"]] = f"blocked:{reason}" if reason else "failed"
        return {
            url: ends.get(rid, "sent")
            for rid, url in urls.items()
            if not url.startswith(origin) and not url.startswith(("data:", "blob:"))
        }

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """The expression's value once it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is between documents
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression}")
            time.sleep(0.1)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type, as keystrokes reach a React input."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        import base64

        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
