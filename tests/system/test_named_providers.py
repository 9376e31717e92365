"""Named providers (docs/contract.md, Named providers): COURIER_PROVIDERS entries of each API
shape, run end to end by a real API and worker against the simulator — which records the key,
headers, path and model that reached it — plus the configuration's own checks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from config.providers import BUILTIN_PROVIDERS, parse_providers
from config.settings import Settings
from core import keys
from core.credentials import env_api_key, provider_key_envs
from tests.support.procs import ROOT, Proc, wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    KEY1,
    assert_error,
    chat_body,
    stack_env_for,
    start_api,
    start_worker,
    unique,
    wait_job,
)
from tests.support.workers import flush_queues
from workers.providers.azure_adapter import AzureOpenAIProvider

pytestmark = pytest.mark.timeout(90)

LOCAL_KEY = "local-llm-key-0001"
COMPAT_KEY = "compat-key-0002"
AZURE_KEY = "azure-key-0003"
UNSET_VAR = "COURIER_TEST_UNSET_PROVIDER_KEY"
API_VERSION = "2024-10-21"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def providers_for(sim: SimulatorHandle) -> dict[str, Any]:
    return {
        # an OpenAI-compatible server (vLLM, Ollama) under its own path, with its own key
        "local": {
            "api": "openai",
            "base_url": f"{sim.url}/ollama/v1",
            "api_key_env": "LOCAL_LLM_KEY",
            "headers": {"X-Courier-Test": "local"},
        },
        # an Anthropic-compatible endpoint
        "compat": {
            "api": "anthropic",
            "base_url": f"{sim.url}/compat",
            "api_key_env": "COMPAT_KEY",
        },
        "azure": {
            "api": "azure",
            "base_url": sim.url,
            "api_key_env": "AZURE_TEST_KEY",
            "api_version": API_VERSION,
        },
        "nokey": {"api": "openai", "base_url": f"{sim.url}/nokey/v1", "api_key_env": UNSET_VAR},
    }


@pytest.fixture(scope="module")
def env(redis_url: str, simulator: SimulatorHandle) -> dict[str, str]:
    environ = stack_env_for(redis_url, simulator)
    environ.pop(UNSET_VAR, None)
    return environ | {
        "COURIER_PROVIDERS": json.dumps(providers_for(simulator)),
        # one request a minute per limit key: the key is the pattern + the provider's key
        "COURIER_LIMITS": json.dumps({"*:lim-*": {"rpm": 1}}),
        "LOCAL_LLM_KEY": LOCAL_KEY,
        "COMPAT_KEY": COMPAT_KEY,
        "AZURE_TEST_KEY": AZURE_KEY,
        "COURIER_WORKER_PRELOAD_SDKS": "true",
    }


@pytest.fixture(scope="module")
def api(env: dict[str, str], redis_url: str) -> Iterator[str]:
    flush_queues(redis_url)
    proc, url = start_api(env, name="api-named")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def worker(env: dict[str, str], api: str) -> Iterator[Proc]:
    proc = start_worker(env)
    yield proc
    proc.stop(timeout=8)


@pytest.fixture()
def client(api: str, worker: Proc, sim: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api, headers={"Authorization": f"Bearer {KEY1}"}, timeout=30
    ) as http:
        yield http


def run(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["id"])


def requests_for(sim: SimulatorHandle, model: str) -> list[dict[str, Any]]:
    return [entry for entry in sim.log() if entry["model"] == model]


# ---- end to end, one shape at a time ---------------------------------------------------


def test_openai_compatible_provider_gets_its_key_headers_and_model(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    job = run(client, chat_body(unique(), model="local:llama-3.1-8b"))
    assert job["status"] == "succeeded", job
    assert job["result"]["model"] == "local:llama-3.1-8b"
    (seen,) = requests_for(sim, "llama-3.1-8b")  # the model name passed through as it was
    assert seen["path"] == "/ollama/v1/chat/completions"  # the provider's base_url
    assert seen["key_sha256"] == digest(LOCAL_KEY)  # its own key, not OPENAI_API_KEY
    assert seen["key_header"] == "authorization"
    assert seen["headers"].get("x-courier-test") == "local"


def test_openai_compatible_embeddings(client: httpx.Client, sim: SimulatorHandle) -> None:
    body = {"model": "local:nomic-embed-text", "kind": "embedding", "request": {"input": ["a"]}}
    job = run(client, body)
    assert job["status"] == "succeeded", job
    assert len(job["result"]["embeddings"]) == 1
    (seen,) = requests_for(sim, "nomic-embed-text")
    assert seen["path"] == "/ollama/v1/embeddings"


def test_anthropic_compatible_provider(client: httpx.Client, sim: SimulatorHandle) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    body = chat_body(unique(), model="compat:claude-compatible")
    body["request"]["tools"] = [tool]
    job = run(client, body)
    assert job["status"] == "succeeded", job
    assert job["result"]["model"] == "compat:claude-compatible"
    assert job["result"]["finish_reason"] == "tool_calls"
    assert job["result"]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    (seen,) = requests_for(sim, "claude-compatible")
    assert seen["path"] == "/compat/v1/messages"  # the Messages API, at the provider's base_url
    assert seen["key_sha256"] == digest(COMPAT_KEY)
    assert "anthropic-version" in seen["headers"]


def test_azure_request_shape(client: httpx.Client, sim: SimulatorHandle) -> None:
    job = run(client, chat_body(unique(), model="azure:prod-gpt4o"))
    assert job["status"] == "succeeded", job
    assert job["result"]["model"] == "azure:prod-gpt4o"
    body = {"model": "azure:prod-embed", "kind": "embedding", "request": {"input": ["a", "b"]}}
    job = run(client, body)
    assert job["status"] == "succeeded", job
    assert len(job["result"]["embeddings"]) == 2
    chat, embed = requests_for(sim, "prod-gpt4o"), requests_for(sim, "prod-embed")
    assert [e["path"] for e in chat + embed] == [
        "/openai/deployments/prod-gpt4o/chat/completions",
        "/openai/deployments/prod-embed/embeddings",
    ]
    for seen in chat + embed:
        assert seen["api_version"] == API_VERSION
        assert seen["key_header"] == "api-key"
        assert seen["key_sha256"] == digest(AZURE_KEY)


def test_unknown_provider_is_refused_naming_the_known_ones(client: httpx.Client) -> None:
    message = assert_error(
        client.post("/v1/jobs", json=chat_body("hi", model="gemini:gemini-2.5-flash")), 422
    )
    for name in ("openai", "anthropic", "local", "compat", "azure"):
        assert name in message, message
    fallback = chat_body("hi", model="local:x", fallback_models=["nowhere:y"])
    assert "nowhere" in assert_error(client.post("/v1/jobs", json=fallback), 422)
    embedding = {"model": "compat:claude", "kind": "embedding", "request": {"input": ["a"]}}
    assert "embeddings" in assert_error(client.post("/v1/jobs", json=embedding), 422)
    schema = client.get("/openapi.json").json()
    pattern = json.dumps(schema["components"]["schemas"]["JobSubmission"])
    assert "local" in pattern and "azure" in pattern


def test_the_worker_preloads_the_sdk_of_every_keyed_providers_api(worker: Proc) -> None:
    assert "provider SDKs imported (openai, anthropic, azure)" in worker.output()


def test_rate_limit_headers_come_back_from_a_named_provider(sim: SimulatorHandle) -> None:
    """What the limiter's feedback reads (core.ratelimit.feedback), from Azure's shape."""
    sim.configure(rpm=100, tpm=100_000)
    provider = AzureOpenAIProvider(
        name="azure", api_key=AZURE_KEY, base_url=sim.url, api_version=API_VERSION
    )
    try:
        result = provider.complete(
            "dep", {"messages": [{"role": "user", "content": "hi"}]}, timeout=10
        )
    finally:
        provider.close()
    assert result.model == "azure:dep"
    assert result.rate_limit_headers["x-ratelimit-limit-requests"] == "100"
    assert int(result.rate_limit_headers["x-ratelimit-remaining-requests"]) == 99


def test_unset_key_fails_the_job_with_authentication(
    client: httpx.Client, worker: Proc, sim: SimulatorHandle
) -> None:
    assert f"{UNSET_VAR} (the api_key_env of provider 'nokey') is not set" in worker.output()
    job = run(client, chat_body(unique(), model="nokey:any-model"))
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "authentication"
    assert UNSET_VAR in job["error"]["message"]
    assert requests_for(sim, "any-model") == []  # nothing was sent anywhere
    assert worker.alive()


def test_fallback_across_named_providers(client: httpx.Client, sim: SimulatorHandle) -> None:
    model = f"down-{uuid.uuid4().hex[:8]}"
    sim.faults([{"status": 503}], match=model)
    body = chat_body(unique(), model=f"local:{model}", fallback_models=["azure:standby"])
    body["max_attempts"] = 1
    job = run(client, body)
    assert job["status"] == "succeeded", job
    assert job["result"]["model"] == "azure:standby"
    assert [e["status"] for e in requests_for(sim, model)] == [503]
    assert [e["path"] for e in requests_for(sim, "standby")] == [
        "/openai/deployments/standby/chat/completions"
    ]


def test_limits_per_pattern_and_named_provider_key(
    client: httpx.Client, redis_url: str, sim: SimulatorHandle
) -> None:
    """``*:lim-*`` allows 1 request a minute per provider key: ``local`` and ``compat`` each
    get their own budget; a second ``local`` job waits for the limiter."""
    first = run(client, chat_body(unique(), model="local:lim-a"))
    other = run(client, chat_body(unique(), model="compat:lim-b"))
    assert first["status"] == other["status"] == "succeeded", (first, other)
    waiting = client.post("/v1/jobs", json=chat_body(unique(), model="local:lim-c")).json()

    def limited() -> bool:
        job = client.get(f"/v1/jobs/{waiting['id']}").json()
        return bool(job["status"] == "queued" and job.get("waiting_for") == "rate_limit")

    wait_until(limited, timeout=20)
    client.post(f"/v1/jobs/{waiting['id']}/cancel")
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    names = store.smembers(keys.LIMIT_NAMES)
    store.close()
    assert {f"*:lim-*|{digest(LOCAL_KEY)}", f"*:lim-*|{digest(COMPAT_KEY)}"} <= names
    assert requests_for(sim, "lim-c") == []


def test_courier_submit_with_a_named_provider(api: str, worker: Proc, sim: SimulatorHandle) -> None:
    prompt = unique()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "submit",
            "--model",
            "local:llama-3.1-8b",
            "--prompt",
            prompt,
            "--wait",
        ],
        cwd=ROOT,
        env={**os.environ, "COURIER_API_URL": api, "COURIER_API_KEY": KEY1},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["model"] == "local:llama-3.1-8b", job
    assert [e["prompt"] for e in requests_for(sim, "llama-3.1-8b")] == [prompt]


# ---- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("providers", "says"),
    [
        ({"Big Name": {"api": "openai", "api_key_env": "K"}}, "provider name 'Big Name'"),
        ({"a:b": {"api": "openai", "api_key_env": "K"}}, "before ':'"),
        ({"x": {"api": "gemini", "api_key_env": "K"}}, "unknown api 'gemini'"),
        ({"x": {"api": "azure", "api_key_env": "K", "api_version": "v"}}, "needs base_url"),
        ({"x": {"api": "azure", "base_url": "https://r.openai.azure.com", "api_key_env": "K"}},
         "needs api_version"),
        ({"x": {"api": "azure", "base_url": "https://r.openai.azure.com/openai",
                "api_key_env": "K", "api_version": "v"}}, "without '/openai'"),
        ({"x": {"api": "openai", "api_key_env": "sk-live-abc123"}}, "never the key itself"),
        ({"x": {"api": "openai"}}, "api_key_env"),
        ({"x": {"api": "openai", "api_key_env": "K", "headers": {"Authorization": "Bearer z"}}},
         "carries a credential"),
        ({"x": {"api": "openai", "api_key_env": "K", "base_url": "ftp://h"}}, "http(s) URL"),
        ({"x": {"api": "openai", "api_key_env": "K", "api_version": "v"}}, "to api 'azure' only"),
        ({"x": {"api": "openai", "api_key_env": "K", "key": "sk-1"}}, "key: Extra inputs"),
    ],
)  # fmt: skip
def test_invalid_providers_are_refused_clearly(
    providers: dict[str, Any], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURIER_PROVIDERS", json.dumps(providers))
    with pytest.raises(ValueError, match="providers") as refused:
        Settings()
    assert says in str(refused.value)
    assert "sk-live-abc123" not in str(refused.value) and "sk-1" not in str(refused.value)


def test_invalid_providers_stop_the_worker_command_with_the_reason(tmp_path: Path) -> None:
    bad = json.dumps({"x": {"api": "azure", "api_key_env": "K", "api_version": "v"}})
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "worker"],
        cwd=ROOT,
        env={**os.environ, "COURIER_PROVIDERS": bad},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid configuration" in done.stderr and "needs base_url" in done.stderr


@pytest.mark.parametrize("table", ["COURIER_PROVIDERS", "providers"])
def test_toml_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    config = tmp_path / "courier.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [{table}.gemini]
            api = "openai"
            base_url = "https://generativelanguage.googleapis.com/v1beta/openai/"
            api_key_env = "GEMINI_API_KEY"

            [{table}.azure]
            api = "azure"
            base_url = "https://my-resource.openai.azure.com"
            api_key_env = "AZURE_OPENAI_API_KEY"
            api_version = "{API_VERSION}"
            headers = {{ x-ms-useragent = "courier" }}
            """
        )
    )
    monkeypatch.setenv("COURIER_CONFIG", str(config))
    monkeypatch.delenv("COURIER_PROVIDERS", raising=False)
    settings = Settings()
    assert sorted(settings.provider_catalogue) == ["anthropic", "azure", "gemini", "openai"]
    assert settings.providers["azure"].headers == {"x-ms-useragent": "courier"}
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    catalogue = settings.provider_catalogue
    assert env_api_key("gemini", catalogue) == "g-key"
    assert env_api_key("azure", catalogue) == os.environ.get("AZURE_OPENAI_API_KEY")
    assert env_api_key("unknown", catalogue) is None
    assert {"GEMINI_API_KEY", "OPENAI_API_KEY"} <= set(provider_key_envs(catalogue))


def test_a_named_entry_replaces_a_builtin() -> None:
    replaced = parse_providers({"openai": {"api": "openai", "api_key_env": "OTHER_OPENAI_KEY"}})
    assert replaced["openai"] is not BUILTIN_PROVIDERS["openai"]
    assert Settings(providers=replaced).provider_catalogue["openai"].api_key_env == (
        "OTHER_OPENAI_KEY"
    )
