"""Redis through Sentinel, with real parts: a master, two replicas and three Sentinels
(:mod:`tests.support.sentinel`). Every client Courier builds finds the master, follows a
failover (SIGKILL of the master) without being rebuilt, and its Lua scripts run on the new
master; writes are confirmed on replicas (WAIT)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from celery import Celery

from config.celery import celery_config
from config.settings import Settings
from core import keys
from core.connections import store_async_client, store_client
from core.fair import FairTake
from core.queues import enqueue_job
from core.ratelimit.backends.redis import RedisBackend
from core.ratelimit.limiter import ALGORITHMS
from core.ratelimit.model import Ask, Rule
from core.replication import Replicated, Replication, replicas_in_sync
from core.store import JobStore
from tests.support.jobs import job_fields
from tests.support.sentinel import MASTER_NAME, SentinelCluster

pytestmark = pytest.mark.timeout(90)


def test_sentinel_settings() -> None:
    settings = Settings(
        redis_sentinels="10.0.0.1:26379, sentinel-2:26380,[fd00::3]:26381,sentinel-4",
        redis_url="redis://:secret@ignored:6379/3",
    )
    assert settings.redis_sentinels == (
        ("10.0.0.1", 26379), ("sentinel-2", 26380), ("fd00::3", 26381), ("sentinel-4", 26379)
    )  # fmt: skip
    assert settings.celery_broker_url == (
        "sentinel://:secret@10.0.0.1:26379/3;sentinel://:secret@sentinel-2:26380/3;"
        "sentinel://:secret@[fd00::3]:26381/3;sentinel://:secret@sentinel-4:26379/3"
    )
    assert settings.broker_is_store and settings.replicas_to_confirm == 1
    options = celery_config(settings)["broker_transport_options"]
    assert options["master_name"] == "mymaster"
    assert Settings(redis_sentinels="h:1", redis_min_replicas=0).replicas_to_confirm == 0
    assert Settings().replicas_to_confirm == 0 and Settings().broker_is_store
    assert not Settings(redis_sentinels="h:1", broker_url="amqp://x").broker_is_store
    for bad in ("host:port", "h:0", "h:70000", ":1"):
        with pytest.raises(ValueError, match="host:port"):
            Settings(redis_sentinels=bad)
    with pytest.raises(ValueError, match="TLS"):
        Settings(redis_sentinels="h:1", redis_url="rediss://h:6380/0")


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    deployment = SentinelCluster(replicas=2)
    deployment.start()
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def settings(cluster: SentinelCluster) -> Settings:
    env = cluster.env()
    return Settings(
        redis_url=env["COURIER_REDIS_URL"],
        redis_sentinels=env["COURIER_REDIS_SENTINELS"],
        redis_sentinel_master=MASTER_NAME,
    )


def test_writes_are_confirmed_on_replicas(cluster: SentinelCluster, settings: Settings) -> None:
    client = store_client(settings, max_connections=4)
    store = JobStore.from_settings(client, settings)
    job_id, _ = store.create("t1", job_fields("confirm me"))
    assert store.replication.confirm([job_id]) is Replicated.CONFIRMED
    assert replicas_in_sync(client) == 2
    for replica in cluster.data[1:]:
        with replica.client(decode_responses=True) as direct:
            assert direct.hget(keys.job(job_id), "status") == "queued"
    assert store.replication.confirm([job_id], "succeeded") is Replicated.MISSING
    assert store.replication.confirm(["job_nope"]) is Replicated.MISSING
    # More replicas asked for than there are: the master has it, the replicas cannot all.
    assert Replication(client, 3, 0.05).confirm([job_id]) is Replicated.LAGGING
    client.close()


def test_broker_publishes_to_the_master(cluster: SentinelCluster, settings: Settings) -> None:
    app = Celery("sentinel-test")
    app.config_from_object(celery_config(settings))
    enqueue_job(app, "job_broker_probe", "low")
    with cluster.master_node().client(decode_responses=True) as master:
        lists = keys.broker_lists(["jobs.low"])
        assert sum(master.llen(name) for name in lists) == 1
        for name in lists:
            master.delete(name)
    app.close()


def test_clients_follow_a_failover(cluster: SentinelCluster, settings: Settings) -> None:
    """Last in this module: the master dies for good."""
    client = store_client(settings, max_connections=8)
    store = JobStore.from_settings(client, settings)
    limiter = RedisBackend(client, ALGORITHMS["bucket"])
    rule = Rule("sentinel|test", rpm=100)
    before, _ = store.create("t1", job_fields("before the failover"))
    assert store.replication.confirm([before]) is Replicated.CONFIRMED
    assert limiter.reserve(rule, Ask(1, 0, "w1", "r1")).granted  # its script, on the old master
    app = Celery("sentinel-failover")
    app.config_from_object(celery_config(settings))
    enqueue_job(app, before, "normal")

    old = cluster.kill_master()
    new = cluster.wait_failover(old)
    assert new.port != old.port

    # The same clients, scripts loaded only on the dead master: NOSCRIPT → loaded again.
    assert store.get(before) is not None, "a confirmed job was lost in the failover"
    taken = FairTake(client).take(["jobs.normal"], "token-1", 10)
    assert taken is not None and taken.job_id == before and taken.claim.record is not None
    assert store.finish(before, "succeeded", token="token-1")[0]
    assert store.finish(before, "succeeded", token="token-1")[0], "a replayed ending is ours"
    created = store.create_many("t1", [(job_fields(f"after {i}"), None) for i in range(3)])
    assert all(new_job for _, new_job in created)
    assert limiter.reserve(rule, Ask(1, 0, "w2", "r2")).granted
    # The other replica now follows the new master: confirmations work again.
    assert store.replication.confirm([job for job, _ in created]) is Replicated.CONFIRMED
    enqueue_job(app, created[0][0], "normal")  # the broker's pool finds the new master too
    assert sum(client.llen(name) for name in keys.broker_lists(["jobs.normal"])) == 1

    async def read_async() -> str | None:
        aclient = store_async_client(settings, max_connections=4)
        try:
            status: str | None = await aclient.hget(keys.job(before), "status")
            return status
        finally:
            await aclient.aclose()

    assert asyncio.run(read_async()) == "succeeded"
    app.close()
    client.close()
