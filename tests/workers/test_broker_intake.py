"""What a worker takes from the broker (kombu's Redis transport with ``workers/broker.py``'s
fixes): no more messages than its free slots, each recorded as unacked (restorable) until
acked, in priority order; and a kill -9 loses none of them. With the call pool a message is
acked once its job is claimed (the job's lease covers it from then); without, once it ran.
By default Courier's intake takes the job messages instead, claiming each job as its message
leaves the queue (tests/workers/test_intake.py)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection, Queue
from kombu.message import Message

from core import keys
from tests.support.jobs import DirectProducer
from tests.support.procs import wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker

pytest_plugins = ["tests.support.fixtures"]

FAST_RECOVERY = {"COURIER_LEASE_TTL_S": "5", "COURIER_SWEEP_INTERVAL_S": "0.5"}


def unacked_job_ids(client: redis.Redis) -> list[str]:
    """The job ids of the messages recorded as taken and not acked, decoded as kombu's
    restore would decode them."""
    ids = []
    for raw in client.hvals("unacked"):
        payload, exchange, routing_key = json.loads(raw)
        assert routing_key.startswith("jobs.") and exchange is not None
        args, _kwargs, _embed = json.loads(base64.b64decode(payload["body"]))
        ids.append(args[0])
    return ids


MODES = {
    "intake": {},  # the default: Courier's intake takes the job messages (tasks/intake.py)
    "call-pool": {"COURIER_WORKER_INTAKE": "false"},  # Celery's consumer, calls in the pool
    "call-in-task": {"COURIER_WORKER_CALL_POOL": "false"},
}


@pytest.mark.parametrize("mode", MODES)
def test_a_worker_takes_only_free_slots_and_covers_each_job(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer, mode: str
) -> None:
    sim.configure(latency=4)
    tag = uuid.uuid4().hex[:6]
    ids = [producer.submit(f"fetch-{tag}-{i}") for i in range(40)]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {**FAST_RECOVERY, **MODES[mode]}
    worker = start_worker(redis_url, sim, concurrency=10, env=env, name="fetcher")
    rescuer = None
    try:

        def running() -> set[str]:
            return {j for j in ids if producer.job(j)["status"] == "running"}

        wait_until(lambda: len(running()) == 10, timeout=20)
        if mode != "call-in-task":  # acked (or never kept) once claimed: leased instead
            wait_until(lambda: not unacked_job_ids(client), timeout=5)
            assert sorted(client.zrange(keys.RUNNING, 0, -1)) == sorted(running())
        else:
            assert sorted(unacked_job_ids(client)) == sorted(running())
            assert client.zcard("unacked_index") == 10
        assert sum(producer.job(j)["status"] == "queued" for j in ids) == 30

        worker.kill9()
        rescuer = start_worker(redis_url, sim, concurrency=50, env=FAST_RECOVERY, name="rescuer")
        sim.configure(latency=0)
        jobs = producer.wait(ids, timeout=90)
        assert [j["status"] for j in jobs] == ["succeeded"] * 40
    finally:
        worker.stop()
        if rescuer is not None:
            rescuer.stop()
        client.close()


def test_messages_arrive_in_priority_order_and_stay_unacked_until_acked(redis_url: str) -> None:
    import workers.app  # noqa: F401  (installs workers.broker's transport fixes)

    options: dict[str, Any] = {"queue_order_strategy": "priority"}
    queues = [Queue(f"fetch-{name}-{uuid.uuid4().hex[:6]}") for name in ("high", "low")]
    with Connection(redis_url, transport_options=options) as conn:
        producer = conn.Producer()
        for queue in reversed(queues):  # lows first: the high ones must still come out first
            for i in range(5):
                producer.publish({"n": i}, routing_key=queue.name, declare=[queue])
        got: list[tuple[str, int]] = []
        messages: list[Message] = []

        def take(body: dict[str, int], message: Message) -> None:
            got.append((message.delivery_info["routing_key"], body["n"]))
            messages.append(message)

        with conn.Consumer(queues, callbacks=[take], prefetch_count=20):
            channel = conn.default_channel
            deadline = time.monotonic() + 10
            while len(got) < 10 and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError, socket.timeout):
                    conn.drain_events(timeout=1)
            assert [name for name, _ in got] == [queues[0].name] * 5 + [queues[1].name] * 5
            assert sorted(n for _, n in got[:5]) == list(range(5))
            client = redis.Redis.from_url(redis_url)
            tags = [message.delivery_tag for message in messages]
            assert all(client.hexists("unacked", tag) for tag in tags)
            for message in messages:
                message.ack()
            channel.qos.flush_acks()
            assert not any(client.hexists("unacked", tag) for tag in tags)
            client.close()
