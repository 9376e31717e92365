"""A truthful ``/openapi.json``: the generated schema, with the job submission described as
the API validates it.

``JobSubmission.request`` is a free-form object in the model (it is validated per
``kind`` after parsing), so the generated schema would promise that any object is
accepted. Here the body becomes "a chat job or an embedding job", each with its own
``request`` schema, and ``model`` gets the ``provider:model`` pattern it is checked
against.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from config.names import MAX_MODEL_CHARS, MODEL_NAME_PATTERN, MODEL_RULE
from core.jobs import ChatRequest, EmbeddingRequest, known_providers

REF = "#/components/schemas/{model}"
PORT = r"(:([0-9]{0,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
# http(s)://host[:port][/path…]: an ASCII host, no credentials, a port in range, no
# spaces or control characters (core.jobs refuses them)
CALLBACK_URL = (
    r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9._~%!$&'()*+,;=-]+"
    + PORT
    + r"([/?#][^\u0000-\u0020\u007f]*)?$"
)


def _model_name(providers: list[str]) -> dict[str, Any]:
    """``provider:model`` for these providers (built-in and COURIER_PROVIDERS' names)."""
    names = "|".join(providers) or "(?!)"  # provider names are [a-z0-9_-]: nothing to escape
    example = "openai" if "openai" in providers else (providers or ["openai"])[0]
    return {
        "type": "string",
        # what validate_model_name accepts: a known provider, then the safe characters
        "pattern": rf"^({names}):" + MODEL_NAME_PATTERN.removeprefix("^"),
        "maxLength": MAX_MODEL_CHARS,
        "description": "provider:model; providers: "
        + ", ".join(providers)
        + f"; the model takes {MODEL_RULE}",
        "examples": [f"{example}:gpt-4o-mini"],
    }


def _component(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Hoist a pydantic schema's ``$defs`` into the components; return the schema."""
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


def _submission(base: dict[str, Any]) -> dict[str, Any]:
    """``JobSubmission`` as two variants keyed by ``kind``."""
    known = known_providers()
    everyone = sorted(known)
    embedders = sorted(name for name, config in known.items() if config.embeds)
    props = base["properties"]
    url = {"type": "string", "maxLength": 2048, "pattern": CALLBACK_URL}

    def variant(title: str, kind: dict[str, Any], request: str, providers: list[str]) -> Any:
        model = _model_name(providers)
        properties = {
            **props,
            "model": model,
            "kind": kind,
            "request": {"$ref": REF.format(model=request)},
            "fallback_models": {**props["fallback_models"], "items": model},
            "callback_url": {"anyOf": [url, {"type": "null"}], "default": None},
        }
        required = ["model", "request"] + (["kind"] if "const" in kind else [])
        return {**base, "title": title, "properties": properties, "required": required}

    chat_kind = {"type": "string", "enum": ["chat"], "default": "chat"}
    embedding_kind = {"type": "string", "const": "embedding"}
    return {
        "title": "JobSubmission",
        "description": base.get("description", ""),
        "anyOf": [
            variant("ChatJobSubmission", chat_kind, "ChatRequest", everyone),
            variant("EmbeddingJobSubmission", embedding_kind, "EmbeddingRequest", embedders),
        ],
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    chat = _component(ChatRequest.model_json_schema(ref_template=REF), components)
    stop = chat["properties"].get("stop", {})
    for option in stop.get("anyOf", []):
        if option.get("type") == "array":
            option["maxItems"] = 4
    embedding = _component(EmbeddingRequest.model_json_schema(ref_template=REF), components)
    embedding["properties"]["input"] = {
        "anyOf": [{"type": "string"}, copy.deepcopy(embedding["properties"]["input"])],
        "description": "one text or a list of texts",
    }
    components["ChatRequest"] = chat
    components["EmbeddingRequest"] = embedding
    if "JobSubmission" in components:
        components["JobSubmission"] = _submission(components["JobSubmission"])
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
