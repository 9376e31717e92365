"""How often the rate breaker's rule opens on random faults alone, by window and traffic.

``python -m bench.breaker_montecarlo [--hours 1]``

A simulation of the rule in ``core/scripts.py`` (BREAKER_RECORD), not of Courier: calls
start at random (Poisson) at a given rate; a share ``p`` fails and comes back at once, the
rest answer after 0.2 s; at each failure the circuit opens when the failures of the last
``window_s`` reach 50 % of the calls started in it, with ``min_calls`` started at least.
Printed: openings per simulated hour. ``p`` 0.176 is the issue's mix (15 % 500/503 among
the 85 % of calls that are not 429s); 0.3 is a provider failing 30 % with 5xx while up.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections import deque

LATENCY_S = 0.2
RATES = (2, 4, 6, 8, 10, 15, 30)  # calls started per second
SHAPES = ((2.0, 20), (3.0, 20), (5.0, 20), (5.0, 30), (10.0, 20))  # (window_s, min_calls)


def openings(rate: float, p: float, window_s: float, min_calls: int, seconds: float) -> int:
    rng = random.Random(1)
    now, opened = 0.0, 0
    starts: deque[float] = deque()
    failures: deque[float] = deque()
    ending: list[tuple[float, bool]] = []
    while now < seconds:
        now += rng.expovariate(rate)
        starts.append(now)
        failed = rng.random() < p
        heapq.heappush(ending, (now if failed else now + LATENCY_S, failed))
        while ending and ending[0][0] <= now:
            at, failed = heapq.heappop(ending)
            if not failed:
                continue
            failures.append(at)
            while starts and starts[0] <= at - window_s:
                starts.popleft()
            while failures and failures[0] <= at - window_s:
                failures.popleft()
            calls = max(len(starts), len(failures))
            if calls >= min_calls and len(failures) >= 0.5 * calls:
                opened += 1
                starts.clear()
                failures.clear()
    return opened


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hours", type=float, default=1.0)
    args = parser.parse_args(argv)
    seconds = args.hours * 3600
    print(f"openings per {args.hours:g} h at {', '.join(map(str, RATES))} calls/s")
    for p in (0.15 / 0.85, 0.3):
        for window_s, min_calls in SHAPES:
            row = [openings(r, p, window_s, min_calls, seconds) for r in RATES]
            print(f"p={p:.3f} window {window_s:g} s, min_calls {min_calls}: {row}")


if __name__ == "__main__":
    main()
