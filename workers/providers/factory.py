"""Build the adapter for a provider of the catalogue (``openai``, ``anthropic``, COURIER_PROVIDERS).

A built-in provider's SDK client reads its own variables (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``, …), as it always has. A named provider's client is given everything
explicitly — its key from the variable its ``api_key_env`` names, its ``base_url`` (the API's
public endpoint when omitted), its ``headers`` — so it never falls back to another provider's
variables: a local server must not receive ``OPENAI_API_KEY``.

A named provider whose key variable is unset cannot be built: :class:`AuthenticationFailed`,
which fails the job that asked (error type ``authentication``) and caches nothing.
"""

from __future__ import annotations

import os

from config.providers import BUILTIN_PROVIDERS, PUBLIC_BASE_URLS, ProviderConfig
from core.errors import AuthenticationFailed
from workers.providers.base import Provider

# The module of each API's adapter: what a worker imports ahead for a provider of that API.
ADAPTER_MODULES = {
    "openai": "workers.providers.openai_adapter",
    "anthropic": "workers.providers.anthropic_adapter",
    "azure": "workers.providers.azure_adapter",
}


def missing_key_message(name: str, config: ProviderConfig) -> str:
    return (
        f"{name}: no API key: {config.api_key_env} (the api_key_env of provider {name!r}) "
        "is not set in the worker's environment"
    )


def build_provider(name: str, config: ProviderConfig) -> Provider:
    """This process's adapter for provider ``name``; raises ``AuthenticationFailed`` when a
    named provider's key variable is unset."""
    if BUILTIN_PROVIDERS.get(name) is config:
        return _build_builtin(name)
    api_key = os.environ.get(config.api_key_env)
    if not api_key:
        raise AuthenticationFailed(missing_key_message(name, config))
    headers = config.headers or None
    if config.api == "azure":
        from workers.providers.azure_adapter import AzureOpenAIProvider

        assert config.api_version is not None  # ProviderConfig requires it for azure
        return AzureOpenAIProvider(
            name=name,
            api_key=api_key,
            base_url=config.base_url,
            headers=headers,
            api_version=config.api_version,
        )
    base_url = config.base_url or PUBLIC_BASE_URLS[config.api]
    if config.api == "anthropic":
        from workers.providers.anthropic_adapter import AnthropicProvider

        return AnthropicProvider(name=name, api_key=api_key, base_url=base_url, headers=headers)
    from workers.providers.openai_adapter import OpenAIProvider

    return OpenAIProvider(name=name, api_key=api_key, base_url=base_url, headers=headers)


def _build_builtin(name: str) -> Provider:
    if name == "anthropic":
        from workers.providers.anthropic_adapter import AnthropicProvider

        return AnthropicProvider()
    from workers.providers.openai_adapter import OpenAIProvider

    return OpenAIProvider()
