"""Rate limits held in memory: token buckets keyed by (kind, key)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

from parley.core.ratelimit import Bucket, Rate, take
from parley.errors import ApiError
from parley.wire import ErrorCode

# Per kind of action. Keys are a number, a device id or a client address.
DEFAULT_RATES: Mapping[str, Rate] = {
    "code:handle": Rate(burst=3, per_second=1 / 60),  # SMS codes to one number
    "code:address": Rate(burst=20, per_second=1 / 10),  # code requests from one address
    "verify:address": Rate(burst=30, per_second=1 / 2),  # code guesses from one address
    "lookup:device": Rate(burst=1000, per_second=10),  # handles looked up, per device
    "lookup:address": Rate(burst=2000, per_second=20),  # handles looked up, per address
    "sms:account": Rate(burst=60, per_second=1 / 10),  # SMS submits per account: SMS cost money
    "claim:device": Rate(burst=1000, per_second=10),  # one-time keys claimed, per device
}

# Evicting a bucket forgets it (a fresh full bucket next time), so keep plenty.
MAX_BUCKETS = 200_000


class Limiter:
    def __init__(self, clock: Callable[[], int], rates: Mapping[str, Rate] = DEFAULT_RATES, enabled: bool = True):
        self._clock = clock
        self._rates = dict(rates)
        self._enabled = enabled
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()

    def check(self, kind: str, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` from the (kind, key) bucket, or raise a 429 ApiError."""
        if not self._enabled:
            return
        slot = (kind, key)
        allowed, bucket, wait_s = take(self._buckets.get(slot), self._rates[kind], self._clock(), cost)
        self._buckets[slot] = bucket
        self._buckets.move_to_end(slot)
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        if not allowed and wait_s == float("inf"):
            raise ApiError(429, ErrorCode.RATE_LIMITED, "this request is larger than the rate limit ever allows")
        if not allowed:
            raise ApiError(
                429, ErrorCode.RATE_LIMITED, f"too many requests; try again in {wait_s:.0f} s", retry_after_s=wait_s
            )
