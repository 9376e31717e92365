"""Named providers: ``COURIER_PROVIDERS`` maps a name to the API it speaks (docs/contract.md,
Named providers).

``{"gemini": {"api": "openai", "base_url": "https://…/v1beta/openai/", "api_key_env":
"GEMINI_API_KEY"}}`` makes ``gemini:gemini-2.5-flash`` a model jobs may name. ``api`` is the
wire shape and the official SDK client that speaks it: ``openai`` (``openai.OpenAI``: OpenAI
itself and every OpenAI-compatible server), ``anthropic`` (``anthropic.Anthropic``) or
``azure`` (``openai.AzureOpenAI``: the deployment in the path, ``api-version``, the
``api-key`` header). The config names the *variable* holding the key, never the key.

The built-in ``openai`` and ``anthropic`` are two providers of the same kind, configured as the
SDKs configure themselves (``OPENAI_API_KEY``/``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY``/
``ANTHROPIC_BASE_URL``); an entry of the same name in ``COURIER_PROVIDERS`` replaces one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Api = Literal["openai", "anthropic", "azure"]
APIS: tuple[str, ...] = ("openai", "anthropic", "azure")

# What follows a provider name is ``:model``; the name also sits in limit patterns (globs),
# metric labels and log lines, so it is kept to a plain identifier.
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Headers that carry credentials: their value would be a key written into the config.
AUTH_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
# Where a named provider without ``base_url`` goes (a built-in reads its SDK's variable).
PUBLIC_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


class ProviderConfig(BaseModel):
    """One entry of COURIER_PROVIDERS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api: str = Field(description="openai | anthropic | azure")
    base_url: str | None = None
    api_key_env: str = Field(description="the environment variable holding the API key")
    headers: dict[str, str] = Field(default_factory=dict)
    api_version: str | None = None  # azure only

    @field_validator("api")
    @classmethod
    def _known_api(cls, value: str) -> str:
        if value not in APIS:
            raise ValueError(f"unknown api {value!r}; use one of: {', '.join(APIS)}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/?#]+[^\s]*$", value):
            raise ValueError(f"base_url must be an http(s) URL, got {value!r}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError(
                "name the environment variable that holds the key (letters, "
                "digits and '_', e.g. GEMINI_API_KEY), never the key itself"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if name.lower() in AUTH_HEADERS:
                raise ValueError(
                    f"header {name!r} carries a credential: name its variable in api_key_env "
                    "instead (a key never goes into the config)"
                )
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in header_value):
                raise ValueError(f"header {name!r} has a control character in its value")
        return value

    @model_validator(mode="after")
    def _azure_needs(self) -> ProviderConfig:
        if self.api == "azure":
            if not self.base_url:
                raise ValueError(
                    "api 'azure' needs base_url: the resource endpoint, "
                    "e.g. https://my-resource.openai.azure.com"
                )
            if self.base_url.rstrip("/").endswith("/openai"):
                raise ValueError(
                    "api 'azure': base_url is the resource endpoint without '/openai' "
                    "(the SDK adds /openai/deployments/<deployment>)"
                )
            if not self.api_version:
                raise ValueError("api 'azure' needs api_version, e.g. \"2024-10-21\"")
        elif self.api_version is not None:
            raise ValueError("api_version applies to api 'azure' only")
        return self

    @property
    def embeds(self) -> bool:
        """Whether the API has embeddings (the Messages API has none)."""
        return self.api != "anthropic"


BUILTIN_PROVIDERS: dict[str, ProviderConfig] = {
    "openai": ProviderConfig(api="openai", api_key_env="OPENAI_API_KEY"),
    "anthropic": ProviderConfig(api="anthropic", api_key_env="ANTHROPIC_API_KEY"),
}


def parse_providers(value: Any) -> dict[str, ProviderConfig]:
    """COURIER_PROVIDERS as validated entries; raises ValueError naming the entry at fault."""
    if not isinstance(value, Mapping):
        raise ValueError("COURIER_PROVIDERS must be an object: name → {api, base_url, ...}")
    parsed: dict[str, ProviderConfig] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not PROVIDER_NAME.match(name):
            raise ValueError(
                f"provider name {name!r}: use lowercase letters, digits, '-' and '_' "
                "(at most 40, starting with a letter or digit); it is what comes before "
                "':' in a model"
            )
        if isinstance(entry, ProviderConfig):
            parsed[name] = entry
            continue
        if not isinstance(entry, Mapping):
            raise ValueError(f"provider {name!r} must be an object: {{api, base_url, ...}}")
        try:
            parsed[name] = ProviderConfig.model_validate(entry)
        except ValueError as exc:
            raise ValueError(f"provider {name!r}: {_first_error(exc)}") from None
    return parsed


def _first_error(exc: ValueError) -> str:
    """A pydantic error as one line per problem, field first."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for error in errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def catalogue(named: Mapping[str, ProviderConfig]) -> dict[str, ProviderConfig]:
    """Every provider jobs may name: the built-in two, then the named ones (which win)."""
    return {**BUILTIN_PROVIDERS, **named}
