"""Conversations through the whole stack: API, worker, simulator (which logs each request's
messages as received, and refuses tool turns the providers would refuse).

A job names its parent (``parent_job_id``); the provider receives the parent's whole
conversation then the job's own messages; a child of an unfinished parent waits, holding no
worker slot, and starts once the parent succeeds, or fails ``parent_failed``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from core import keys
from producers.client import AsyncCourier, Courier
from tests.support.procs import ROOT, Proc
from tests.support.sim_requests import WEATHER_TOOL
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    KEY1,
    assert_error,
    chat_body,
    paused,
    start_worker,
    unique,
    wait_job,
)

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(120)

OPENAI, ANTHROPIC = "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"


@pytest.fixture()
def recording(sim: SimulatorHandle) -> SimulatorHandle:
    sim.configure(record_messages=True)
    return sim


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def turn(
    client: httpx.Client, text: str, parent: str | None = None, model: str = OPENAI, **req: Any
) -> dict[str, Any]:
    body = chat_body(text, model)
    body["request"].update(req)
    if parent:
        body["parent_job_id"] = parent
    return submit(client, body)


def received(sim: SimulatorHandle, marker: str) -> list[dict[str, Any]]:
    """The requests whose last message carries ``marker``, as the simulator received them."""
    return [
        entry
        for entry in sim.log()
        if entry.get("messages") and marker in json.dumps(entry["messages"][-1])
    ]


def texts(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in messages]


def test_the_provider_receives_the_line_in_order(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle
) -> None:
    one, two, three = unique("one"), unique("two"), unique("three")
    first = wait_job(t1, turn(t1, one, system="Be brief.")["id"])
    second = wait_job(t1, turn(t1, two, first["id"])["id"])
    third = wait_job(t1, turn(t1, three, second["id"])["id"])
    assert third["status"] == "succeeded", third
    assert third["parent_job_id"] == second["id"]
    assert third["conversation_id"] == first["id"] == first["conversation_id"]
    [request] = received(recording, three)
    assert texts(request["messages"]) == [
        ("system", "Be brief."),  # the root's, kept by children without their own
        ("user", one),
        ("assistant", first["result"]["output"]),
        ("user", two),
        ("assistant", second["result"]["output"]),
        ("user", three),
    ]
    transcript = t1.get(f"/v1/jobs/{third['id']}/conversation").json()
    assert transcript["conversation_id"] == first["id"]
    assert [(m["role"], m["job_id"]) for m in transcript["messages"]] == [
        ("system", first["id"]),
        ("user", first["id"]),
        ("assistant", first["id"]),
        ("user", second["id"]),
        ("assistant", second["id"]),
        ("user", third["id"]),
        ("assistant", third["id"]),
    ]
    assert transcript["messages"][-1]["content"] == third["result"]["output"]


def test_a_child_waits_without_a_slot_and_starts_when_its_parent_succeeds(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle, redis_url: str
) -> None:
    slow = unique("slow")
    recording.faults([{"delay": 3}], match=slow)
    parent = turn(t1, slow)
    child = turn(t1, unique("next"), parent["id"])
    assert child["status"] == "queued" and child["waiting_for"] == "parent"
    seen = t1.get(f"/v1/jobs/{child['id']}").json()
    assert seen["waiting_for"] == "parent" and seen.get("queue") is None
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:  # no place in a queue, no message, no lease: nothing of a worker's is held
        assert all(client.zscore(name, child["id"]) is None for name in keys.QUEUED_ALL)
        assert client.zscore(keys.RUNNING, child["id"]) is None
        assert client.sismember(keys.job_children(parent["id"]), child["id"])
    finally:
        client.close()
    ended = wait_job(t1, child["id"])
    parent = t1.get(f"/v1/jobs/{parent['id']}").json()
    assert ended["status"] == "succeeded", ended
    assert ended["attempts"] == 1
    # released by the parent's ending, not found later: the schedule's safety net would
    # take 30 s, the orphan check 90 s
    gap = _seconds(ended["started_at"]) - _seconds(parent["finished_at"])
    assert gap < 15, (parent["finished_at"], ended["started_at"])
    with Courier(str(t1.base_url), KEY1) as courier:
        events = [e.data for e in courier.events(child["id"])]
    waits = [e.get("waiting_for") for e in events if "status" in e and "attempt" in e]
    assert "parent" in waits


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_worker_killed_mid_parent_loses_neither_parent_nor_child(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle, stack_env: dict[str, str]
) -> None:
    """kill -9 of the worker running the parent: the parent's lease lapses, another worker
    runs it again, and its success releases the waiting child."""
    slow = unique("slow parent")
    recording.faults([{"delay": 30}], match=slow)
    with paused(worker):
        victim = start_worker({**stack_env, "COURIER_LEASE_TTL_S": "3"})
        try:
            parent = turn(t1, slow)
            deadline = time.monotonic() + 30
            while t1.get(f"/v1/jobs/{parent['id']}").json()["status"] != "running":
                assert time.monotonic() < deadline, "the parent never started"
                time.sleep(0.1)
            child = turn(t1, unique("after the crash"), parent["id"])
            assert child["waiting_for"] == "parent"
        finally:
            victim.kill9()
    ended = wait_job(t1, child["id"], timeout=60)
    assert ended["status"] == "succeeded", ended
    parent = t1.get(f"/v1/jobs/{parent['id']}").json()
    assert parent["status"] == "succeeded" and parent["attempts"] == 2


def test_a_failed_or_cancelled_parent_fails_its_waiting_line_without_a_call(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle
) -> None:
    doomed, kid_text, grandkid_text = unique("doomed"), unique("kid"), unique("grandkid")
    recording.faults([{"status": 400, "message": "bad request"}], match=doomed)
    with paused(worker):
        parent = submit(t1, chat_body(doomed) | {"max_attempts": 1})
        kid = turn(t1, kid_text, parent["id"])
        grandkid = turn(t1, grandkid_text, kid["id"])
    assert wait_job(t1, parent["id"])["status"] == "failed"
    for job, named in ((kid, parent["id"]), (grandkid, kid["id"])):
        ended = wait_job(t1, job["id"])
        assert ended["status"] == "failed" and ended["error"]["type"] == "parent_failed", ended
        assert named in ended["error"]["message"]
        assert ended["attempts"] == 0
    assert not received(recording, kid_text) and not received(recording, grandkid_text)

    with paused(worker):
        parent = turn(t1, unique("cancelled"))
        kid = turn(t1, unique("kid"), parent["id"])
        assert t1.post(f"/v1/jobs/{parent['id']}/cancel").status_code == 200
        ended = t1.get(f"/v1/jobs/{kid['id']}").json()  # at once: the same script
    assert ended["status"] == "failed" and ended["error"]["type"] == "parent_failed"
    late = turn(t1, unique("late"), parent["id"])  # a child of an ended, failed parent
    assert late["status"] == "failed" and late["error"]["type"] == "parent_failed"


def test_a_conversation_branches(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle
) -> None:
    root = wait_job(t1, turn(t1, unique("root"))["id"])
    left, right = unique("left"), unique("right")
    jobs = [turn(t1, text, root["id"]) for text in (left, right)]
    for job in jobs:
        assert wait_job(t1, job["id"])["status"] == "succeeded"
    for text, other in ((left, right), (right, left)):
        [request] = received(recording, text)
        assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
        assert other not in json.dumps(request["messages"])
    transcript = t1.get(f"/v1/jobs/{jobs[0]['id']}/conversation").json()
    assert right not in json.dumps(transcript)
    assert transcript["conversation_id"] == root["id"]


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_the_tool_loop_across_jobs(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle, model: str
) -> None:
    asked = turn(t1, unique("weather in Oslo?"), model=model, tools=[WEATHER_TOOL])
    asked = wait_job(t1, asked["id"])
    assert asked["result"]["finish_reason"] == "tool_calls", asked
    [call] = asked["result"]["message"]["tool_calls"]
    answer = unique("sunny")
    body = chat_body("", model) | {"parent_job_id": asked["id"]}
    body["request"]["messages"] = [{"role": "tool", "tool_call_id": call["id"], "content": answer}]
    done = wait_job(t1, submit(t1, body)["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["finish_reason"] == "stop" and done["result"]["output"]
    [request] = received(recording, answer)
    if model == OPENAI:
        assert [m["role"] for m in request["messages"]] == ["user", "assistant", "tool"]
        assert request["messages"][1]["tool_calls"][0]["id"] == call["id"]
    else:
        assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
        assert request["messages"][1]["content"][-1]["id"] == call["id"]
        assert request["messages"][2]["content"][0]["tool_use_id"] == call["id"]


@pytest.mark.parametrize(("first", "second"), [(OPENAI, ANTHROPIC), (ANTHROPIC, OPENAI)])
def test_a_conversation_crosses_providers(
    t1: httpx.Client, worker: Proc, recording: SimulatorHandle, first: str, second: str
) -> None:
    asked = turn(t1, unique("weather?"), model=first, system="Use tools.", tools=[WEATHER_TOOL])
    asked = wait_job(t1, asked["id"])
    [call] = asked["result"]["message"]["tool_calls"]
    answer = unique("rain")
    body = chat_body("", second) | {"parent_job_id": asked["id"]}
    body["request"]["messages"] = [
        {"role": "tool", "tool_call_id": call["id"], "content": answer},
        {"role": "user", "content": f"and tomorrow? {answer}"},
    ]
    done = wait_job(t1, submit(t1, body)["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["model"] == second
    [request] = received(recording, answer)
    messages = request["messages"]
    if second == ANTHROPIC:  # system lifted, roles alternating, tool call and result mapped
        assert request["system"] == "Use tools."
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[1]["content"][-1] == {
            "type": "tool_use", "id": call["id"], "name": "get_weather",
            "input": json.loads(call["function"]["arguments"]),
        }  # fmt: skip
        assert messages[2]["content"][0]["type"] == "tool_result"
        assert messages[2]["content"][0]["tool_use_id"] == call["id"]
    else:
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
        assert messages[2]["tool_calls"][0]["id"] == call["id"]
        assert messages[3]["tool_call_id"] == call["id"]


def test_bad_parents_are_refused_and_tenants_kept_apart(
    t1: httpx.Client, t2: httpx.Client, worker: Proc, recording: SimulatorHandle, redis_url: str
) -> None:
    secret = unique("t1's secret")
    mine = wait_job(t1, turn(t1, secret)["id"])
    refused = t2.post("/v1/jobs", json=chat_body("hi") | {"parent_job_id": mine["id"]})
    message = assert_error(refused, 422, "invalid_request")
    assert secret not in refused.text and "no job of this tenant" in message
    assert t2.get(f"/v1/jobs/{mine['id']}/conversation").status_code == 404
    missing = chat_body("hi") | {"parent_job_id": "job_01JD000000000000000000000"}
    assert_error(t1.post("/v1/jobs", json=missing), 422, "invalid_request")
    assert_error(t1.post("/v1/jobs", json=chat_body("hi") | {"parent_job_id": "x"}), 422)
    embedding = {"model": OPENAI, "kind": "embedding", "request": {"input": ["a"]}}
    vectors = submit(t1, embedding)
    assert_error(t1.post("/v1/jobs", json=chat_body("hi") | {"parent_job_id": vectors["id"]}), 422)
    batch = {"jobs": [chat_body("hi") | {"parent_job_id": mine["id"]}]}
    assert_error(t1.post("/v1/jobs/batch", json=batch), 422)

    # past the bounds (1,000 messages by default): refused, saying why
    long = chat_body("x")
    long["request"]["messages"] = [{"role": "user", "content": "m"}] * 600
    parent = submit(t1, long)
    too_long = long | {"parent_job_id": parent["id"]}
    message = assert_error(t1.post("/v1/jobs", json=too_long), 422, "invalid_request")
    assert "COURIER_CONVERSATION_MAX_MESSAGES" in message

    # a parent past its retention is gone: refused like a missing one
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(keys.job(mine["id"]))
    finally:
        client.close()
    gone = t1.post("/v1/jobs", json=chat_body("hi") | {"parent_job_id": mine["id"]})
    assert "retention" in assert_error(gone, 422, "invalid_request")


def test_client_and_cli(api_url: str, worker: Proc, recording: SimulatorHandle) -> None:
    with Courier(api_url, KEY1) as courier:
        first = courier.wait(courier.submit(OPENAI, prompt=unique("hi"))["id"], timeout=30)
        second = courier.submit(OPENAI, prompt=unique("more"), parent_job_id=first["id"])
        assert second["parent_job_id"] == first["id"]
        courier.wait(second["id"], timeout=30)
        transcript = courier.conversation(second["id"])
    assert len(transcript["messages"]) == 4

    async def read() -> dict[str, Any]:
        async with AsyncCourier(api_url, KEY1) as courier:
            return await courier.conversation(second["id"])

    assert asyncio.run(read()) == transcript

    env = {**os.environ, "COURIER_API_URL": api_url, "COURIER_API_KEY": KEY1}
    cli = [sys.executable, "-m", "producers.cli"]
    text = unique("cli")
    out = subprocess.run(
        [*cli, "submit", "--model", OPENAI, "--prompt", text, "--parent", second["id"], "--wait"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    third = json.loads(out)
    assert third["parent_job_id"] == second["id"] and third["status"] == "succeeded"
    shown = subprocess.run(
        [*cli, "conversation", third["id"]],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert text in shown and f"[assistant] {third['id']}" in shown


@pytest.fixture(autouse=True)
def _no_leftover_faults(sim: SimulatorHandle) -> Iterator[None]:
    yield
    sim.clear_faults()
