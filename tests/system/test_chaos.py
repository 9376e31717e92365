"""Crash safety with real processes: kill -9 a worker mid-run, restart Redis mid-run.

Figures (recovery time, duplicate provider calls) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest

from tests.support.jobs import DirectProducer
from tests.support.netns import NetnsHost, netns_available
from tests.support.procs import free_port, python_module, wait_http, wait_until
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHandle
from tests.support.workers import sigterm_and_wait, start_worker

FAST_RECOVERY = {"COURIER_LEASE_TTL_S": "5", "COURIER_SWEEP_INTERVAL_S": "0.5"}


def calls_by_prompt(sim: SimulatorHandle, tag: str) -> dict[str, list[dict[str, float]]]:
    calls: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in sim.log():
        prompt = str(r.get("prompt", ""))
        if tag in prompt:  # every call the provider saw, even one whose caller died
            finished = r.get("finished") or time.time()
            calls[prompt].append(
                {"started": float(str(r["started"])), "finished": float(str(finished))}
            )
    return calls


def assert_never_concurrent(calls: dict[str, list[dict[str, float]]]) -> int:
    """No job ran on two workers at once; returns how many jobs were called twice or more."""
    duplicates = 0
    for prompt, runs in calls.items():
        runs.sort(key=lambda r: r["started"])
        for earlier, later in itertools.pairwise(runs):
            assert later["started"] >= earlier["finished"] - 0.05, f"{prompt} ran twice at once"
        duplicates += len(runs) > 1
    return duplicates


@pytest.fixture()
def producer(redis_url: str) -> Iterator[DirectProducer]:
    p = DirectProducer(redis_url)
    yield p
    p.close()


def test_kill9_worker_mid_run(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=1)
    tag = f"chaos-{uuid.uuid4().hex[:6]}"
    first = start_worker(redis_url, sim, concurrency=50, env=FAST_RECOVERY, name="doomed")
    ids = [producer.submit(f"{tag}-{i}") for i in range(200)]
    # Mid-run: some done, ~50 calls in flight, the rest queued.
    wait_until(lambda: len(calls_by_prompt(sim, tag)) >= 80, timeout=30)
    first.kill9()
    killed_at = time.monotonic()
    mid_call = [j for j in ids if producer.job(j)["status"] == "running"]
    second = start_worker(redis_url, sim, concurrency=100, env=FAST_RECOVERY, name="rescuer")
    try:
        producer.wait(mid_call, timeout=60)
        recovery = time.monotonic() - killed_at
        # A message taken but not yet claimed when the worker died comes back after the
        # broker's visibility timeout (60 s) instead of the lease.
        jobs = producer.wait(ids, timeout=150)
        everything = time.monotonic() - killed_at
    finally:
        second.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    calls = calls_by_prompt(sim, tag)
    duplicates = assert_never_concurrent(calls)
    print(
        f"\nkill -9: the {len(mid_call)} jobs cut off mid-call succeeded {recovery:.1f}s after the"
        f" kill, all 200 after {everything:.1f}s; {duplicates} duplicate calls"
        f" ({sum(len(v) for v in calls.values())} calls for {len(calls)} jobs)"
    )
    assert mid_call and recovery < 60


def test_redis_restart_loses_no_job(sim: SimulatorHandle) -> None:
    sim.configure(latency=1)
    server = RedisServer()
    server.start()
    producer = DirectProducer(server.url)
    worker = start_worker(server.url, sim, concurrency=50, env=FAST_RECOVERY, name="restart")
    tag = f"restart-{uuid.uuid4().hex[:6]}"
    try:
        ids = [producer.submit(f"{tag}-{i}") for i in range(100)]
        time.sleep(1.5)
        server.restart(down_for=2)
        jobs = producer.wait(ids, timeout=120)
    finally:
        worker.stop()
        producer.close()
        server.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 100
    duplicates = assert_never_concurrent(calls_by_prompt(sim, tag))
    print(f"\nRedis restart: all 100 succeeded; {duplicates} duplicate calls")


@pytest.mark.skipif(not netns_available(), reason="needs root and iproute2 for a network namespace")
def test_worker_cut_off_from_redis() -> None:
    """A worker on another host loses Redis mid-job: its jobs finish elsewhere within 60 s,
    and when the link returns it does not finish them a second time."""
    host = NetnsHost()
    host.create()
    server = sim_proc = cut_worker = rescuer = producer = None
    try:
        redis_ip, _ = host.add_link("r", 1)
        sim_ip, _ = host.add_link("s", 2)
        server = RedisServer(bind=f"127.0.0.1 {redis_ip}")
        server.start()
        sim_port = free_port()
        sim_proc = python_module(
            "simulator", "--host", sim_ip, "--port", str(sim_port), "--latency", "3"
        )
        sim = SimulatorHandle(f"http://{sim_ip}:{sim_port}")
        wait_http(f"{sim.url}/_sim/health")
        remote_url = f"redis://{redis_ip}:{server.port}/0"
        cut_worker = start_worker(
            remote_url,
            sim,
            concurrency=50,
            env=FAST_RECOVERY,
            name="cutoff",
            prefix=host.command([]),
        )
        producer = DirectProducer(server.url)
        tag = f"netns-{uuid.uuid4().hex[:6]}"
        ids = [producer.submit(f"{tag}-{i}") for i in range(30)]
        wait_until(lambda: len(calls_by_prompt(sim, tag)) >= 30, timeout=30)
        host.cut("r")
        cut_at = time.monotonic()
        rescuer = start_worker(server.url, sim, concurrency=50, env=FAST_RECOVERY, name="rescuer")
        jobs = producer.wait(ids, timeout=60)
        recovery = time.monotonic() - cut_at
        assert [j["status"] for j in jobs] == ["succeeded"] * 30
        host.restore("r")
        time.sleep(8)  # the cut-off worker's answers arrived long ago; give it time to try
        after = [producer.job(j) for j in ids]
        changed = {
            key
            for old, new in zip(jobs, after, strict=True)
            for key in old.keys() | new.keys()
            if old.get(key) != new.get(key)
        }
        # The cut-off worker's calls were made and paid for: their cost may still be counted
        # once Redis answers again (cost_usd is the cost of all of a job's calls). Nothing
        # else of an ended job may change.
        assert changed <= {"cost_usd"}, f"a job was finished a second time: {changed}"
        assert all(
            (n.get("cost_usd") or 0) >= (o.get("cost_usd") or 0)
            for o, n in zip(jobs, after, strict=True)
        )
        calls = calls_by_prompt(sim, tag)
        duplicates = assert_never_concurrent(calls)
        print(
            f"\ncut off from Redis: 30 jobs finished elsewhere {recovery:.1f}s after the cut; "
            f"{duplicates} duplicate calls; none finished twice"
        )
    finally:
        for proc in (rescuer, cut_worker, sim_proc):
            if proc is not None:
                proc.stop()
        if producer is not None:
            producer.close()
        if server is not None:
            server.stop()
        host.destroy()


def test_sigterm_hands_back_running_jobs_in_bounded_time(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=15)
    env = {**FAST_RECOVERY, "COURIER_SHUTDOWN_GRACE_S": "2"}
    worker = start_worker(redis_url, sim, concurrency=10, env=env, name="sigterm")
    tag = f"sigterm-{uuid.uuid4().hex[:6]}"
    ids = [producer.submit(f"{tag}-{i}") for i in range(5)]
    wait_until(lambda: len(calls_by_prompt(sim, tag)) >= 5, timeout=30)
    took = sigterm_and_wait(worker)
    assert took < 15, f"shutdown took {took:.1f}s"
    assert {producer.job(j)["status"] for j in ids} == {"queued"}
    sim.configure(latency=0.1)
    rescuer = start_worker(redis_url, sim, concurrency=10, name="after-sigterm")
    try:
        jobs = producer.wait(ids, timeout=60)
    finally:
        rescuer.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 5
    print(f"\nSIGTERM: worker gone {took:.1f}s after the signal; 5 jobs handed back and finished")
