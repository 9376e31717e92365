"""A bare streaming SDK call's CPU: the comparator for the worker's CPU per streamed job.

``python -m bench.bare_stream BASE_URL CALLS``: ``CALLS`` concurrent
``openai.OpenAI(...).chat.completions.create(stream=True, stream_options=include_usage)``
calls, each stream read to its end, in greenlets of a fresh gevent-patched interpreter
(as a worker runs them), against a simulator pacing its streams. Prints the CPU
(``time.process_time``) of all the calls ÷ calls, in ms, as JSON.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent.pool  # noqa: E402
import openai  # noqa: E402


def measure(base_url: str, calls: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=base_url, api_key="sim-key", timeout=60, max_retries=0)

    def one(i: int) -> int:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"bare streaming call {i} {time.time()}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
        return len("".join(text))

    for i in range(10):  # warm: imports, the connection pool
        one(-i)
    pool = gevent.pool.Pool(calls)
    before_cpu, before_wall = time.process_time(), time.monotonic()
    chars = sum(pool.imap_unordered(one, range(calls)))
    cpu_ms = (time.process_time() - before_cpu) * 1000
    wall = time.monotonic() - before_wall
    client.close()
    return {"calls": calls, "cpu_ms_per_call": cpu_ms / calls, "wall_s": wall, "chars": chars}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
