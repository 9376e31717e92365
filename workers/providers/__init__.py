"""Provider adapters and the per-process registry that hands them out.

``get_provider("openai")`` returns this process's one :class:`OpenAIProvider` (built on first
use, then reused: building an SDK client costs much CPU, and the client owns the connection
pool); ``get_provider("gemini")`` the one adapter of a provider named in ``COURIER_PROVIDERS``,
built by :mod:`.factory` for its API (``openai``, ``anthropic`` or ``azure``). Adapters are
imported lazily, so a process that never calls a provider (the HTTP API) does not import the
SDKs; a worker imports those of the providers with a key as it starts (:func:`import_adapters`).

The built-in clients read ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and ``ANTHROPIC_API_KEY``/
``ANTHROPIC_BASE_URL`` the way the SDKs do, a named provider the variable its ``api_key_env``
names, at the time the provider is first built; call :func:`reset_providers` after changing
them (tests do).

Connection pool: each client gets its own pool of :data:`MAX_CONNECTIONS` connections, of which
:data:`MAX_KEEPALIVE_CONNECTIONS` are kept alive, sized for a gevent worker at ``-c 1000``
(the SDK default of 100 keep-alive connections churns TLS connections above that). The pool is
split over :data:`CLIENT_SHARDS` SDK clients used in turn: httpcore's pool scans every
connection and waiting request on each request and release, so one pool of a thousand busy
connections cost a large share of a worker's CPU, and smaller pools keep each scan short (the
number of shards was chosen by measurement: README, Worker model). The clients share one TLS
context, so a shard adds little memory.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable

from config.settings import get_settings
from core.errors import InvalidRequest
from core.results import ProviderResult, Usage, split_model
from workers.providers.base import Provider
from workers.providers.factory import ADAPTER_MODULES, build_provider

__all__ = [
    "CLIENT_SHARDS",
    "MAX_CONNECTIONS",
    "MAX_KEEPALIVE_CONNECTIONS",
    "Provider",
    "ProviderResult",
    "Usage",
    "get_provider",
    "import_adapters",
    "provider_names",
    "register_provider",
    "reset_providers",
    "resolve_model",
]

MAX_CONNECTIONS = 2000
MAX_KEEPALIVE_CONNECTIONS = 1000
CLIENT_SHARDS = 32


def import_adapters(apis: Iterable[str]) -> list[str]:
    """Import the adapters (and SDKs) of these APIs (``openai``, ``anthropic``, ``azure``) now;
    the APIs imported. Importing an SDK is slow (``anthropic`` more than ``openai``; README,
    Configuration), and a gevent worker that did it on its first call stalled every greenlet as
    long (its first jobs held their rate-limit reservations the while)."""
    imported = []
    for api in apis:
        if api in ADAPTER_MODULES:
            importlib.import_module(ADAPTER_MODULES[api])
            imported.append(api)
    return imported


_factories: dict[str, Callable[[], Provider]] = {}  # registered in code (tests); win over settings
_instances: dict[str, Provider] = {}
_lock = threading.Lock()  # a greenlet-aware lock once gevent has monkey-patched threading


def register_provider(name: str, factory: Callable[[], Provider]) -> None:
    """Make ``name`` a provider built by ``factory`` (replaces any cached instance, and any
    provider of that name in the settings)."""
    with _lock:
        _factories[name] = factory
        _instances.pop(name, None)


def provider_names() -> list[str]:
    """The provider names :func:`get_provider` knows: the settings' catalogue (``openai``,
    ``anthropic``, COURIER_PROVIDERS) and those registered."""
    return sorted({*get_settings().provider_catalogue, *_factories})


def _factory(name: str) -> Callable[[], Provider] | None:
    registered = _factories.get(name)
    if registered is not None:
        return registered
    config = get_settings().provider_catalogue.get(name)
    if config is None:
        return None
    return lambda: build_provider(name, config)


def get_provider(name: str) -> Provider:
    """This process's shared provider ``name``; ``InvalidRequest`` if there is no such provider.

    Thread- and greenlet-safe: concurrent first calls build exactly one instance. Errors while
    building (``AuthenticationFailed`` for a missing key) propagate and nothing is cached.
    """
    provider = _instances.get(name)
    if provider is not None:
        return provider
    with _lock:
        provider = _instances.get(name)
        if provider is None:
            factory = _factory(name)
            if factory is None:
                known = ", ".join(provider_names())
                raise InvalidRequest(f"unknown provider {name!r} (known: {known})")
            provider = factory()
            _instances[name] = provider
        return provider


def resolve_model(qualified: str) -> tuple[Provider, str]:
    """``"openai:gpt-4o-mini"`` → (the shared OpenAI provider, ``"gpt-4o-mini"``)."""
    try:
        provider_name, model = split_model(qualified)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return get_provider(provider_name), model


def reset_providers() -> None:
    """Forget every cached provider (closing its client); the next call builds anew."""
    with _lock:
        instances = list(_instances.values())
        _instances.clear()
    for provider in instances:
        close = getattr(provider, "close", None)
        if callable(close):
            close()
