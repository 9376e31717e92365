"""RabbitMQ as the Celery broker (``COURIER_BROKER_URL=amqp://…``); the job store and the
limiter stay on Redis. Skipped when no RabbitMQ answers on 127.0.0.1:5672.

The tests use the default vhost's ``jobs.*`` and ``callbacks`` queues: they are deleted
first (so they are declared again with ``x-max-priority``) and after.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu.connection import Connection

from config.celery import ALL_QUEUES, celery_config, message_priority
from config.settings import Settings
from core.queues import enqueue_job
from producers.api.collectors import broker_queue_depths
from tests.support.jobs import DirectProducer
from tests.support.receiver import Receiver
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker

pytestmark = pytest.mark.timeout(90)
AMQP_URL = os.environ.get("COURIER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _delete_queues() -> None:
    with Connection(AMQP_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1)
        for queue in ALL_QUEUES:
            channel = conn.channel()
            try:
                channel.queue_delete(queue)
            finally:
                channel.close()


@pytest.fixture(scope="module")
def amqp() -> Iterator[str]:
    try:
        _delete_queues()
    except Exception as exc:
        pytest.skip(f"no RabbitMQ at {AMQP_URL}: {exc}")
    yield AMQP_URL
    _delete_queues()


@pytest.fixture()
def producer(amqp: str, redis_url: str) -> Iterator[DirectProducer]:
    producer = DirectProducer(redis_url)
    producer.celery = Celery("courier-test-amqp")
    producer.celery.config_from_object(
        celery_config(Settings(redis_url=redis_url, broker_url=amqp))
    )
    yield producer
    producer.celery.close()
    producer.close()


def test_priorities_order_a_queue(producer: DirectProducer) -> None:
    """On RabbitMQ a higher message priority is delivered first (the reverse of Redis):
    a queue holding several priorities (after aging, say) hands out high, normal, low."""
    ids = {p: producer.submit(f"order {p}", enqueue=False) for p in ("low", "normal", "high")}
    for priority, job_id in ids.items():  # all on one queue, lowest first
        producer.celery.send_task(
            "courier.run_job",
            args=[job_id],
            queue="jobs.normal",
            priority=message_priority(priority, AMQP_URL),
        )
    # The mapping the product uses, on its real queue:
    enqueue_job(producer.celery, producer.submit("mapped high", enqueue=False), "high")
    depths = broker_queue_depths(AMQP_URL)
    assert depths["jobs.normal"] == 3 and depths["jobs.high"] == 1

    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        order = []
        for _ in range(3):
            message = channel.basic_get("jobs.normal", no_ack=True)
            assert message is not None
            order.append(json.loads(message.body)[0][0])
        high = channel.basic_get("jobs.high", no_ack=True)
        assert high is not None and high.properties.get("priority") == 9
        channel.close()
    assert order == [ids["high"], ids["normal"], ids["low"]]


def test_pipeline_on_rabbitmq(
    producer: DirectProducer, redis_url: str, sim: SimulatorHandle, amqp: str
) -> None:
    worker = start_worker(redis_url, sim, env={"COURIER_BROKER_URL": amqp})
    try:
        with Receiver() as receiver:
            ids = [
                producer.submit(f"rabbit {p} {i}", priority=p)
                for i in range(3)
                for p in ("high", "normal", "low")
            ]
            hooked = producer.submit("rabbit callback", callback_url=receiver.url("/amqp"))
            jobs = producer.wait([*ids, hooked], timeout=60)
            assert {j["status"] for j in jobs} == {"succeeded"}, jobs
            (hook,) = receiver.wait_for("/amqp", 1)
            assert hook.json()["type"] == "job.succeeded"
        assert "transport:   amqp://" in worker.output()  # not the Redis broker
        assert all(depth == 0 for depth in broker_queue_depths(amqp).values())
    finally:
        worker.stop(timeout=8)
