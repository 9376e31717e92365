"""Waiting lines on every algorithm and backend: the place in line, priorities, the share
kept for high, and how long a refused job is told to wait."""

from __future__ import annotations

import pytest

from core.ratelimit.model import Ask, Policy, Settlement
from tests.support.ratelimit import (
    HIGH,
    LOW,
    NORMAL,
    Clock,
    Factory,
    ask,
    rule,
    state,
    until_granted,
)


def test_waits_follow_the_line(make: Factory, algorithm: str) -> None:
    b, r = make(None), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    waits = [b.reserve(r, ask(waiter=f"w{i}")).wait_s for i in range(5)]
    assert waits == sorted(waits) and waits[-1] > waits[0]
    if algorithm == "bucket":  # one per second, plus the 10 % kept for high once a line forms
        assert waits[2] - waits[1] == pytest.approx(1.0, abs=0.01)
        assert waits[1] - waits[0] == pytest.approx(1.0 + 6, abs=0.01)
    again = b.reserve(r, ask(waiter="w2")).wait_s
    assert again == pytest.approx(waits[2], abs=0.01)  # a waiter keeps its place


def test_high_goes_before_due_normal_and_low(make: Factory, clock: Clock) -> None:
    b, r = make(Policy(grace_s=30)), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    low = b.reserve(r, ask(priority=LOW, waiter="low"))
    normal = b.reserve(r, ask(priority=NORMAL, waiter="normal"))
    high = b.reserve(r, ask(priority=HIGH, waiter="high"))
    assert not (low.granted or normal.granted or high.granted)
    assert high.wait_s <= normal.wait_s  # high's line is shorter
    clock.advance(max(low.wait_s, normal.wait_s, high.wait_s))
    blocked = b.reserve(r, ask(priority=LOW, waiter="low"))
    assert not blocked.granted and blocked.reason == "priority"
    assert not b.reserve(r, ask(priority=NORMAL, waiter="normal")).granted
    assert b.reserve(r, ask(priority=HIGH, waiter="high")).granted
    assert until_granted(b, r, ask(priority=NORMAL, waiter="normal"), clock) >= 0
    assert state(b, r.name)["waiters"] == {"high": 0, "normal": 0, "low": 1}


def test_share_kept_for_high_while_work_waits(make: Factory, clock: Clock, algorithm: str) -> None:
    b, r = make(Policy(grace_s=120)), rule(rpm=100)
    for _ in range(100):
        assert b.reserve(r, ask()).granted  # nobody waiting: the whole bucket is usable
    assert not b.reserve(r, ask(priority=LOW, waiter="queued-low")).granted  # now work waits
    clock.advance(30 if algorithm == "bucket" else 90)  # 50 back
    granted = sum(b.reserve(r, ask(priority=NORMAL)).granted for _ in range(60))
    assert granted == 40  # normal stopped at the 10 % kept for high
    assert state(b, r.name)["remaining_requests"] == 10
    assert b.reserve(r, ask(priority=HIGH)).granted


def test_stale_waiters_are_forgotten(make: Factory, clock: Clock) -> None:
    b, r = make(Policy(grace_s=5)), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    gone = b.reserve(r, ask(priority=HIGH, waiter="cancelled-job"))
    clock.advance(gone.wait_s + 6)
    assert state(b, r.name)["waiters"]["high"] == 0
    assert b.reserve(r, ask(priority=LOW)).granted


def test_line_counts_net_tokens_once_outputs_are_known(make: Factory, algorithm: str) -> None:
    b, r = make(None), rule(tpm=6000)  # 100 tokens a second
    first = Ask(3000, NORMAL, "a", "ra", input_tokens=100)
    assert b.reserve(r, first).granted
    b.settle(r, Settlement("ra", give_tokens=2900 - 50, output_tokens=50))
    fill = Ask(3000, NORMAL, "fill", "f", input_tokens=100)
    assert b.reserve(r, fill).granted
    b.settle(r, Settlement("f", output_tokens=50))  # answered, nothing refunded: none to come
    waits = [b.reserve(r, Ask(3000, NORMAL, f"w{i}", f"w{i}", 100)).wait_s for i in range(4)]
    assert waits == sorted(waits)
    if algorithm == "bucket":  # each waiter ahead is expected to use 100 + 50, not 3000
        assert waits[3] - waits[2] == pytest.approx(1.5, abs=0.01)


