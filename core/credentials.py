"""Where a provider's API key comes from: the variable its config names (docs/contract.md,
Named providers).

``openai`` and ``anthropic`` read ``OPENAI_API_KEY`` and ``ANTHROPIC_API_KEY``, as their SDKs
do; a named provider reads the variable its ``api_key_env`` names. Keys are read from the
environment when asked, never stored in the settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from config.providers import ProviderConfig
from config.settings import get_settings


def key_env(provider: str, providers: Mapping[str, ProviderConfig] | None = None) -> str | None:
    """The name of the variable holding ``provider``'s key, or None for an unknown provider."""
    known = get_settings().provider_catalogue if providers is None else providers
    config = known.get(provider)
    return config.api_key_env if config is not None else None


def env_api_key(provider: str, providers: Mapping[str, ProviderConfig] | None = None) -> str | None:
    """``provider``'s key as the environment holds it now, or None (unset, empty, or an
    unknown provider)."""
    name = key_env(provider, providers)
    return (os.environ.get(name) or None) if name else None


def provider_key_envs(providers: Mapping[str, ProviderConfig] | None = None) -> list[str]:
    """Every variable that holds a provider key, built-in and named (for log redaction)."""
    known = get_settings().provider_catalogue if providers is None else providers
    return sorted({config.api_key_env for config in known.values()})
