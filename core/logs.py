"""Structured logs: one JSON object per line, with secrets redacted at the last step.

Every job transition is one line with ``job_id``, ``tenant``, ``model``, ``attempt`` and
``duration_ms`` (see :func:`job_event`); prompts and outputs are never logged. The
redaction filter replaces the values of the configured secrets (provider keys, API keys,
webhook secrets) and anything shaped like one, in the message, the arguments and the
exception text, so a secret that slips into an error message still never reaches a log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from core.credentials import provider_key_envs

REDACTED = "[redacted]"
SECRET_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "COURIER_WEBHOOK_SECRET",
    "COURIER_WEBHOOK_SECRET_PREVIOUS",
    "COURIER_API_KEY",
    "COURIER_CLIENT_SECRET",
    "FLOWER_BASIC_AUTH",
)
SECRET_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|whsec_[A-Za-z0-9+/=]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"
    r"|ck_[0-9a-f]{12}_[A-Za-z0-9_\-]{16,}"  # managed API keys (producers.api.apikeys)
    r"|\bcs_[A-Za-z0-9_\-]{40,})"  # OAuth2 client secrets (producers.api.access.clients)
)
STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


def secrets_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """The secret values this process knows of: provider keys, API keys, webhook secrets."""
    env = os.environ if environ is None else environ
    found = [env[name] for name in (*SECRET_ENV, *_provider_key_envs()) if env.get(name)]
    for name in ("COURIER_API_KEYS", "COURIER_JWT_SIGNING_KEYS"):  # "name:secret" pairs
        for pair in env.get(name, "").split(","):
            _, _, key = pair.partition(":")
            if key.strip():
                found.append(key.strip())
    return [s for s in found if len(s) >= 4]


def _provider_key_envs() -> list[str]:
    """The variables named providers read their keys from (COURIER_PROVIDERS); none while
    the settings are invalid (the process is about to say so and stop)."""
    try:
        return provider_key_envs()
    except ValueError:
        return []


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if not _may_hold_a_shape(text):
            return text  # the regex costs more than the rest of a log line's formatting
        return SECRET_SHAPES.sub(REDACTED, text)


def _may_hold_a_shape(text: str) -> bool:
    """False only when no SECRET_SHAPES match can start in ``text``."""
    return (
        "sk-" in text
        or "whsec_" in text
        or "ck_" in text
        or "cs_" in text
        or "bearer" in text.lower()
    )


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}`` on one line, redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in STANDARD_ATTRS and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str))


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Install the redacting handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_courier", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    redact = Redactor(secrets_from_env())
    if json_lines:
        handler.setFormatter(JsonFormatter(redact))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler._courier = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


def job_event(logger: logging.Logger, event: str, **fields: Any) -> None:
    """One line per job transition: ``event`` plus job_id, tenant, model, attempt, …"""
    logger.info(event, extra={"event": event, **fields})
