"""What ``courier submit --wait`` and ``--stream`` show while a job runs.

On a terminal, ``--wait`` draws one live line with ``rich``: the status, the attempt, the
model, the place in the queue (read every couple of seconds while queued) and the time
elapsed, driven by the job's events (``GET /v1/jobs/{id}/events``). ``--stream`` writes the
output text to stdout as it arrives (a reset is told on stderr, and the text starts over
after it). The final job is returned to the caller, who prints it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from producers.client import Courier, Job

QUEUE_POLL_S = 2.0
STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "expired": "magenta",
}


class Progress:
    """The job's state as the line shows it; rendered afresh at every refresh."""

    def __init__(self, job: Job) -> None:
        self.job_id = str(job["id"])
        self.status = str(job.get("status", "queued"))
        self.attempt = int(job.get("attempts") or 0)
        self.model = str(job.get("model", ""))
        self.waiting_for: str | None = job.get("waiting_for")
        self.position: int | None = None
        self.started = time.monotonic()
        self.chars = 0

    def update(self, data: dict[str, Any]) -> None:
        self.status = str(data.get("status", self.status))
        self.attempt = int(data.get("attempt", data.get("attempts", self.attempt)) or 0)
        self.model = str(data.get("model", self.model))
        self.waiting_for = data.get("waiting_for")
        if self.status != "queued":
            self.position = None

    def __rich__(self) -> Text:
        line = Text()
        line.append(f"{self.job_id}  ")
        line.append(self.status, style=STATUS_STYLES.get(self.status, "bold"))
        if self.waiting_for:
            line.append(f" ({self.waiting_for})")
        if self.position is not None:
            line.append(f"  queue position {self.position}")
        line.append(f"  attempt {self.attempt}  {self.model}")
        if self.chars:
            line.append(f"  {self.chars} chars")
        line.append(f"  {time.monotonic() - self.started:.1f}s", style="dim")
        return line


def follow(courier: Courier, job: Job, *, show: bool, stream_to: TextIO | None) -> Job:
    """Follow the job's events until it ends; the job as it ended. ``show``: draw the
    progress line on stderr; ``stream_to``: write the output text there as it arrives."""
    progress = Progress(job)
    console = Console(stderr=True)
    final: Job | None = None
    stop = threading.Event()
    poller = None
    if show:
        poller = threading.Thread(target=_poll_queue, args=(courier, progress, stop), daemon=True)
        poller.start()
    live = Live(progress, console=console, refresh_per_second=8, transient=False)
    try:
        if show:
            live.start()
        for event in courier.events(progress.job_id):
            if event.event == "job.status":
                progress.update(event.data)
            elif event.event == "output.delta" and stream_to is not None:
                progress.chars += len(event.data["text"])
                stream_to.write(event.data["text"])
                stream_to.flush()
            elif event.event == "output.reset" and stream_to is not None:
                progress.chars = 0
                console.print(f"\n[output reset: {event.data.get('reason')}; starting over]")
            elif event.terminal:
                final = event.data
                progress.update(final)
    finally:
        stop.set()
        if show:
            live.stop()
    if stream_to is not None:
        stream_to.write("\n")
        stream_to.flush()
    return final if final is not None else courier.get(progress.job_id)


def _poll_queue(courier: Courier, progress: Progress, stop: threading.Event) -> None:
    """The place in the queue, while the job waits in one (events tell status changes,
    not a queue moving)."""
    while not stop.wait(QUEUE_POLL_S if progress.position is not None else 0.2):
        if progress.status != "queued":
            continue
        try:
            queue = courier.get(progress.job_id).get("queue") or {}
        except Exception:
            continue
        if progress.status == "queued" and queue.get("position") is not None:
            progress.position = int(queue["position"])
