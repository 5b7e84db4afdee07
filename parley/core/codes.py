"""One-time verification codes: issuing and checking, as a small state machine.

A code proves that whoever registers a device holds the handle (an SMS to the number).
Codes are 6 random digits, live 10 minutes and allow 5 attempts; the server stores only
an HMAC of the code under its own secret, so a copy of the database does not reveal
live codes. The random digits come from the caller: this module makes no randomness.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, replace

CODE_DIGITS = 6
CODE_TTL_MS = 10 * 60 * 1000
CODE_ATTEMPTS = 5


@dataclass(frozen=True)
class PendingCode:
    handle: str
    purpose: str  # "register", "deregister": a code proves one thing only
    code_hash: str
    expires_at_ms: int
    attempts_left: int


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"  # too many wrong attempts; the code is void
    NONE = "none"  # no code was requested (or it was used up)


def hash_code(secret: bytes, handle: str, purpose: str, code: str) -> str:
    message = f"{purpose}\x00{handle}\x00{code}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def issue(
    secret: bytes,
    handle: str,
    purpose: str,
    code: str,
    now_ms: int,
    ttl_ms: int = CODE_TTL_MS,
    attempts: int = CODE_ATTEMPTS,
) -> PendingCode:
    """The record to store for a freshly sent ``code``; it replaces any earlier one."""
    return PendingCode(handle, purpose, hash_code(secret, handle, purpose, code), now_ms + ttl_ms, attempts)


def check(pending: PendingCode | None, secret: bytes, code: str, now_ms: int) -> tuple[Verdict, PendingCode | None]:
    """Judge ``code`` against ``pending``; return the verdict and the record to keep.

    The record to keep is ``None`` when the code is used up (accepted, expired or
    exhausted), so a code can never be accepted twice.
    """
    if pending is None:
        return Verdict.NONE, None
    if now_ms >= pending.expires_at_ms:
        return Verdict.EXPIRED, None
    if pending.attempts_left <= 0:
        return Verdict.EXHAUSTED, None
    given = hash_code(secret, pending.handle, pending.purpose, code.strip())
    if hmac.compare_digest(given, pending.code_hash):
        return Verdict.ACCEPTED, None
    left = pending.attempts_left - 1
    if left <= 0:
        return Verdict.EXHAUSTED, None
    return Verdict.WRONG, replace(pending, attempts_left=left)
