"""The parameters of a hot route (``POST /v1/jobs``, ``GET /v1/jobs/{id}``), read and
validated as FastAPI reads them, without its per-request dependency solving.

FastAPI solves a route's parameters through its dependency tree on every request: for
``POST /v1/jobs`` that was a good fifth of the API's CPU per submission, more than the
submission's own work (bench/results-submit.md). A hot route declares only ``request`` and
reads the rest here, in FastAPI's order and with its errors:

1. the body, read first: a body that is not JSON is a 400 before anything else;
2. the caller (:func:`producers.api.access.one_step.checked`): 401, 422 for an unknown query
   parameter, 403;
3. the query, header and body values, every error of all three in one 422
   (``RequestValidationError``, each ``loc`` as FastAPI names it).

Each parameter is written once, as the ``Annotated`` type FastAPI would read
(:func:`declared` takes its validator and OpenAPI entry from it), and the route declares its
body and parameters for /openapi.json itself (:func:`documented`), so the published schema
is the one FastAPI generated before.
"""

from __future__ import annotations

import email.message
import json
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

from fastapi import Request, params
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

M = TypeVar("M", bound=BaseModel)
MISSING: Any = object()


async def json_body(request: Request) -> Any:
    """The body as FastAPI hands it to validation: parsed JSON for a JSON content type, the
    raw bytes for any other (which then fail validation), :data:`MISSING` when empty."""
    raw = await request.body()
    if not raw:
        return MISSING
    content_type = request.headers.get("content-type")
    if not content_type:  # FastAPI's strict content type: no type, no JSON
        return raw
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc
    except ValueError as exc:  # not UTF-8, say
        raise HTTPException(400, "There was an error parsing the body") from exc


@dataclass(frozen=True)
class Declared:
    """A query or header parameter as a FastAPI route would declare it
    (``Annotated[T | None, Query(...)]`` or ``Header(...)``, default None), read by hand: its
    name on the wire, its validator and its OpenAPI entry, all from that one declaration."""

    name: str
    where: str  # "query" or "header"
    adapter: TypeAdapter[Any]
    openapi: dict[str, Any]


def declared(field_name: str, annotation: Any) -> Declared:
    info = next(m for m in get_args(annotation)[1:] if isinstance(m, params.Query | params.Header))
    where = "header" if isinstance(info, params.Header) else "query"
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    entry: dict[str, Any] = {"name": info.alias or field_name, "in": where, "required": False}
    if info.description:
        entry["description"] = info.description
    title = info.alias or field_name.replace("_", " ").title()  # pydantic's title
    entry["schema"] = {**adapter.json_schema(), "title": title}
    return Declared(entry["name"], where, adapter, entry)


class Params:
    """One request's values, their validation errors collected as FastAPI collects them."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.errors: list[dict[str, Any]] = []

    def value(self, parameter: Declared) -> Any:
        """The parameter's value, None when absent (an error recorded when invalid)."""
        sent = self.request.headers if parameter.where == "header" else self.request.query_params
        value = sent.get(parameter.name)
        if value is None:
            return None
        return self._valid((parameter.where, parameter.name), parameter.adapter, value)

    def body(self, model: type[M], value: Any) -> M | None:
        if value is MISSING:
            self.errors.append(
                {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
            )
            return None
        valid: M | None = self._valid(("body",), model, value)
        return valid

    def check(self) -> None:
        """Raise the 422 of every error found, as FastAPI would after solving the route."""
        if self.errors:
            raise RequestValidationError(self.errors)

    def _valid(self, loc: tuple[str, ...], kind: Any, value: Any) -> Any:
        try:
            if isinstance(kind, TypeAdapter):
                return kind.validate_python(value)
            return kind.model_validate(value, from_attributes=True)  # FastAPI's mode
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.errors.append({**error, "loc": (*loc, *error["loc"])})
            return None


def documented(parameters: list[Declared], body_schema: str | None = None) -> dict[str, Any]:
    """The ``openapi_extra`` declaring what the route reads here: its parameters and its
    required JSON body (a component schema's name)."""
    extra: dict[str, Any] = {"parameters": [p.openapi for p in parameters]} if parameters else {}
    if body_schema is not None:
        schema = {"$ref": f"#/components/schemas/{body_schema}"}
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    return extra
