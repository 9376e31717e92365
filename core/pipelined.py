"""Several Lua scripts in one round trip.

redis-py's pipeline checks its registered scripts with ``SCRIPT EXISTS`` before every
execute: a second round trip. :func:`run_together` sends ``EVALSHA`` for each instead, and
only a script Redis does not know yet (after a restart) is loaded and run again alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A registered script with its keys and arguments, to run now or with others."""

    script: Script
    keys: Sequence[Any]
    args: Sequence[Any]

    def run(self) -> Any:
        return self.script(keys=list(self.keys), args=list(self.args))


def run_together(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run ``calls`` in order, in one round trip; their answers, in order."""
    if len(calls) == 1:
        return [calls[0].run()]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    answers: list[Any] = pipe.execute(raise_on_error=False)
    for index, (answer, call) in enumerate(zip(answers, calls, strict=True)):
        if isinstance(answer, NoScriptError):
            answers[index] = call.run()  # loads it; it did not run before
        elif isinstance(answer, Exception):
            raise answer
    return answers
