"""The job: what a producer submits, what Courier stores, what it shows (docs/contract.md, The job).

Shared by the API (validation, OpenAPI schema) and the workers (the record).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.names import (
    MAX_MODEL_CHARS,
    METADATA_KEY_PATTERN,
    metadata_key_problem,
    model_name_problem,
)
from config.providers import ProviderConfig
from config.settings import get_settings

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
Priority = Literal["high", "normal", "low"]  # the order of config.celery.PRIORITIES
Kind = Literal["chat", "embedding"]

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})

MAX_ATTEMPTS_LIMIT = 20
MAX_METADATA_BYTES = 4096
MAX_MESSAGES = 1000
MAX_PROMPT_CHARS = 2_000_000
MAX_TOKENS_LIMIT = 200_000
MAX_EMBEDDING_INPUTS = 2048
MAX_CALLBACK_URL = 2048
MAX_FALLBACKS = 5
MAX_EXPIRES_S = 7 * 24 * 3600
MAX_JSON_DEPTH = 32  # nesting of metadata, tools, response_format, message parts
MAX_BATCH_JOBS = 500  # jobs in one POST /v1/jobs/batch
MAX_CACHE_TTL_S = 30 * 24 * 3600
JOB_ID_PATTERN = r"^job_[0-9A-Za-z]{1,64}$"


def json_integer(value: Any) -> Any:
    """A JSON Schema integer is 3 or 3.0, never true or "3": integer fields are lax (for
    3.0) behind this check; every other field is strict."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("Input should be a valid integer")
    return value


def check_json_values(value: Any, where: str = "", depth: int = 0) -> None:
    """Refuse what JSON cannot carry back out: NaN/Infinity (Python's parser accepts
    them; no JSON encoder emits them) and lone surrogates (not encodable as UTF-8), and
    nesting deeper than MAX_JSON_DEPTH. Stored, either would break every later read of
    the job (and the tenant's listing)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested deeper than the limit of {MAX_JSON_DEPTH} levels")
    where = where or "the body"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}: only finite numbers are valid JSON")
    elif isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_text(str(name), where)
            key = str(name)[:40]
            check_json_values(item, f"{where}.{key}" if depth else key, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json_values(item, f"{where}[{index}]", depth + 1)


def _check_text(text: str, where: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where} is not valid Unicode (a lone surrogate)") from None


def known_providers() -> dict[str, ProviderConfig]:
    """The providers a job may name: ``openai``, ``anthropic`` and those of COURIER_PROVIDERS
    (the API and the workers read the same settings)."""
    return get_settings().provider_catalogue


def validate_model_name(value: str) -> str:
    """``provider:model`` with a known provider and a model name of safe characters
    (:mod:`config.names`: it reaches metric labels and log lines)."""
    provider, sep, name = value.partition(":")
    if not sep or not provider or not name:
        raise ValueError("model must be 'provider:model', e.g. 'openai:gpt-4o-mini'")
    if len(value) > MAX_MODEL_CHARS:
        raise ValueError(f"model is {len(value)} characters; the limit is {MAX_MODEL_CHARS}")
    known = known_providers()
    if provider not in known:
        names = ", ".join(sorted(known))
        if provider.isascii() and provider.isprintable():
            raise ValueError(f"unknown provider {provider!r}; known: {names}")
        raise ValueError(f"unknown provider; known: {names}")
    problem = model_name_problem(name)
    if problem:
        raise ValueError(problem)
    return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)


class ChatRequest(BaseModel):
    """OpenAI chat fields; Courier maps them for Anthropic."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented

    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        description=f"system and message contents: at most {MAX_PROMPT_CHARS} characters in all",
    )
    system: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT, strict=False)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    response_format: dict[str, Any] | None = None

    _integer = field_validator("max_tokens", mode="before")(json_integer)

    @model_validator(mode="after")
    def _bounded_prompt(self) -> ChatRequest:
        chars = len(self.system or "")
        for message in self.messages:
            content = message.content
            chars += len(content) if isinstance(content, str) else len(json.dumps(content or ""))
        if chars > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {chars} characters; the limit is {MAX_PROMPT_CHARS}")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return self


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented

    input: list[str] = Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)

    @field_validator("input", mode="before")
    @classmethod
    def _one_string_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("input")
    @classmethod
    def _bounded_input(cls, value: list[str]) -> list[str]:
        chars = sum(len(text) for text in value)
        if chars > MAX_PROMPT_CHARS:
            raise ValueError(f"input is {chars} characters; the limit is {MAX_PROMPT_CHARS}")
        return value


