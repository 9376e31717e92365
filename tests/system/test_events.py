"""Live job events and streamed output, through the whole stack: API, worker, simulator.

The simulator streams at a pace (``stream_tps``) so that a reply arrives in many pieces,
and breaks streams on purpose (scripted ``stream_fault``s)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from producers.client import AsyncCourier, Courier, JobEvent
from tests.support.procs import ROOT, Proc
from tests.support.simulator import SimulatorHandle
from tests.support.stack import KEY1, assert_error, chat_body, start_worker, unique, wait_job

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(90)

TPS = 100  # events per second of a simulated stream: a reply of ~40 words takes ~0.4 s


@pytest.fixture(scope="module")
def worker(stack_env: dict[str, str]) -> Iterator[Proc]:
    """A worker that gives up on a stalled stream after 1 s."""
    proc = start_worker({**stack_env, "COURIER_STREAM_CHUNK_TIMEOUT_S": "1"})
    yield proc
    proc.stop(timeout=8)


@pytest.fixture()
def paced(sim: SimulatorHandle) -> SimulatorHandle:
    sim.configure(stream_tps=TPS)
    return sim


def read_events(client: httpx.Client, job_id: str, **kw: Any) -> list[tuple[int, str, Any]]:
    """Every event of the stream until the server closes it: (id, event, data)."""
    out: list[tuple[int, str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30, **kw) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if fields:
                    out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return out


def text_of(events: list[tuple[int, str, Any]]) -> str:
    """The output as a client rebuilds it: deltas, cleared at each reset."""
    text = ""
    for _, name, data in events:
        if name == "output.delta":
            text += data["text"]
        elif name == "output.reset":
            text = ""
    return text


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("model", ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
def test_deltas_make_the_output_of_a_plain_job(
    t1: httpx.Client, paced: SimulatorHandle, worker: Proc, model: str
) -> None:
    prompt = unique("stream me")
    streamed_id = submit(t1, chat_body(prompt, model, stream=True))
    events = read_events(t1, streamed_id)
    plain = wait_job(t1, submit(t1, chat_body(prompt, model)))

    ids = [event_id for event_id, _, _ in events]
    assert ids == list(range(1, len(ids) + 1))
    names = [name for _, name, _ in events]
    assert names[0] == "job.status" and names[-1] == "job.succeeded"
    assert names.count("output.delta") >= 3
    statuses = [data["status"] for _, name, data in events if name == "job.status"]
    assert statuses[:2] == ["queued", "running"]
    final = events[-1][2]
    assert final == t1.get(f"/v1/jobs/{streamed_id}").json()
    assert final["stream"] is True and plain["stream"] is False
    assert text_of(events) == final["result"]["output"]
    for field in ("output", "message", "finish_reason", "usage", "model"):
        assert final["result"][field] == plain["result"][field], field
    assert {data["model"] for _, name, data in events if name == "output.delta"} == {model}


def test_resume_equals_a_full_replay(
    t1: httpx.Client, paced: SimulatorHandle, worker: Proc
) -> None:
    job_id = submit(t1, chat_body(unique("resume"), stream=True))
    first: list[tuple[int, str, Any]] = []
    with t1.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as response:
        fields: dict[str, str] = {}
        for line in response.iter_lines():  # a few events, then the connection drops
            if line == "" and fields:
                first.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
                if len(first) == 4:
                    break
            elif line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    rest = read_events(t1, job_id, headers={"Last-Event-ID": str(first[-1][0])})
    replay = read_events(t1, job_id)  # the job has ended: all of it, then the server closes
    assert first + rest == replay
    assert read_events(t1, job_id, params={"after": "2"}) == replay[2:]
    assert read_events(t1, job_id, params={"after": str(replay[-1][0])}) == []


@pytest.mark.parametrize("fault", ["drop", "truncate", "malformed", "stall"])
def test_a_broken_stream_resets_and_starts_over(
    t1: httpx.Client, paced: SimulatorHandle, worker: Proc, fault: str
) -> None:
    prompt = unique(f"break {fault}")
    paced.faults([{"stream_fault": fault, "after_chunks": 6}], match=prompt)
    events = read_events(t1, submit(t1, chat_body(prompt, stream=True)))
    names = [name for _, name, _ in events]
    assert "output.reset" in names, names
    reset = names.index("output.reset")
    assert "output.delta" in names[:reset]  # the first attempt had published some
    assert events[reset][2]["attempt"] == 1 and events[reset][2]["reason"]
    after = [data for _, name, data in events[reset:] if name == "output.delta"]
    assert after and all(data["attempt"] == 2 for data in after)
    final = events[-1][2]
    assert names[-1] == "job.succeeded" and final["attempts"] == 2
    assert text_of(events) == final["result"]["output"]


def test_the_fallback_starts_over(t1: httpx.Client, paced: SimulatorHandle, worker: Proc) -> None:
    prompt = unique("fall back")
    paced.faults([{"stream_fault": "drop", "after_chunks": 5}], match=prompt)
    body = chat_body(
        prompt, stream=True, max_attempts=1, fallback_models=["anthropic:claude-haiku-4-5"]
    )
    events = read_events(t1, submit(t1, body))
    names = [name for _, name, _ in events]
    reset = names.index("output.reset")
    after = events[reset + 1 : -1]
    assert after and {data["model"] for _, _, data in after} == {"anthropic:claude-haiku-4-5"}
    assert [data["status"] for _, name, data in after if name == "job.status"] == ["running"]
    final = events[-1][2]
    assert final["result"]["model"] == "anthropic:claude-haiku-4-5"
    assert text_of(events) == final["result"]["output"]


def test_a_cancelled_stream_ends_with_the_cancellation(
    t1: httpx.Client, sim: SimulatorHandle, worker: Proc
) -> None:
    sim.configure(stream_tps=20)  # ~2 s per reply
    job_id = submit(t1, chat_body(unique("cancel me"), stream=True))
    events: list[str] = []
    with t1.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
                if events[-1] == "output.delta" and events.count("output.delta") == 2:
                    assert t1.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert events[-1] == "job.cancelled"


def test_errors_and_isolation(
    t1: httpx.Client, t2: httpx.Client, sim: SimulatorHandle, worker: Proc
) -> None:
    job_id = submit(t1, chat_body(unique("mine")))
    wait_job(t1, job_id)
    assert_error(t2.get(f"/v1/jobs/{job_id}/events"), 404, "not_found")
    assert_error(t1.get("/v1/jobs/job_nope/events"), 404, "not_found")
    for bad in ("abc", "-1", "1.5", "0-1"):
        response = t1.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": bad})
        assert_error(response, 400, "invalid_request")
    assert_error(t1.get(f"/v1/jobs/{job_id}/events", params={"after": "x"}), 400)
    assert_error(t1.get(f"/v1/jobs/{job_id}/events", params={"afterr": "1"}), 422)
    embedding = {"model": "openai:text-embedding-3-small", "kind": "embedding",
                 "request": {"input": ["x"]}, "stream": True}  # fmt: skip
    assert "stream" in assert_error(t1.post("/v1/jobs", json=embedding), 422)
    no_auth = httpx.get(t1.base_url.join(f"/v1/jobs/{job_id}/events"))
    assert no_auth.status_code == 401
    assert "courier_api_event_streams" in httpx.get(t1.base_url.join("/metrics")).text


def test_client_events_sync_and_async(api_url: str, paced: SimulatorHandle, worker: Proc) -> None:
    with Courier(api_url, KEY1) as courier:
        job = courier.submit("openai:gpt-4o-mini", prompt=unique("client"), stream=True)
        events = list(courier.events(job["id"]))
        tail = list(courier.events(job["id"], after=events[1].id))
    assert all(isinstance(e, JobEvent) for e in events) and events[-1].terminal
    assert tail == events[2:]
    text = "".join(e.data["text"] for e in events if e.event == "output.delta")
    assert text == events[-1].data["result"]["output"]

    async def follow() -> list[JobEvent]:
        async with AsyncCourier(api_url, KEY1) as courier:
            return [event async for event in courier.events(job["id"])]

    assert asyncio.run(follow()) == events


def test_cli_stream_prints_the_text(api_url: str, paced: SimulatorHandle, worker: Proc) -> None:
    prompt = unique("cli stream")
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "submit", "--model", "openai:gpt-4o-mini",
         "--prompt", prompt, "--stream"],
        cwd=ROOT,
        env={**os.environ, "COURIER_API_URL": api_url, "COURIER_API_KEY": KEY1},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Courier(api_url, KEY1) as courier:
        jobs = courier.list(status="succeeded", limit=20)
    outputs = {job["result"]["output"] for job in jobs if job["stream"]}
    assert done.stdout.rstrip("\n") in outputs
    assert len(done.stdout.strip()) > 10


def test_cli_wait_shows_progress_on_a_terminal(api_url: str, worker: Proc) -> None:
    """On a terminal, ``--wait`` draws the job's progress line (rich) before the JSON."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "submit", "--model", "openai:gpt-4o-mini",
         "--prompt", unique("tty"), "--wait"],
        cwd=ROOT,
        env={**os.environ, "COURIER_API_URL": api_url, "COURIER_API_KEY": KEY1,
             "TERM": "xterm", "COLUMNS": "160"},
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    screen = b""
    while select.select([master], [], [], 30)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        screen += data
    os.close(master)
    assert proc.wait(30) == 0
    text = screen.decode(errors="replace")
    job = json.loads(text[text.index("{") :])
    progress = text[: text.index("{")]
    assert job["id"] in progress and "succeeded" in progress and "attempt 1" in progress


def test_a_cached_answer_streams_as_one_delta(
    t1: httpx.Client, paced: SimulatorHandle, worker: Proc
) -> None:
    """A streamed job answered from the answer cache at submission ran no call: its events
    are its output as one delta, then its ending (and resume the same way)."""
    body = chat_body(unique("cache me"), stream=True, cache={"ttl_s": 600})
    first = read_events(t1, submit(t1, body))
    response = t1.post("/v1/jobs", json=body)
    assert response.status_code == 202 and response.json()["status"] == "succeeded"
    events = read_events(t1, response.json()["id"])
    assert [(i, name) for i, name, _ in events] == [(1, "output.delta"), (2, "job.succeeded")]
    assert text_of(events) == text_of(first) == events[-1][2]["result"]["output"]
    assert read_events(t1, response.json()["id"], params={"after": "1"}) == events[1:]
