"""The providers' rules for a dialogue's tool turns, which they answer with a 400 (so a client
that stitches turns together wrongly fails here as it would there):

* OpenAI: a ``tool`` message must answer a ``tool_calls`` id of an earlier assistant message,
  and ``tool_calls`` must not be an empty list;
* Anthropic: a ``tool_result`` block must answer a ``tool_use`` block of the assistant message
  just before it, and a request holding either kind of block must define ``tools``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simulator.errors import BadRequest


def check_openai_turns(messages: Sequence[Any]) -> None:
    asked: set[str] = set()
    for index, message in enumerate(messages):
        calls = message.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not calls:
                raise BadRequest(
                    f"Invalid 'messages[{index}].tool_calls': empty array. Expected an array "
                    "with minimum length 1, but got an empty array instead.",
                    f"messages.[{index}].tool_calls",
                )
            asked.update(str(c.get("id")) for c in calls if isinstance(c, Mapping))
        if message.get("role") == "tool" and message.get("tool_call_id") not in asked:
            raise BadRequest(
                "Invalid parameter: messages with role 'tool' must be a response to a "
                "preceeding message with 'tool_calls'.",
                f"messages.[{index}].role",
            )


def _blocks(message: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, Mapping) and b.get("type") == kind]


def check_anthropic_turns(messages: Sequence[Any], tools: Any) -> None:
    uses_tools = False
    previous: Mapping[str, Any] = {}
    for index, message in enumerate(messages):
        results = _blocks(message, "tool_result")
        uses_tools = uses_tools or bool(results or _blocks(message, "tool_use"))
        if results:
            offered = {b.get("id") for b in _blocks(previous, "tool_use")}
            for block in results:
                if block.get("tool_use_id") not in offered:
                    raise BadRequest(
                        f"messages.{index}.content: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message."
                    )
        previous = message
    if uses_tools and not tools:
        raise BadRequest(
            "Requests which include `tool_use` or `tool_result` blocks must define tools."
        )
