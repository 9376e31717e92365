"""Courier's settings: environment variables, or a TOML file named by COURIER_CONFIG.

Every variable is listed in docs/contract.md, Configuration.

The TOML file may use the environment names (``COURIER_REDIS_URL = "..."``) or the
field names (``redis_url = "..."``); the environment wins over the file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.costs import ModelPrice, TenantBudget, check_names, check_tenants, parse_table
from config.names import tenant_problem
from config.production import production_problems, unsafe_message
from config.providers import ProviderConfig, catalogue, parse_providers
from config.weights import parse_weights

KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a signing key's id
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class ModelLimit(BaseModel):
    """One entry of COURIER_LIMITS: the budget shared by every worker for matching models."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_in_flight: int | None = Field(default=None, ge=1)


class TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by COURIER_CONFIG, accepting env-style or field-style keys."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("COURIER_CONFIG")
        raw: dict[str, Any] = tomllib.loads(Path(path).read_text()) if path else {}
        self._values = {_field_name(k): v for k, v in raw.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        names = set(self.settings_cls.model_fields)
        return {k: v for k, v in self._values.items() if k in names}


def sentinel_address(text: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``; the port defaults to Sentinel's 26379)."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        host, port = text, "26379"
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"COURIER_REDIS_SENTINELS takes host:port pairs, not {text!r}")
    return host, int(port)


def _field_name(key: str) -> str:
    key = key.lower()
    return key.removeprefix("courier_")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COURIER_", extra="ignore", hide_input_in_errors=True
    )

    redis_url: str = "redis://localhost:6379/0"
    broker_url: str | None = None
    # Redis Sentinel (README, High availability): where set, every Redis client asks these
    # Sentinels for the master of ``redis_sentinel_master``; the host and port of redis_url
    # are then unused (its database number, user and password still apply).
    redis_sentinels: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)
    # Replicas that must hold a submission (and a job's ending) before it is acknowledged
    # (Redis WAIT); None: 1 with Sentinel, else 0 (acknowledged once the master has it).
    redis_min_replicas: int | None = Field(default=None, ge=0, le=16)
    redis_replica_timeout_s: float = Field(default=1.0, gt=0, le=10)
    api_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="key → tenant", repr=False
    )
    webhook_secret: str | None = Field(default=None, repr=False)
    webhook_secret_previous: str | None = Field(default=None, repr=False)
    callback_allow_private: bool = False
    callback_retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    callback_timeout_s: float = Field(default=10.0, gt=0, le=120)
    callback_max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    limits: Annotated[dict[str, ModelLimit], NoDecode] = Field(default_factory=dict)
    # name → {api, base_url, api_key_env, headers, api_version}: config.providers and
    # docs/contract.md, Named providers
    providers: Annotated[dict[str, ProviderConfig], NoDecode] = Field(default_factory=dict)
    prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(default_factory=dict)
    budgets: Annotated[dict[str, TenantBudget], NoDecode] = Field(default_factory=dict)
    api_url: str = "http://localhost:8000"
    api_key: str | None = Field(default=None, repr=False)

    # Courier's additions (docs/contract.md, Configuration: Added settings).
    profile: Literal["development", "production"] = "development"
    job_retention_s: int = Field(default=7 * 24 * 3600, ge=60)
    # A conversation's transcript (parent_job_id): what one job may send, counted at submission
    conversation_max_messages: int = Field(default=1000, ge=1)
    conversation_max_bytes: int = Field(default=4_000_000, ge=1024)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    worker_concurrency: int = Field(default=1000, ge=1, le=10000)
    # A gevent worker on Redis runs calls in its own pool, not in Celery's task greenlets
    # (workers.run.pool); off: each task holds its call, and Flower lists it as active.
    worker_call_pool: bool = True
    # With the call pool and the broker on the job store's Redis, jobs are taken off their
    # queues by Courier's intake, one round trip per job (workers.run.intake), not by Celery's
    # task consumer.
    worker_intake: bool = True
    # Import the SDKs of the providers with an API key when the worker starts, not on the first
    # call: the import is slow, and in a gevent worker it stalls every greenlet.
    worker_preload_sdks: bool = True
    lease_ttl_s: float = Field(default=20.0, ge=2)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    provider_timeout_s: float = Field(default=120.0, gt=0)
    priority_aging_s: float = Field(default=300.0, gt=0)  # queued longer → one queue up
    # Fair share within a priority (README, Fair share): tenant → weight, default 1 each.
    tenant_weights: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    task_events: bool = True  # Flower's task view; off saves some worker CPU per job
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # The circuit breaker per provider:model (workers.run.breaker; README "Circuit breaker").
    breaker: Literal["rate", "streak", "off"] = "rate"
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window_s: float = Field(default=5.0, ge=0.1, le=3600)
    breaker_min_calls: int = Field(default=20, ge=1)
    breaker_cooldown_s: float = Field(default=10.0, gt=0)
    breaker_probes: int = Field(default=3, ge=1, le=100)
    breaker_threshold: int = Field(default=5, ge=1)  # COURIER_BREAKER=streak only
    # The answer cache (core/cache/): an answer larger than this is not kept, and a
    # tenant's answers take at most that many bytes (its soonest-expiring go first).
    cache_max_entry_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    cache_max_tenant_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Streamed jobs (README, Live events and streaming): the longest wait for the next chunk
    # of a stream before the call counts as stalled (retryable), and how often a worker
    # writes the text its streamed calls gathered (one pipeline for all of them).
    stream_chunk_timeout_s: float = Field(default=60.0, gt=0)
    stream_flush_ms: int = Field(default=10, ge=1, le=1000)

    # Security (SECURITY.md): quotas per tenant, header limit, production checks.
    tenant_max_unfinished: int = Field(default=10_000, ge=0)  # 0: no limit
    tenant_submit_rate: float = Field(default=100.0, ge=0)  # submissions/s; 0: no limit
    tenant_submit_burst: int = Field(default=200, ge=1)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # 431 past it
    callback_require_https: bool | None = None  # None: true in production, else false
    flower: bool = False  # this deployment runs Flower: production then needs its auth

    # Access (docs/contract.md, Access control): OAuth2 client credentials and the audit log.
    # kid → HS256 secret, "kid:secret,kid:secret": the first signs, every one verifies (so
    # tokens signed before a rotation stay valid). Unset: a key generated once and kept in
    # Redis (development only; the production API refuses to start without one).
    jwt_signing_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict, repr=False)
    jwt_issuer: str = "courier"
    jwt_audience: str = "courier-api"
    token_ttl_s: int = Field(default=3600, ge=60, le=24 * 3600)
    # How long an API process trusts that a client is not revoked: a revoked client's tokens
    # fail within this many seconds on every API process.
    token_revocation_check_s: float = Field(default=5.0, ge=0, le=300)
    token_failures_per_client: int = Field(default=10, ge=1)  # failed token requests per window
    token_failures_per_address: int = Field(default=30, ge=1)
    token_failure_window_s: int = Field(default=300, ge=1)
    audit_retention_s: int = Field(default=90 * 24 * 3600, ge=60)
    audit_max_entries: int = Field(default=200_000, ge=100)  # per tenant, newest kept
    # The Python client and `courier submit` as an OAuth2 client (instead of an API key).
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlFileSource(settings_cls))

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for number, pair in enumerate(filter(None, (p.strip() for p in value.split(","))), 1):
            tenant, sep, key = pair.partition(":")
            if not sep or not tenant.strip() or not key.strip():
                raise ValueError("COURIER_API_KEYS takes 'tenant:key' pairs, comma-separated")
            problem = tenant_problem(tenant.strip())
            if problem:  # the key is never echoed: it is a secret
                raise ValueError(f"COURIER_API_KEYS pair {number}: {problem}")
            keys[key.strip()] = tenant.strip()
        return keys

    @field_validator("jwt_signing_keys", mode="before")
    @classmethod
    def _parse_signing_keys(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in value.split(","))):
            kid, sep, secret = pair.partition(":")
            if not sep or not KID.match(kid.strip()) or not secret.strip():
                raise ValueError(
                    "COURIER_JWT_SIGNING_KEYS takes 'kid:secret' pairs, comma-separated "
                    "(kid: 1-64 letters, digits, . _ -); make one with 'courier keys signing-key'"
                )
            found[kid.strip()] = secret.strip()
        return found

    @field_validator("callback_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [float(v) for v in value.split(",") if v.strip()]
        if not value or any(float(v) < 0 for v in value):
            raise ValueError("callback retry schedule needs one or more non-negative seconds")
        return tuple(value)

    @field_validator("limits", mode="before")
    @classmethod
    def _parse_limits(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"COURIER_PROVIDERS is not valid JSON: {exc}") from None
        return parse_providers(value)

    @field_validator("prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: Any) -> Any:
        table = parse_table(value, "COURIER_PRICES")
        if isinstance(table, Mapping):
            check_names(table, "COURIER_PRICES: model pattern")
        return table

    @field_validator("budgets", mode="before")
    @classmethod
    def _parse_budgets(cls, value: Any) -> Any:
        table = parse_table(value, "COURIER_BUDGETS")
        if isinstance(table, Mapping):
            check_tenants(table)
        return table

    @field_validator("tenant_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: Any) -> Any:
        return parse_weights(value)

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _parse_sentinels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(sentinel_address(v) for v in value if v.strip())
        return value

    @model_validator(mode="after")
    def _sentinel_url(self) -> Settings:
        if self.redis_sentinels and self.redis_url.startswith(("rediss://", "unix://")):
            raise ValueError(
                "COURIER_REDIS_SENTINELS takes a redis:// COURIER_REDIS_URL (for its database "
                "number and password); TLS and unix sockets through Sentinel are not supported"
            )
        return self

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        if self.profile == "production":
            problems = production_problems(self)
            if problems:
                raise ValueError(unsafe_message(problems))
        return self

    @property
    def provider_catalogue(self) -> dict[str, ProviderConfig]:
        """Every provider a job may name: ``openai``, ``anthropic`` and COURIER_PROVIDERS."""
        return catalogue(self.providers)

    @property
    def celery_broker_url(self) -> str:
        """COURIER_BROKER_URL, else the job store's Redis (through Sentinel where set)."""
        return self.broker_url or self.store_broker_url

    @property
    def store_broker_url(self) -> str:
        """The job store's Redis as a kombu broker URL: ``sentinel://h:p/db;sentinel://…``
        with Sentinel (kombu asks them for the master named in the transport options)."""
        if not self.redis_sentinels:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        auth = parts.netloc.rpartition("@")[0]
        auth = f"{auth}@" if auth else ""
        db = parts.path or "/0"
        return ";".join(
            f"sentinel://{auth}{f'[{host}]' if ':' in host else host}:{port}{db}"
            for host, port in self.redis_sentinels
        )

    @property
    def broker_is_store(self) -> bool:
        """Celery's broker is the job store's Redis (one Lua script may read both)."""
        return self.broker_url in (None, "", self.redis_url, self.store_broker_url)

    @property
    def replicas_to_confirm(self) -> int:
        """Replicas that must hold a write before it is acknowledged."""
        if self.redis_min_replicas is not None:
            return self.redis_min_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def callbacks_need_https(self) -> bool:
        """Whether callback URLs must be ``https://`` (COURIER_CALLBACK_REQUIRE_HTTPS)."""
        if self.callback_require_https is None:
            return self.profile == "production"
        return self.callback_require_https


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
