"""The provider interface: what every adapter takes and returns.

A chat request is the OpenAI-shaped dict of docs/contract.md, The job (``messages``, ``system``,
``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``tools``, ``response_format``),
already validated by the API. An embedding request is ``{"input": [str, ...]}``. Adapters
turn provider SDK exceptions into the error tree of :mod:`core.errors`; nothing else escapes
them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from core.results import ProviderResult


class Provider(Protocol):
    """One provider account: a shared SDK client and the calls Courier makes with it."""

    name: str

    def complete(
        self, model: str, request: Mapping[str, Any], *, timeout: float
    ) -> ProviderResult: ...

    def stream_complete(
        self,
        model: str,
        request: Mapping[str, Any],
        *,
        timeout: float,
        chunk_timeout: float,
        on_text: Callable[[str], None],
    ) -> ProviderResult:
        """:meth:`complete` in the provider's streaming mode, each piece of text handed to
        ``on_text`` as it arrives; the same result. A fault mid-stream is retryable."""
        ...

    def embed(
        self, model: str, request: Mapping[str, Any], *, timeout: float
    ) -> ProviderResult: ...
