"""Token buckets: a burst at once, then a steady refill."""

from __future__ import annotations

import math

import pytest

from parley.core.ratelimit import Bucket, Rate, take

RATE = Rate(burst=3, per_second=2)  # one token every 500 ms
T0 = 1_000_000


def spend(rate: Rate, times: int, now_ms: int, bucket: Bucket | None = None) -> tuple[list[bool], Bucket | None]:
    outcomes = []
    for _ in range(times):
        allowed, bucket, _ = take(bucket, rate, now_ms)
        outcomes.append(allowed)
    return outcomes, bucket


def test_a_new_key_gets_the_full_burst_then_is_refused() -> None:
    outcomes, _ = spend(RATE, 4, T0)
    assert outcomes == [True, True, True, False]


def test_allowed_take_reports_no_wait() -> None:
    allowed, bucket, wait_s = take(None, RATE, T0)
    assert allowed
    assert wait_s == 0.0
    assert bucket == Bucket(tokens=2, updated_ms=T0)


def test_tokens_refill_over_time() -> None:
    _, bucket = spend(RATE, 3, T0)
    assert not take(bucket, RATE, T0 + 499)[0]
    allowed, bucket, _ = take(bucket, RATE, T0 + 500)
    assert allowed
    assert not take(bucket, RATE, T0 + 500)[0]


def test_refill_stops_at_the_burst() -> None:
    _, bucket = spend(RATE, 3, T0)
    outcomes, _ = spend(RATE, 4, T0 + 3_600_000, bucket)
    assert outcomes == [True, True, True, False]


def test_retry_after_says_when_the_next_token_arrives() -> None:
    _, bucket = spend(RATE, 3, T0)
    allowed, bucket, wait_s = take(bucket, RATE, T0)
    assert not allowed
    assert wait_s == pytest.approx(0.5)
    allowed, _, wait_s = take(bucket, RATE, T0 + 200)
    assert not allowed
    assert wait_s == pytest.approx(0.3)


def test_waiting_retry_after_is_enough() -> None:
    _, bucket = spend(RATE, 3, T0)
    _, bucket, wait_s = take(bucket, RATE, T0 + 100)
    assert take(bucket, RATE, T0 + 100 + math.ceil(wait_s * 1000))[0]


def test_refused_take_spends_nothing() -> None:
    _, bucket = spend(RATE, 3, T0)
    for _ in range(10):
        _, bucket, _ = take(bucket, RATE, T0 + 100)
    assert take(bucket, RATE, T0 + 500)[0]


def test_cost_spends_several_tokens() -> None:
    allowed, bucket, _ = take(None, RATE, T0, cost=3)
    assert allowed
    allowed, _, wait_s = take(bucket, RATE, T0, cost=2)
    assert not allowed
    assert wait_s == pytest.approx(1.0)


def test_no_refill_means_wait_forever() -> None:
    rate = Rate(burst=1, per_second=0)
    _, bucket = spend(rate, 1, T0)
    allowed, _, wait_s = take(bucket, rate, T0 + 10**9)
    assert not allowed
    assert wait_s == math.inf


def test_clock_going_backwards_adds_no_tokens() -> None:
    _, bucket = spend(RATE, 3, T0)
    assert not take(bucket, RATE, T0 - 60_000)[0]


def test_cost_above_the_burst_is_never_allowed_and_says_so() -> None:
    allowed, _, wait_s = take(None, RATE, T0, cost=RATE.burst + 1)
    assert not allowed
    assert wait_s == math.inf
