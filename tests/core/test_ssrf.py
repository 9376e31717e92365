"""The SSRF guard: callback URLs refused at submission, and connections pinned to the
addresses checked when they are opened (DNS rebinding gets nowhere)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

import httpcore
import httpx
import pytest

from core import ssrf
from core.errors import UnsafeCallbackURL
from core.ssrf import (
    check_callback_url,
    checked_addresses,
    is_public,
)
from tests.support.receiver import Receiver
from workers.webhooks.transport import build_client

PUBLIC_V4 = "93.184.215.14"

NON_PUBLIC_HOSTS = [
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[fe80::1]",
    "[fec0::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.1.2.3]",
    "[::127.0.0.1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a9fe:a9fe]",
    "[2002:a9fe:a9fe::1]",
    "[2002:7f00:1::1]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "2130706433",
    "0x7f000001",
    "127.1",
    "0177.0.0.1",
]


@pytest.mark.parametrize("host", NON_PUBLIC_HOSTS)
def test_non_public_hosts_are_refused(host: str) -> None:
    with pytest.raises(UnsafeCallbackURL, match="non-public address"):
        check_callback_url(f"http://{host}/hooks/ai", allow_private=False)
    with pytest.raises(ValueError):  # the API catches ValueError
        check_callback_url(f"https://{host}:8443/x", allow_private=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.0.0.1"])
def test_allow_private_accepts_them(host: str) -> None:
    check_callback_url(f"http://{host}:9000/hook", allow_private=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "http"),
        ("file:///etc/passwd", "http"),
        ("gopher://127.0.0.1:6379/_INFO", "http"),
        ("//example.com/hook", "http"),
        ("http:///hook", "http"),
        ("example.com/hook", "http"),
        ("http://user:pw@example.com/hook", "credentials"),
        ("http://user@example.com/hook", "credentials"),
        ("http://:pw@example.com/hook", "credentials"),
        ("http://example.com:99999/hook", "not a valid URL"),
        ("http://[::1/hook", "not a valid URL"),
    ],
)
def test_bad_forms_are_refused(url: str, message: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(UnsafeCallbackURL, match=message):
            check_callback_url(url, allow_private=allow_private)


def test_require_https() -> None:
    with pytest.raises(UnsafeCallbackURL, match="https://"):
        check_callback_url("http://example.com/hook", True, require_https=True)
    check_callback_url("https://127.0.0.1/hook", True, require_https=True)


def test_public_addresses_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    for literal in (PUBLIC_V4, "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert is_public(ipaddress.ip_address(literal)), literal
    host = f"[{'2606:4700::1111'}]"
    check_callback_url(f"https://{host}/hook", allow_private=False)
    monkeypatch.setattr(ssrf, "resolve", lambda h, p: [ipaddress.ip_address(PUBLIC_V4)])
    check_callback_url("https://client.example/hooks/ai", allow_private=False)


def test_every_address_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = [ipaddress.ip_address(PUBLIC_V4), ipaddress.ip_address("10.1.1.1")]
    monkeypatch.setattr(ssrf, "resolve", lambda h, p: answer)
    with pytest.raises(UnsafeCallbackURL, match=r"10\.1\.1\.1"):
        check_callback_url("https://mixed.example/hook", allow_private=False)


def test_unresolvable_name_is_left_to_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(host: str, port: int) -> list[ssrf.IPAddress]:
        raise OSError("Name or service not known")

    monkeypatch.setattr(ssrf, "resolve", fail)
    check_callback_url("https://not-yet.example/hook", allow_private=False)
    with pytest.raises(ssrf.CallbackHostUnresolved):
        checked_addresses("not-yet.example", 443, allow_private=False)


# ---- connections: pinned to checked addresses ---------------------------------------


class RecordingBackend(httpcore.NetworkBackend):
    """Records where connections go; really connects only to loopback."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        self.targets.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"test: no route to {host}")
        return self.inner.connect_tcp(host, port, timeout, local_address, socket_options)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def answers(*lists: list[str]) -> Iterator[list[ssrf.IPAddress]]:
    for answer in lists:
        yield [ipaddress.ip_address(a) for a in answer]


def test_dns_rebinding_never_reaches_the_private_address(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    replies = answers([PUBLIC_V4], ["127.0.0.1"])
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: next(replies))
    url = receiver.url("/rebind", host="rebind.example")
    check_callback_url(url, allow_private=False)  # first answer: public, accepted

    backend = RecordingBackend()
    with build_client(False, 2.0, backend=backend) as client, pytest.raises(UnsafeCallbackURL):
        client.post(url, content=b"{}")  # second answer: private, refused before connecting
    assert backend.targets == []
    assert receiver.received() == []


def test_connection_goes_to_the_checked_address_only(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[ssrf.IPAddress]:
        lookups.append(host)
        return [ipaddress.ip_address(PUBLIC_V4)]

    monkeypatch.setattr(ssrf, "resolve", resolve)
    backend = RecordingBackend()
    with build_client(False, 2.0, backend=backend) as client, pytest.raises(httpx.ConnectError):
        client.post("http://pinned.example:8080/hook", content=b"{}")
    assert lookups == ["pinned.example"]
    assert backend.targets == [PUBLIC_V4]


def test_pinned_connection_keeps_the_host_header(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    monkeypatch.setattr(ssrf, "resolve", lambda h, p: [ipaddress.ip_address("127.0.0.1")])
    backend = RecordingBackend()
    url = receiver.url("/pinned", host="hooks.example")
    with build_client(True, 2.0, backend=backend) as client:
        response = client.post(url, content=b'{"a":1}')
    assert response.status_code == 200
    assert backend.targets == ["127.0.0.1"]
    (got,) = receiver.received("/pinned")
    assert got.headers["host"] == f"hooks.example:{receiver.port}"
    assert got.body == b'{"a":1}'


def test_loopback_refused_at_connect_without_allow_private(receiver: Receiver) -> None:
    with build_client(False, 2.0) as client, pytest.raises(UnsafeCallbackURL):
        client.post(receiver.url("/direct"), content=b"{}")
    assert receiver.received() == []


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.script("/moved", [{"status": 302, "headers": {"Location": "/elsewhere"}}])
    with build_client(True, 2.0) as client:
        response = client.post(receiver.url("/moved"), content=b"{}")
    assert response.status_code == 302
    assert receiver.received("/elsewhere") == []
