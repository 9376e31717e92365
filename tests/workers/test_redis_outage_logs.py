"""A Redis restart under load: one line when the worker loses Redis, one when it is back;
no traceback, and no per-job lines for jobs that were fine."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from tests.support.jobs import DirectProducer
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker
from workers.outage import Outage

pytestmark = pytest.mark.timeout(120)
FAST_RECOVERY = {"COURIER_LEASE_TTL_S": "5", "COURIER_SWEEP_INTERVAL_S": "0.5"}


def json_lines(output: str) -> list[dict[str, object]]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_a_redis_restart_logs_two_lines_and_no_traceback(sim: SimulatorHandle) -> None:
    sim.configure(latency=1)
    server = RedisServer()
    server.start()
    producer = DirectProducer(server.url)
    worker = start_worker(server.url, sim, concurrency=50, env=FAST_RECOVERY, name="outage")
    tag = f"outage-{uuid.uuid4().hex[:6]}"
    try:
        ids = [producer.submit(f"{tag}-{i}") for i in range(80)]
        time.sleep(1.5)  # calls in flight, leases held
        server.restart(down_for=3)
        jobs = producer.wait(ids, timeout=90)
        time.sleep(1.5)  # a lease renewal and a few sweeps after the recovery
    finally:
        worker.stop()
        producer.close()
        server.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 80
    output = worker.output()
    at = output.find("Traceback")
    assert at == -1, output[max(0, at - 2000) : at + 3000]
    assert "failed with ConnectionError" not in output
    lines = json_lines(output)
    outage = [str(r["msg"]) for r in lines if r["logger"] == "courier.outage"]
    assert len(outage) == 2, outage
    assert outage[0].startswith("Redis unreachable (") and "retrying" in outage[0]
    assert outage[1].startswith("Redis reachable again after ")
    noisy = [
        r["msg"]
        for r in lines
        if "lease" in str(r["msg"])
        or "sweep skipped" in str(r["msg"])
        or "Connection to broker lost" in str(r["msg"])
        or "Cannot connect" in str(r["msg"])
        or r["logger"] == "py.warnings"
    ]
    assert noisy == []


def test_the_outage_lines_and_a_relapse(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage("Redis", clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="courier.outage"):
        outage.back()  # nothing was wrong
        for where in ("sweep", "lease renewal", "metrics"):
            outage.lost(where, ConnectionError("refused"))
        now[0] += 2.5
        outage.back()
        outage.back()
        now[0] += 1  # a stale pooled connection fails after the recovery: the same outage
        outage.lost("intake", ConnectionError("reset"))
        outage.back()
        now[0] += 10  # a new outage
        outage.lost("sweep", ConnectionError("refused"))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelname == "WARNING"]
    assert lines == [
        ("WARNING", lines[0][1]),
        ("WARNING", "Redis reachable again after 2.5 s"),
        ("WARNING", lines[2][1]),
    ]
    assert lines[0][1].startswith("Redis unreachable (sweep: ConnectionError: refused)")
    assert outage.down


def test_an_active_job_takes_celery_s_reconnect_and_shutdown_bookkeeping() -> None:
    """What Celery does to its requests after a broker reconnect (moves the active ones into
    ``reserved_requests`` and sets ``eventer`` on each) and at a cold shutdown (asks
    ``task.acks_late`` and ``acknowledged``), done to a job of the call pool."""
    from celery.worker import state

    from workers.run.flower import ActiveJob
    from workers.run.hooks import Run

    job = ActiveJob(Run("job_1", "task-1", "w@host"), time.time())
    state.active_requests.add(job)
    try:
        state.reserved_requests.update(tuple(state.active_requests))
        for request in tuple(state.reserved_requests):
            request.eventer = object()
        assert job.task.acks_late and job.acknowledged  # never cancelled by Celery
        assert job.info()["id"] == "task-1"
    finally:
        state.active_requests.discard(job)
        state.reserved_requests.discard(job)
