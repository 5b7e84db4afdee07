"""Routing between Parley and SMS, and the fallback window, as decision tables.

Everything that decides whether a message goes over Parley, by SMS now, or by SMS after
its fallback window lives here; ``docs/routing.md`` is this module written as tables.
Pure: ``now`` and ids are passed in. The server's SMS service and the store apply the
results (the store applies :func:`claim` inside its own transaction, so "exactly once"
is one atomic compare-and-set).

The life of a fallback watch (one per message and recipient account)::

    send committed ──▶ WAITING ──ack from any recipient device──▶ (gone: delivered)
                          │ deadline passed
                          ▼
                         DUE  ── sender's devices are told (a "fallback" envelope)
                          │ a sender device submits the SMS text: claim() == QUEUED
                          ▼
                 (gone: an SMS outbox item now carries the message)

And of an SMS outbox item::

    PENDING ──gateway takes it──▶ SENT ──report: delivered──▶ DELIVERED
       │  └─gateway busy: retry with backoff (attempts < MAX)      └─report: failed──▶ FAILED
       └──rejected, or out of attempts / too old──▶ FAILED

The text of an outbox item is kept only while it is PENDING: it is cleared when the item
leaves that state, so no SMS plaintext stays at rest once the gateway has it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

import phonenumbers

DEFAULT_WINDOW_S: Final = 30
MAX_WINDOW_S: Final = 7 * 86_400
MAX_ATTEMPTS: Final = 12
FIRST_BACKOFF_MS: Final = 1_000
MAX_BACKOFF_MS: Final = 5 * 60_000
MAX_PENDING_MS: Final = 24 * 3_600_000  # an SMS not taken by the gateway within a day fails

# Number types a text can reach. Fixed lines, premium and shared-cost numbers cannot.
_SMS_TYPES: Final = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    phonenumbers.PhoneNumberType.VOIP,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
}


def sms_capable(number: str) -> bool:
    """Can an E.164 ``number`` receive SMS, as far as its numbering plan tells?"""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) in _SMS_TYPES


# --- where a message to one recipient goes ---------------------------------------------


class Route(enum.Enum):
    PARLEY = "parley"  # over Parley, with a fallback watch if the handle is a number
    SMS = "sms"  # by SMS straight away
    NOT_SMS_CAPABLE = "not_sms_capable"  # refused: a number that cannot receive SMS
    UNREACHABLE = "unreachable"  # refused: not on Parley and not a phone number


def route(on_parley: bool, is_phone: bool, capable: bool) -> Route:
    if on_parley:
        return Route.PARLEY
    if not is_phone:
        return Route.UNREACHABLE
    return Route.SMS if capable else Route.NOT_SMS_CAPABLE


# --- fallback watches -------------------------------------------------------------------


class WatchState(enum.Enum):
    WAITING = "waiting"
    DUE = "due"  # the deadline passed and the sender's devices were told


@dataclass(frozen=True)
class FallbackKey:
    sender_account: str
    message_id: str
    recipient_account: str


@dataclass(frozen=True)
class Fallback:
    sender_account: str
    message_id: str
    recipient_account: str
    recipient_handle: str  # the tel: handle the sender addressed
    deadline_ms: int
    state: WatchState = WatchState.WAITING

    @property
    def key(self) -> FallbackKey:
        return FallbackKey(self.sender_account, self.message_id, self.recipient_account)


def window_ms(requested_s: int | None) -> int:
    """The fallback window of a send: the sender's choice, or the default."""
    seconds = DEFAULT_WINDOW_S if requested_s is None else requested_s
    return max(0, min(seconds, MAX_WINDOW_S)) * 1000


def watches_for_send(
    sender_account: str,
    message_id: str,
    recipients: Iterable[tuple[str, str]],
    now_ms: int,
    requested_s: int | None,
    kind: str = "message",
) -> list[Fallback]:
    """The watches a committed send starts: one per other account reached by phone number.
    Only a ``message`` starts any: device-to-device ``control`` traffic (a resend request,
    a read receipt) has no text to send as SMS, and no ack of it would settle a watch.

    ``recipients`` are (normalised handle, account id) pairs. A window of 0 means
    "Parley only". Notes to self and e-mail handles get no watch: there is no SMS to fall
    back to.
    """
    window = window_ms(requested_s)
    if window == 0 or kind != "message":
        return []
    watches: dict[str, Fallback] = {}
    for handle, account in recipients:
        if account == sender_account or not handle.startswith("tel:") or account in watches:
            continue
        watches[account] = Fallback(sender_account, message_id, account, handle, now_ms + window)
    return list(watches.values())


