"""The production profile (``COURIER_PROFILE=production``): the settings it refuses, each
named with its fix. ``Settings`` refuses them at start; ``courier api`` also checks the API
keys (it can count the managed keys in Redis) and the token signing keys."""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings

MIN_SECRET_BYTES = 24
MIN_SIGNING_KEY_CHARS = 32
FLOWER_AUTH_ENV = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH_PROVIDER")
FLOWER_AUTH_ARGS = ("--basic_auth", "--basic-auth", "--auth_provider", "--auth-provider")


def webhook_secret_problem(secret: str) -> str | None:
    """Why a Standard Webhooks secret is unsafe (not ``whsec_`` + base64, fewer than 24
    bytes, or every byte the same), or None."""
    raw = secret.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return "is not 'whsec_' + base64"
    if len(decoded) < MIN_SECRET_BYTES:
        return f"decodes to {len(decoded)} bytes; at least {MIN_SECRET_BYTES} random bytes needed"
    if len(set(decoded)) == 1:
        return "has every byte the same (not random)"
    return None


def runs_flower(argv: Sequence[str]) -> bool:
    """Whether this process is ``celery … flower`` (or ``python -m celery … flower``)."""
    program = argv[0] if argv else ""
    celery = os.path.basename(program) in ("celery", "flower") or program.endswith(
        os.path.join("celery", "__main__.py")
    )
    return celery and "flower" in argv[1:]


def flower_auth_configured(environ: Mapping[str, str], argv: Sequence[str]) -> bool:
    return any(environ.get(name) for name in FLOWER_AUTH_ENV) or any(
        a.split("=", 1)[0] in FLOWER_AUTH_ARGS for a in argv
    )


def production_problems(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> list[str]:
    """Every unsafe setting the production profile refuses (API keys are checked by
    ``courier api``, which can also count the managed keys in Redis)."""
    env = os.environ if environ is None else environ
    args = sys.argv if argv is None else argv
    problems: list[str] = []
    if settings.callback_allow_private:
        problems.append(
            "COURIER_CALLBACK_ALLOW_PRIVATE=true lets callbacks reach loopback, private and "
            "metadata addresses (SSRF); unset it"
        )
    if settings.callback_require_https is False:
        problems.append(
            "COURIER_CALLBACK_REQUIRE_HTTPS=false allows plain-http callbacks; unset it"
        )
    for name, secret in (
        ("COURIER_WEBHOOK_SECRET", settings.webhook_secret),
        ("COURIER_WEBHOOK_SECRET_PREVIOUS", settings.webhook_secret_previous),
    ):
        reason = webhook_secret_problem(secret) if secret else None  # empty: generated
        if reason:
            problems.append(f"{name} {reason}; generate one with 'courier keys webhook-secret'")
    if (settings.flower or runs_flower(args)) and not flower_auth_configured(env, args):
        problems.append(
            "Flower runs without authentication (COURIER_FLOWER=true or a flower process); "
            "set FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH_PROVIDER)"
        )
    return problems


def api_keys_problem(settings: Settings, managed_active: int) -> str | None:
    if settings.api_keys or managed_active > 0:
        return None
    return (
        "no API keys: set COURIER_API_KEYS or create one with "
        "'courier keys create --tenant T' (every request would be refused)"
    )


def signing_keys_problem(settings: Settings) -> str | None:
    """Why the API cannot sign tokens safely in production (checked by ``courier api`` and
    at the app's start-up, not by workers, which verify no token), or None."""
    if not settings.jwt_signing_keys:
        return (
            "no token signing key: set COURIER_JWT_SIGNING_KEYS=kid:secret "
            "(make one with 'courier keys signing-key')"
        )
    short = [
        kid for kid, key in settings.jwt_signing_keys.items() if len(key) < MIN_SIGNING_KEY_CHARS
    ]
    if short:
        return (
            f"COURIER_JWT_SIGNING_KEYS: the key(s) {', '.join(short)} have fewer than "
            f"{MIN_SIGNING_KEY_CHARS} characters; use 'courier keys signing-key'"
        )
    return None


def unsafe_message(problems: Sequence[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"COURIER_PROFILE=production refuses this configuration:\n{lines}"
