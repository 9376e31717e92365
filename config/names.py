"""Names that reach Prometheus labels, Redis keys and log lines, and their safe characters.

A model name submitted as ``openai:gpt-4o-mini\\u0000x`` used to be stored, sent to the
provider and written raw into ``/metrics`` labels. Every name that can end up in a label,
a key or a log line is held to a safe set instead (README, *Safe names*):

==================  ============================================  ==========
name                characters                                    length
==================  ============================================  ==========
tenant              letters, digits, ``. _ @ -`` (first: a        1-128
                    letter or digit)
model (after the    letters, digits, ``. _ - : / @`` (first: a    whole name
``provider:``)      letter or digit)                              <= 200
metadata key (top   letters, digits, ``. _ - : / @``              1-64
level)
==================  ============================================  ==========

ASCII only: no spaces, no control characters, no ``|`` (Courier's metric field
separator), no quotes or backslashes. Real model names fit: ``gpt-4o-mini``,
``claude-haiku-4-5``, ``ft:gpt-4o-mini:org:name:id``, ``meta-llama/Llama-3.1-8B-Instruct``,
``llama3.1:8b``, ``anthropic.claude-3-5-sonnet-20240620-v1:0``, ``claude-3-5-sonnet@20240620``.
"""

from __future__ import annotations

import re

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"  # the part after "provider:"
METADATA_KEY_PATTERN = r"^[A-Za-z0-9._:/@-]{1,64}$"
MAX_MODEL_CHARS = 200

TENANT_RULE = "letters, digits and . _ @ -, starting with a letter or digit, 1-128 characters"
MODEL_RULE = "letters, digits and . _ - : / @ after 'provider:', starting with a letter or digit"
METADATA_KEY_RULE = "letters, digits and . _ - : / @, 1-64 characters"

_TENANT = re.compile(TENANT_PATTERN)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_METADATA_KEY = re.compile(METADATA_KEY_PATTERN)
_TENANT_CHAR = re.compile(r"[A-Za-z0-9._@-]")
_NAME_CHAR = re.compile(r"[A-Za-z0-9._:/@-]")


def first_unsafe(text: str, allowed: re.Pattern[str] = _NAME_CHAR) -> str:
    """Where ``text`` first leaves the ``allowed`` characters, as "character N (U+XXXX)":
    the character itself is not echoed, since it may be a control character."""
    for index, char in enumerate(text):
        if not allowed.fullmatch(char):
            return f"character {index + 1} (U+{ord(char):04X})"
    return "its first character"


def tenant_problem(tenant: str) -> str | None:
    """Why ``tenant`` is not a safe tenant name, or None."""
    if _TENANT.match(tenant):
        return None
    if not tenant:
        return "a tenant name is empty"
    where = "its length" if len(tenant) > 128 else first_unsafe(tenant, _TENANT_CHAR)
    return f"tenant name refused at {where}: tenant names take {TENANT_RULE}"


def model_name_problem(name: str) -> str | None:
    """Why ``name`` (the part after ``provider:``) is not a safe model name, or None."""
    if _MODEL_NAME.match(name):
        return None
    return f"model refused at {first_unsafe(name)}: model names take {MODEL_RULE}"


def metadata_key_problem(key: str) -> str | None:
    if _METADATA_KEY.match(key):
        return None
    where = "its length" if len(key) > 64 else first_unsafe(key)
    return f"metadata key refused at {where}: top-level metadata keys take {METADATA_KEY_RULE}"