def is_due(watch: Fallback, now_ms: int) -> bool:
    return watch.state is WatchState.WAITING and watch.deadline_ms <= now_ms


# --- claiming the SMS: exactly once per message and recipient ---------------------------


class Claim(enum.Enum):
    QUEUED = "queued"  # this submit puts the SMS in the outbox
    DUPLICATE = "duplicate"  # the SMS for this message and number is already in the outbox
    NO_FALLBACK = "no_fallback"  # nothing to fall back for: delivered over Parley, or never watched
    NOT_DUE = "not_due"  # the window is still open


def claim(already_queued: bool, fallback: bool, watch: Fallback | None, now_ms: int) -> Claim:
    """Decide one SMS submit. ``fallback``: the recipient is on Parley (else direct SMS).

    | already in outbox | recipient on Parley | watch                  | claim       |
    | yes               | any                 | any                    | DUPLICATE   |
    | no                | no                  | any                    | QUEUED      |
    | no                | yes                 | none                   | NO_FALLBACK |
    | no                | yes                 | deadline in the future | NOT_DUE     |
    | no                | yes                 | deadline passed        | QUEUED      |
    """
    if already_queued:
        return Claim.DUPLICATE
    if not fallback:
        return Claim.QUEUED
    if watch is None:
        return Claim.NO_FALLBACK
    if watch.deadline_ms > now_ms:
        return Claim.NOT_DUE
    return Claim.QUEUED


# --- the SMS outbox ---------------------------------------------------------------------


class SmsState(enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class OutboxItem:
    sms_id: str
    sender_account: str
    message_id: str
    sender_number: str  # E.164: the SMS goes out from the sender's own number
    to_number: str  # E.164
    text: str  # kept only while PENDING
    state: SmsState
    created_at_ms: int
    next_attempt_ms: int
    attempts: int = 0
    carrier_ref: str = ""
    error: str = ""


class Attempt(enum.Enum):
    ACCEPTED = "accepted"  # the gateway took it
    BUSY = "busy"  # temporary: not connected, throttled, timed out
    REJECTED = "rejected"  # permanent: the carrier refused this SMS


def backoff_ms(attempts: int) -> int:
    """Delay before attempt ``attempts + 1``: 1 s, 2 s, 4 s, ... up to 5 minutes."""
    return int(min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** max(0, attempts - 1)))


def after_attempt(
    item: OutboxItem, outcome: Attempt, now_ms: int, carrier_ref: str = "", error: str = ""
) -> OutboxItem:
    """The item after one hand-over to the gateway."""
    if item.state is not SmsState.PENDING:
        return item
    attempts = item.attempts + 1
    if outcome is Attempt.ACCEPTED:
        return replace(item, state=SmsState.SENT, text="", attempts=attempts, carrier_ref=carrier_ref, error="")
    if outcome is Attempt.REJECTED:
        return replace(item, state=SmsState.FAILED, text="", attempts=attempts, error=error or "rejected")
    if attempts >= MAX_ATTEMPTS or now_ms - item.created_at_ms >= MAX_PENDING_MS:
        return replace(item, state=SmsState.FAILED, text="", attempts=attempts, error=error or "gateway unavailable")
    return replace(item, attempts=attempts, next_attempt_ms=now_ms + backoff_ms(attempts), error=error)


def after_report(item: OutboxItem, delivered: bool, error: str = "") -> OutboxItem:
    """The item after a delivery report. Reports for final items change nothing."""
    if item.state is not SmsState.SENT:
        return item
    if delivered:
        return replace(item, state=SmsState.DELIVERED)
    return replace(item, state=SmsState.FAILED, error=error or "not delivered")
