"""Courier's settings: environment variables (SPEC §2), or a TOML file named by COURIER_CONFIG.

The TOML file may use the environment names (``COURIER_REDIS_URL = "..."``) or the
field names (``redis_url = "..."``); the environment wins over the file.
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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


def _field_name(key: str) -> str:
    key = key.lower()
    return key.removeprefix("courier_")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COURIER_", extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    broker_url: str | None = None
    api_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="key → tenant"
    )
    webhook_secret: str | None = None
    webhook_secret_previous: str | None = None
    callback_allow_private: bool = False
    callback_retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    callback_timeout_s: float = Field(default=10.0, gt=0, le=120)
    callback_max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    limits: Annotated[dict[str, ModelLimit], NoDecode] = Field(default_factory=dict)
    api_url: str = "http://localhost:8000"
    api_key: str | None = None

    # Additions to SPEC §2 (documented in the README).
    profile: Literal["development", "production"] = "development"
    job_retention_s: int = Field(default=7 * 24 * 3600, ge=60)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    worker_concurrency: int = Field(default=1000, ge=1, le=10000)
    lease_ttl_s: float = Field(default=20.0, ge=2)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    provider_timeout_s: float = Field(default=120.0, gt=0)
    priority_aging_s: float = Field(default=300.0, gt=0)  # queued longer → one queue up
    task_events: bool = True  # Flower's task view; off saves ~1 ms of worker CPU per job
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)

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
        for pair in filter(None, (p.strip() for p in value.split(","))):
            tenant, sep, key = pair.partition(":")
            if not sep or not tenant.strip() or not key.strip():
                raise ValueError("COURIER_API_KEYS takes 'tenant:key' pairs, comma-separated")
            keys[key.strip()] = tenant.strip()
        return keys

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

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
