"""The Python client as an OAuth2 client: an ``httpx.Auth`` that fetches an access token
with the client-credentials grant (``POST /oauth/token``, HTTP Basic), sends it as
``Authorization: Bearer``, fetches a new one shortly before it expires, and once more when
the API answers 401 to a token it took for valid (a restarted key set, say).

A refused token request raises ``CourierAPIError`` with the OAuth2 error
(``invalid_client``, ``invalid_scope``, ``rate_limited``...) as its type.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncGenerator, Generator
from urllib.parse import quote

import httpx

from producers.client_errors import CourierAPIError

REFRESH_LEEWAY_S = 30.0  # fetch a new token this long before the current one expires


class ClientCredentials(httpx.Auth):
    def __init__(
        self, token_url: str, client_id: str, client_secret: str, scope: str | None = None
    ) -> None:
        self.token_url = token_url
        basic = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        self._basic = "Basic " + base64.b64encode(basic.encode()).decode()
        self.scope = scope
        self.token: str | None = None
        self.expires_at = 0.0  # time.monotonic() deadline
        self._thread_lock = threading.Lock()
        self._task_lock: asyncio.Lock | None = None

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        return httpx.Request(
            "POST", self.token_url, data=form, headers={"Authorization": self._basic}
        )

    def _store(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not response.is_success or not isinstance(body, dict) or "access_token" not in body:
            error = str(body.get("error", "http_error")) if isinstance(body, dict) else "http_error"
            message = body.get("error_description") if isinstance(body, dict) else None
            raise CourierAPIError(response.status_code, error, str(message or response.text[:200]))
        lifetime = float(body.get("expires_in") or 0)
        self.token = str(body["access_token"])
        self.expires_at = time.monotonic() + max(0.0, lifetime - REFRESH_LEEWAY_S)
        return self.token

    def _current(self) -> str | None:
        return self.token if self.token and time.monotonic() < self.expires_at else None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        with self._thread_lock:
            token, fetched = self._current(), False
            if token is None:
                response = yield self._token_request()
                response.read()
                token, fetched = self._store(response), True
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and not fetched:
            with self._thread_lock:
                if self.token == token:  # nobody has fetched a new one meanwhile
                    answer = yield self._token_request()
                    answer.read()
                    self._store(answer)
                request.headers["Authorization"] = f"Bearer {self.token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._task_lock is None:
            self._task_lock = asyncio.Lock()
        async with self._task_lock:
            token, fetched = self._current(), False
            if token is None:
                response = yield self._token_request()
                await response.aread()
                token, fetched = self._store(response), True
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and not fetched:
            async with self._task_lock:
                if self.token == token:
                    answer = yield self._token_request()
                    await answer.aread()
                    self._store(answer)
                request.headers["Authorization"] = f"Bearer {self.token}"
            yield request
