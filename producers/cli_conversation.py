"""``courier conversation JOB_ID``: a job's transcript (docs/contract.md, Conversations)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from producers.cli_http import ApiKey, ApiUrl, api_call


def conversation(
    job_id: Annotated[str, typer.Argument(help="The job whose conversation to show")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Print the conversation up to and including the job's reply, one turn per paragraph
    (role, the job that added it, the text or the tool calls); --json prints it whole."""
    from producers.client import Courier

    with api_call(), Courier(api_url, api_key) as courier:
        transcript = courier.conversation(job_id)
    if as_json:
        typer.echo(json.dumps(transcript, indent=2))
        return
    typer.echo(f"conversation {transcript['conversation_id']}")
    for message in transcript["messages"]:
        typer.echo(f"\n[{message['role']}] {message['job_id']}")
        typer.echo(_text(message))


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content) if content else ""
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        text += f"\n→ {function.get('name')}({function.get('arguments')}) [{call.get('id')}]"
    if message.get("tool_call_id"):
        text = f"← [{message['tool_call_id']}] {text}"
    return text.strip()
