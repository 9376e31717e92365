"""Webhook retries keep their schedule: a real worker with the default sweep interval, a
real receiver that fails every attempt, and the gaps between attempts as it saw them.

The schedule is ``2,2,2,2,2`` with ±20 % jitter, so every gap should be 1.6-2.4 s plus the
time to take a due attempt and send it. The assertions are loose on purpose (a shared
machine): what they catch is the sweep interval added on top (up to 4.4 s measured).
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterator
from itertools import pairwise

import pytest

from tests.support.jobs import DirectProducer
from tests.support.procs import Proc
from tests.support.receiver import Receiver
from tests.support.simulator import SimulatorHandle
from tests.support.workers import flush_queues, start_worker

pytestmark = pytest.mark.timeout(90)
SCHEDULE = "2,2,2,2,2"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def worker(redis_url: str, simulator: SimulatorHandle) -> Iterator[Proc]:
    flush_queues(redis_url)
    proc = start_worker(
        redis_url,
        simulator,
        env={"COURIER_CALLBACK_RETRY_SCHEDULE": SCHEDULE, "COURIER_CALLBACK_TIMEOUT_S": "2"},
    )
    yield proc
    proc.stop()


def test_retry_gaps_hold_the_schedule(
    redis_url: str, sim: SimulatorHandle, receiver: Receiver, worker: Proc
) -> None:
    path = f"/timing-{uuid.uuid4().hex[:8]}"
    receiver.script(path, [{"status": 500}] * 6)
    producer = DirectProducer(redis_url)
    try:
        producer.wait([producer.submit("timing", callback_url=receiver.url(path))])
        got = receiver.wait_for(path, 6, timeout=40)
    finally:
        producer.close()
    gaps = [b.at - a.at for a, b in pairwise(got)]
    print("gaps between attempts (s):", [round(g, 2) for g in gaps])
    assert len({r.headers["webhook-id"] for r in got}) == 1
    # The median holds the schedule; one gap may stretch on a loaded machine.
    assert all(g >= 1.5 for g in gaps) and max(gaps) < 6.0, gaps
    assert 1.6 <= statistics.median(gaps) <= 2.4, gaps  # jitter alone spans 1.6-2.4 s
