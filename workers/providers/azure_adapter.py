"""Azure OpenAI through the official SDK's ``openai.AzureOpenAI`` client.

The wire format is OpenAI's, so requests and answers map as in :mod:`.openai_adapter`; what
differs is where and how a call goes, and the SDK's Azure client does all of it: the job's model
is the *deployment* (``azure:my-gpt4o`` → ``POST {endpoint}/openai/deployments/my-gpt4o/
chat/completions?api-version=…``), and the key travels in the ``api-key`` header. Azure sends
OpenAI's ``x-ratelimit-remaining-*`` headers, which the rate limiter reads as for OpenAI.
"""

from __future__ import annotations

from typing import Any

import openai

from workers.providers.openai_adapter import OpenAIProvider


class AzureOpenAIProvider(OpenAIProvider):
    """Chat completions and embeddings of an Azure OpenAI resource's deployments.

    ``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``); the SDK
    adds ``/openai/deployments/<deployment>``.
    """

    name = "azure"
    client_class = openai.AzureOpenAI

    def __init__(self, *, api_version: str, **options: Any) -> None:
        self.api_version = api_version
        super().__init__(**options)

    def client_options(self, api_key: str | None, base_url: str | None) -> dict[str, Any]:
        return {"api_key": api_key, "azure_endpoint": base_url, "api_version": self.api_version}
