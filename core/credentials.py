"""Where a provider's API key comes from: the variable its SDK reads."""

from __future__ import annotations

import os


def env_api_key(provider: str) -> str | None:
    """The key the provider's SDK reads: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ..."""
    return os.environ.get(f"{provider.upper()}_API_KEY")
