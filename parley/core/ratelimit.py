"""Token buckets: how often a key (a number, a device, an address) may do a thing.

Pure: a bucket is plain data and :func:`take` returns the next bucket. The server keeps
buckets in memory (see ``parley.server.limits``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """``burst`` actions at once, refilled at ``per_second``."""

    burst: float
    per_second: float


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated_ms: int


def take(bucket: Bucket | None, rate: Rate, now_ms: int, cost: float = 1.0) -> tuple[bool, Bucket, float]:
    """Try to spend ``cost`` tokens. Return (allowed, next bucket, seconds until allowed)."""
    if bucket is None:
        tokens = rate.burst
    else:
        elapsed_s = max(0, now_ms - bucket.updated_ms) / 1000
        tokens = min(rate.burst, bucket.tokens + elapsed_s * rate.per_second)
    if tokens >= cost:
        return True, Bucket(tokens - cost, now_ms), 0.0
    never = cost > rate.burst or rate.per_second <= 0
    wait_s = float("inf") if never else (cost - tokens) / rate.per_second
    return False, Bucket(tokens, now_ms), wait_s
