"""``POST /oauth/token``: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4).

The client authenticates with HTTP Basic (``client_id:client_secret``, each form-encoded,
RFC 6749 §2.3.1) or with ``client_id`` and ``client_secret`` form fields, never both. The
answer is ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``; errors are
RFC 6749 §5.2's ``{"error", "error_description"}``:

- ``invalid_request`` (400): not a form, a parameter twice, ``grant_type`` missing, two
  ways of client authentication;
- ``invalid_client`` (401, with ``WWW-Authenticate: Basic`` when Basic was used): no,
  unknown, wrongly authenticated or revoked client;
- ``unsupported_grant_type`` (400): anything but ``client_credentials``;
- ``invalid_scope`` (400): an unknown scope, or one outside the client's role;
- ``rate_limited`` (429, with ``Retry-After``): too many failed requests for this client
  or from this address (:mod:`producers.api.access.failures`).

``invalid_grant`` never applies: this grant has no credential other than the client's own.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from producers.api.access import scopes
from producers.api.access.clients import ClientInfo, OAuthClients
from producers.api.access.failures import TokenFailures
from producers.api.access.principal import TOKEN_URL, Denial, Principal
from producers.api.deps import ServicesDep

router = APIRouter(tags=["oauth"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PARAMS = ("grant_type", "scope", "client_id", "client_secret")
FORM = "application/x-www-form-urlencoded"


class OAuthError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = headers or {}


TOKEN_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {
                            "type": "string",
                            "description": "space-separated; empty: every scope of the role",
                            "examples": ["jobs:write jobs:read"],
                        },
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string", "format": "password"},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "An access token",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in", "scope"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                            "scope": {"type": "string"},
                        },
                    }
                }
            },
        },
        **{
            str(status): {
                "description": description,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["error"],
                            "properties": {
                                "error": {"type": "string"},
                                "error_description": {"type": "string"},
                            },
                        }
                    }
                },
            }
            for status, description in (
                (400, "invalid_request, unsupported_grant_type or invalid_scope"),
                (401, "invalid_client"),
                (429, "rate_limited: too many failed token requests; see Retry-After"),
            )
        },
    },
}


@router.post(
    TOKEN_URL,
    summary="Get an access token (OAuth 2.0 client credentials)",
    openapi_extra=TOKEN_DOC,
    response_model=None,
)
async def token(request: Request, services: ServicesDep) -> JSONResponse:
    address = request.client.host if request.client else None
    failures = TokenFailures(services.aredis, services.settings)
    client_id: str | None = None
    try:
        form = await _form(request)
        basic = _basic(request)
        client_id = basic[0] if basic else form.get("client_id")
        wait = await failures.retry_after(client_id, address)
        if wait:
            raise OAuthError(
                429,
                "rate_limited",
                "too many failed token requests for this client or from this address; "
                f"retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        body = await _grant(request, services, form, basic)
    except OAuthError as exc:
        if exc.status != 429:  # a client is charged only for failing to authenticate
            guessed = client_id if exc.error == "invalid_client" else None
            await failures.record(guessed, address)
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=exc.status,
            headers={**exc.headers, **NO_STORE},
        )
    return JSONResponse(body, headers=NO_STORE)


async def _form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM:
        raise OAuthError(400, "invalid_request", f"the body must be {FORM}")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(400, "invalid_request", "the form is not valid UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form and name in PARAMS:
            raise OAuthError(400, "invalid_request", f"parameter {name!r} given more than once")
        form[name] = value
    return form


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if not scheme:
        return None
    if scheme.lower() != "basic":
        raise OAuthError(401, "invalid_client", "client authentication must be HTTP Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise OAuthError(
            401, "invalid_client", "malformed Basic credentials", _basic_challenge()
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(401, "invalid_client", "malformed Basic credentials", _basic_challenge())
    return unquote_plus(client_id), unquote_plus(secret)


def _basic_challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Basic realm="courier"'}


async def _grant(
    request: Request, services: Any, form: dict[str, str], basic: tuple[str, str] | None
) -> dict[str, Any]:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(400, "invalid_request", "grant_type is missing")
    if grant_type != "client_credentials":
        raise OAuthError(
            400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
        )
    if basic and "client_secret" in form:
        raise OAuthError(400, "invalid_request", "use one client authentication: Basic or form")
    if basic and form.get("client_id", basic[0]) != basic[0]:
        raise OAuthError(400, "invalid_request", "client_id differs from the Basic credentials")
    client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
    challenge = _basic_challenge() if basic else {}
    if not client_id or not secret:
        raise OAuthError(401, "invalid_client", "client authentication is missing", challenge)
    clients = OAuthClients(services.redis)
    client, why = await anyio.to_thread.run_sync(clients.authenticate, client_id, secret)
    if client is None or why:
        request.state.denial = Denial(why, client_id, client.tenant if client else None)
        raise OAuthError(401, "invalid_client", "client authentication failed", challenge)
    try:
        granted = scopes.grant(client.role, form.get("scope"))
    except scopes.ScopeError as exc:
        _deny(request, client, "invalid scope")
        raise OAuthError(400, "invalid_scope", str(exc)) from None
    tokens = services.access.tokens
    access_token = tokens.issue(client.id, client.tenant, client.role, granted)
    request.state.principal = Principal(
        client.tenant, client.id, client.role, frozenset(granted), "token"
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": tokens.ttl_s,
        "scope": " ".join(granted),
    }


def _deny(request: Request, client: ClientInfo, reason: str) -> None:
    request.state.denial = Denial(reason, client.id, client.tenant)
