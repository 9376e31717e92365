"""Helpers for the access tests (no fixtures: each module starts its own API): known token
signing keys, tokens, and HTTP clients bound to a chosen loopback source address (the API
counts failed token requests per address, so each test that fails on purpose uses its
own)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import jwt
import redis

from core import keys
from tests.support.workers import courier_env

KEYS = {"new": secrets.token_urlsafe(40), "old": secrets.token_urlsafe(40)}
SIGNING = ",".join(f"{kid}:{key}" for kid, key in KEYS.items())
REVOCATION_CHECK_S = 1.0
FAILURES_PER_CLIENT = 3
FAILURES_PER_ADDRESS = 6


def access_env(redis_url: str, **extra: str) -> dict[str, str]:
    settings = {
        "COURIER_JWT_SIGNING_KEYS": SIGNING,
        "COURIER_TOKEN_REVOCATION_CHECK_S": str(REVOCATION_CHECK_S),
        "COURIER_TOKEN_FAILURES_PER_CLIENT": str(FAILURES_PER_CLIENT),
        "COURIER_TOKEN_FAILURES_PER_ADDRESS": str(FAILURES_PER_ADDRESS),
        "COURIER_TOKEN_FAILURE_WINDOW_S": "120",
    }
    return courier_env(redis_url, None, **(settings | extra))


def forget_failures(redis_url: str) -> None:
    """Clear the failed token request counters other modules' APIs left (they share the
    test DB, and the fuzz run fails many token requests from 127.0.0.1)."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=keys.TOKEN_FAILURES.split("{")[0] + "*", count=1000):
        client.delete(key)
    client.close()


def source(n: int) -> httpx.HTTPTransport:
    """A transport whose connections come from 127.0.0.<n>."""
    return httpx.HTTPTransport(local_address=f"127.0.0.{n}")


def fetch_token(
    api: str, client_id: str, secret: str, scope: str | None = None, address: int = 1
) -> dict[str, Any]:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    with httpx.Client(transport=source(address), timeout=30) as http:
        answer = http.post(f"{api}/oauth/token", data=form, auth=(client_id, secret))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_token(api: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=api, headers=bearer(token), timeout=30)


def mint(key: str = "new", **claims: Any) -> str:
    """A token signed like the API's own (tests vary one claim at a time)."""
    now = int(time.time())
    payload = {
        "iss": "courier",
        "aud": "courier-api",
        "sub": "cli_00000000000000000000",
        "client_id": "cli_00000000000000000000",
        "tenant": "t1",
        "role": "user",
        "scope": "jobs:write jobs:read usage:read",
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(payload, KEYS.get(key, key), algorithm="HS256", headers={"kid": key})