class CacheOption(BaseModel):
    """``"cache": {"ttl_s": N}``: answer from an identical job of the tenant that succeeded
    at most N seconds ago, and keep this job's answer N seconds for later ones."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ttl_s: int = Field(ge=1, le=MAX_CACHE_TTL_S, strict=False)

    _integer = field_validator("ttl_s", mode="before")(json_integer)


class JobSubmission(BaseModel):
    """The body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented

    model: str = Field(examples=["openai:gpt-4o-mini"])
    kind: Kind = "chat"
    request: dict[str, Any]
    priority: Priority = "normal"
    callback_url: str | None = Field(default=None, max_length=MAX_CALLBACK_URL)
    fallback_models: list[str] = Field(default_factory=list, max_length=MAX_FALLBACKS)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"returned with the job: at most {MAX_METADATA_BYTES} bytes as JSON, "
        f"nested at most {MAX_JSON_DEPTH} levels; top-level keys of letters, digits and "
        ". _ - : / @ (1-64 characters)",
        json_schema_extra={"propertyNames": {"pattern": METADATA_KEY_PATTERN}},
    )
    max_attempts: int = Field(default=5, ge=1, le=MAX_ATTEMPTS_LIMIT, strict=False)
    timeout_s: float = Field(default=120, gt=0, le=3600)
    expires_in_s: float | None = Field(default=None, gt=0, le=MAX_EXPIRES_S)
    cache: CacheOption | None = None
    stream: bool = Field(
        default=False,
        description="chat only: call the provider in streaming mode and publish the output "
        "as it arrives (GET /v1/jobs/{id}/events)",
    )

    parent_job_id: str | None = Field(
        default=None,
        pattern=JOB_ID_PATTERN,
        description="continue the conversation of this earlier job of the tenant: the "
        "provider receives its whole transcript, then this job's messages",
    )

    @model_validator(mode="before")
    @classmethod
    def _json_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_json_values(data)
        return data

    _integer = field_validator("max_attempts", mode="before")(json_integer)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("callback_url")
    @classmethod
    def _printable_url(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            raise ValueError("callback_url must not contain spaces or control characters")
        return value

    @field_validator("fallback_models")
    @classmethod
    def _fallbacks(cls, value: list[str]) -> list[str]:
        return [validate_model_name(v) for v in value]

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            problem = metadata_key_problem(key)
            if problem:
                raise ValueError(problem)
        size = len(json.dumps(value, separators=(",", ":")))
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
        return value

    @model_validator(mode="after")
    def _request_matches_kind(self) -> JobSubmission:
        model_cls = ChatRequest if self.kind == "chat" else EmbeddingRequest
        normalized = model_cls.model_validate(self.request)
        self.request = normalized.model_dump(exclude_none=True)
        if self.kind == "embedding":
            known = known_providers()
            for model in (self.model, *self.fallback_models):
                provider = model.partition(":")[0]
                if not known[provider].embeds:
                    raise ValueError(
                        f"{model!r}: provider {provider!r} speaks the anthropic API, which "
                        "has no embeddings; use an openai or azure provider's model"
                    )
        if self.kind == "embedding" and self.stream:
            raise ValueError("stream is for chat jobs; an embedding has no output to stream")
        if self.parent_job_id is not None and self.kind == "embedding":
            raise ValueError("parent_job_id is for chat jobs; an embedding continues nothing")
        if self.parent_job_id is not None and self.cache is not None:
            raise ValueError("cache cannot be used with parent_job_id: the answer depends on "
                             "the whole conversation")  # fmt: skip
        return self


# ---- what the API shows -----------------------------------------------------


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int | None = Field(
        default=None, description="of input_tokens, read from the provider's prompt cache"
    )
    cache_write_tokens: int | None = Field(
        default=None, description="of input_tokens, written to the provider's prompt cache"
    )


class JobResult(BaseModel):
    output: str | None = None
    message: dict[str, Any] | None = None
    embeddings: list[list[float]] | None = None
    finish_reason: Literal["stop", "length", "content_filter", "tool_calls", "error"]
    usage: Usage
    model: str
    latency_ms: int
    cached: bool | None = Field(
        default=None, description="true: the answer of an earlier job, from the cache"
    )


class JobError(BaseModel):
    type: str
    message: str
    retryable: bool = False


class CallbackState(BaseModel):
    url: str | None = None
    status: Literal["none", "pending", "delivered", "failed"] = "none"
    attempts: int = 0
    last_status_code: int | None = None
    next_attempt_at: str | None = None
    log: list[dict[str, Any]] = Field(default_factory=list)


class QueueInfo(BaseModel):
    """Where a queued job stands (docs/contract.md, What Courier adds)."""

    position: int
    ahead: int = 0
    estimated_start_at: str | None = None


class Job(BaseModel):
    id: str
    status: Status
    model: str
    kind: Kind = "chat"
    stream: bool = False
    priority: Priority
    attempts: int = 0
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    expires_at: str | None = None
    result: JobResult | None = None
    error: JobError | None = None
    callback: CallbackState
    metadata: dict[str, Any] = Field(default_factory=dict)
    waiting_for: str | None = None
    queue: QueueInfo | None = None
    conversation_id: str | None = Field(
        default=None, description="the id of the conversation's root job (chat jobs)"
    )
    parent_job_id: str | None = None
    cost_usd: float | None = Field(
        default=None,
        description="the true cost of the job's provider calls so far, in USD; null when a "
        "model it called has no price",
    )


class ConversationMessage(ChatMessage):
    model_config = ConfigDict(extra="allow")

    job_id: str = Field(description="the job that added this message")


class Conversation(BaseModel):
    """``GET /v1/jobs/{id}/conversation``: the transcript up to and including the job's
    reply, root first."""

    conversation_id: str
    messages: list[ConversationMessage]
    incomplete: bool | None = Field(
        default=None, description="true: an earlier job of the line is no longer kept"
    )


class JobList(BaseModel):
    jobs: list[Job]


class BatchSubmission(BaseModel):
    """The body of ``POST /v1/jobs/batch``: jobs submitted together, all or none."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jobs: list[JobSubmission] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ``2026-11-22T10:00:00.123Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
