"""Commands of concurrent callers sent together: one pipeline, one round trip (asyncio).

Each request of the API's hot paths (``POST /v1/jobs``: one script; ``GET /v1/jobs/{id}``:
one record and its queue standing) would otherwise take a pooled connection, write, and
wait for its answer on its own. A :class:`Coalescer` queues the commands of every request
that arrives while a batch is on the wire and sends them as the next batch, the way a
database's group commit does: an idle API pays one round trip as before, a busy one pays a
fraction of a round trip's Python per request. Answers (and errors) go back to each caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Command = Sequence[Any]  # ("HGETALL", key), ("EVALSHA", sha, numkeys, *keys, *args), ...


class Coalescer:
    """``in_flight`` batches at most on the wire at once: while Redis runs one batch's
    scripts, the next is sent, so neither the API nor Redis waits for the other."""

    def __init__(self, client: aioredis.Redis, in_flight: int = 2) -> None:
        self.client = client
        self.in_flight = in_flight
        self._pending: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._senders: set[asyncio.Future[None]] = set()

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        """The answers to ``commands``, in order; a command Redis refuses answers its error
        (as ``pipe.execute(raise_on_error=False)``). A connection error raises."""
        answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, answer))
        if len(self._senders) < self.in_flight:
            sender = asyncio.ensure_future(self._send_pending())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await answer

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """A registered script's answer; one Redis does not know yet (after a restart) is
        loaded and run again alone (it did not run)."""
        [answer] = await self.run([("EVALSHA", script.sha, len(keys), *keys, *args)])
        if isinstance(answer, NoScriptError):
            return await script(keys=list(keys), args=list(args))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def _send_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            pipe = self.client.pipeline(transaction=False)
            for commands, _ in batch:
                for command in commands:
                    pipe.execute_command(*command)
            try:
                answers = await pipe.execute(raise_on_error=False)
            except BaseException as exc:  # each caller gets the error
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            start = 0
            for commands, answer in batch:
                if not answer.done():
                    answer.set_result(answers[start : start + len(commands)])
                start += len(commands)
