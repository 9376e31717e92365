"""Structured logs: JSON lines with job ids, never prompts or secrets."""

from __future__ import annotations

import json
import logging
import uuid

import redis

from core import keys
from core.logs import JsonFormatter, Redactor, secrets_from_env
from tests.support.jobs import DirectProducer
from tests.support.procs import wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker


def test_redactor_hides_configured_and_shaped_secrets() -> None:
    env = {"OPENAI_API_KEY": "prov-key-123456", "COURIER_API_KEYS": "t1:tenant-key-1,t2:k2k2k2"}
    redact = Redactor(secrets_from_env(env))
    text = redact(
        "key prov-key-123456, tenant-key-1, sk-abcdefghijkl, Bearer abcdefghij, whsec_AAAAAAAAAA"
    )
    assert "prov-key" not in text and "tenant-key" not in text
    assert "sk-abc" not in text and "abcdefghij" not in text and "whsec_A" not in text


def test_redactor_finds_each_shape_alone_and_leaves_plain_text() -> None:
    redact = Redactor([])
    for secret in (
        "sk-proj_abcdefgh12",
        "whsec_QUJDREVGR0g=",
        "BEARER abcdefghij",
        "bEaReR abcdefghij",
        "ck_0123456789ab_ABCDEFGHabcdefgh",
    ):
        assert redact(f"x {secret} y") == "x [redacted] y", secret
    plain = '{"msg": "job.succeeded", "job_id": "0193f0b2c8a8", "model": "gpt-4o-mini"}'
    assert redact(plain) is plain


def test_formatter_emits_one_json_object_with_extras() -> None:
    record = logging.LogRecord("courier", logging.INFO, __file__, 1, "job %s", ("x",), None)
    record.job_id = "job_1"
    line = JsonFormatter(Redactor([])).format(record)
    entry = json.loads(line)
    assert entry["msg"] == "job x" and entry["job_id"] == "job_1" and entry["level"] == "info"


def test_worker_logs_are_json_with_job_ids_and_no_prompt_or_secret(
    redis_url: str, sim: SimulatorHandle
) -> None:
    secret_prompt = f"top secret prompt {uuid.uuid4().hex}"
    worker = start_worker(
        redis_url, sim, concurrency=5, name="logs", env={"OPENAI_API_KEY": "sim-key-do-not-log"}
    )
    producer = DirectProducer(redis_url)
    try:
        job_id = producer.submit(secret_prompt)
        assert producer.wait([job_id])[0]["status"] == "succeeded"
    finally:
        worker.stop()
        producer.close()
    output = worker.output()
    assert secret_prompt not in output
    assert "sim-key-do-not-log" not in output
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = {e.get("event") for e in entries if e.get("job_id") == job_id}
    assert {"job.started", "job.succeeded"} <= events
    ended = next(e for e in entries if e.get("event") == "job.succeeded" and e["job_id"] == job_id)
    assert ended["tenant"] == "t1" and ended["model"] == "openai:gpt-4o-mini"
    assert ended["attempt"] == 1 and isinstance(ended["duration_ms"], int)


def test_a_rate_limited_job_logs_when_it_runs_again_and_which_limit(
    redis_url: str, sim: SimulatorHandle
) -> None:
    pattern = "openai:gpt-4o-mini"  # not openai:*, whose limits other tests read back
    env = {
        "COURIER_LIMITS": json.dumps({pattern: {"rpm": 60}}),
        "OPENAI_API_KEY": f"sim-logs-{uuid.uuid4().hex[:8]}",  # a budget of its own
    }
    worker = start_worker(redis_url, sim, concurrency=5, name="logs-rl", env=env)
    producer = DirectProducer(redis_url)
    try:
        burst = [producer.submit(f"burst {i}") for i in range(62)]  # over a minute's budget
        wait_until(lambda: '"job.requeued"' in worker.output(), timeout=30)
    finally:
        worker.stop()
        producer.close()
        _forget_limits(redis_url, pattern)
    entries = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    requeued = [e for e in entries if e.get("event") == "job.requeued" and e["job_id"] in burst]
    assert requeued
    assert all(e["reason"] == "rate_limit" and e["retry_in_s"] > 0 for e in requeued)
    assert {e["limited_by"] for e in requeued} <= {"requests", "queue"}


def test_an_answer_for_a_job_cancelled_mid_call_is_dropped_not_counted(
    redis_url: str, sim: SimulatorHandle
) -> None:
    tag = f"dropped-{uuid.uuid4().hex[:6]}"
    sim.faults([{"delay": 2}], match=tag)
    worker = start_worker(redis_url, sim, concurrency=5, name="logs-drop")
    producer = DirectProducer(redis_url)
    try:
        job_id = producer.submit(tag)
        wait_until(lambda: producer.job(job_id)["status"] == "running", timeout=20)
        assert producer.store.finish(job_id, "cancelled", allowed=("queued", "running"))[0]
        wait_until(lambda: '"job.outcome_dropped"' in worker.output(), timeout=20)
        assert producer.job(job_id)["status"] == "cancelled"
    finally:
        worker.stop()
        producer.close()
    entries = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    events = [e["event"] for e in entries if e.get("job_id") == job_id and "event" in e]
    assert events == ["job.started", "job.outcome_dropped"]


def _forget_limits(redis_url: str, pattern: str) -> None:
    """Drop the limiter's state for ``pattern`` (and the burst's jobs still waiting on it)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for name in client.smembers(keys.LIMIT_NAMES):
            if name.startswith(f"{pattern}|"):
                stale = list(client.scan_iter(match=keys.limit(name, "*")))
                client.delete(*stale, keys.limit_cooldown(name))
                client.srem(keys.LIMIT_NAMES, name)
    finally:
        client.close()