def test_before_any_output_is_known_waiters_ask_again_once_calls_answer(
    make: Factory, clock: Clock
) -> None:
    """A burst refused before any call answered is not spread out at every waiter's whole
    max_tokens: they come back after a call's latency, when the refunds are in."""
    b, r = make(None), rule(tpm=12_000)
    granted = [Ask(1500, NORMAL, f"g{i}", f"g{i}", input_tokens=500) for i in range(8)]
    assert all(b.reserve(r, a).granted for a in granted)
    waits = [b.reserve(r, Ask(1500, NORMAL, f"w{i}", f"w{i}", 500)).wait_s for i in range(10)]
    assert max(waits) <= Policy().default_latency_s
    clock.advance(0.05)
    for a in granted:
        b.settle(r, Settlement(a.reservation, give_tokens=1000 - 30, output_tokens=30))
    clock.advance(max(waits))
    later = [b.reserve(r, Ask(1500, NORMAL, f"w{i}", f"w{i}", 500)) for i in range(10)]
    assert sum(v.granted for v in later) >= 4  # the refunds made room for several at once


def test_before_any_output_is_known_a_queue_is_told_the_earliest_it_could_go(
    make: Factory, clock: Clock, algorithm: str
) -> None:
    """Whatever the reason of the refusal (here: waiters ahead are due), no place in line is
    counted at every waiter's whole max_tokens while the calls in flight have yet to show the
    output. Seen in the two-worker test: the first call held up 2 s (the SDK's import), and
    jobs refused behind the due waiters were spread 7.6 s apart (1,520 tokens each at 200/s)
    where ~530 each were used, doubling the run. Each waiter ahead now counts its prompt alone
    and the calls in flight their whole max_tokens back: the earliest it could go, so nobody
    polls (as capping every wait at a call's latency would, for as long as the calls run)."""
    b, r = make(None), rule(tpm=12_000)  # 200 tokens a second
    granted = [Ask(1500, NORMAL, f"g{i}", f"g{i}", input_tokens=500) for i in range(8)]
    assert all(b.reserve(r, a).granted for a in granted)
    first = [b.reserve(r, Ask(1500, NORMAL, f"w{i}", f"w{i}", 500)) for i in range(10)]
    assert max(v.wait_s for v in first) <= Policy().default_latency_s  # the refunds cover them
    clock.advance(max(v.wait_s for v in first))  # they are due; no call has answered yet
    behind = [b.reserve(r, Ask(1500, NORMAL, f"q{i}", f"q{i}", 500)) for i in range(10)]
    assert {v.reason for v in behind} == {"queue"}
    waits = [v.wait_s for v in behind]
    assert waits == sorted(waits) and waits[-1] > waits[0]
    if algorithm == "bucket":  # 500 a waiter at 200 a second, not 1,500
        assert waits[-1] - waits[-2] == pytest.approx(2.5, abs=0.01)


def test_waiters_count_on_the_refunds_of_calls_in_flight(make: Factory, clock: Clock) -> None:
    """Once the average output is known, a burst refused while calls are in flight is told
    to come back when those calls answer and refund their unused max_tokens, not after the
    bucket has refilled every reservation in full (a burst of claims must not be paced
    slower than a trickle)."""
    b, r = make(None), rule(tpm=12_000)
    first = Ask(1500, NORMAL, "first", "first", input_tokens=500)
    assert b.reserve(r, first).granted
    b.settle(r, Settlement(first.reservation, give_tokens=970, output_tokens=30, latency_s=0.2))
    granted = [Ask(1500, NORMAL, f"g{i}", f"g{i}", input_tokens=500) for i in range(7)]
    assert all(b.reserve(r, a).granted for a in granted)
    waits = [b.reserve(r, Ask(1500, NORMAL, f"w{i}", f"w{i}", 500)).wait_s for i in range(12)]
    assert waits[0] == pytest.approx(0.2, abs=0.01)  # when the calls in flight answer
    assert waits == sorted(waits) and waits[-1] > 1  # not everyone: the refunds run out
    clock.advance(0.2)
    for a in granted:
        b.settle(r, Settlement(a.reservation, give_tokens=970, output_tokens=30))
    back = [b.reserve(r, Ask(1500, NORMAL, f"w{i}", f"w{i}", 500)) for i in range(12)]
    assert all(v.granted for v, w in zip(back, waits, strict=True) if w <= 0.21)


def test_a_late_waiter_keeps_its_place(make: Factory, clock: Clock, algorithm: str) -> None:
    b, r = make(Policy(grace_s=5)), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    first = b.reserve(r, ask(waiter="w0")).wait_s
    for i in range(1, 10):
        b.reserve(r, ask(waiter=f"w{i}"))
    clock.advance(first + 6)  # w0's job was held up elsewhere: it is late now
    b.settle(r, Settlement("x", cooldown_s=30))
    back = b.reserve(r, ask(waiter="w0"))  # refused (cool-down), but at the front
    newcomer = b.reserve(r, ask(waiter="new"))
    assert not back.granted and not newcomer.granted
    if algorithm == "bucket":  # nine live waiters ahead of the newcomer, none of w0
        assert newcomer.wait_s - back.wait_s >= 8
