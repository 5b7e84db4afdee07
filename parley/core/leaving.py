"""Leaving Parley: when a handle stops being advertised, and what happens to its backlog.

Every way out ends in one act, "the handle leaves": its devices are unlinked, the
directory answers lookups with a signed "left" record instead of devices, and what was
still queued for those devices is re-routed by SMS. This module decides; the server's
:mod:`parley.server.leaving` applies. Pure: ``now`` is passed in. ``docs/routing.md``
has these rules as tables.

Ways out, and what triggers the leave::

    registration lease: every device of the account let its lease lapse            ──▶ leave
    re-proof: a silent code SMS to the number went unanswered in time              ──▶ leave
    deregistration (web page or CLI)  code sent by SMS to the number, confirmed ──▶ leave
    carrier event port-out/sim-change/recycle (authenticated)                     ──▶ leave
    delivery liveness: ≥ MIN_SENDERS senders' messages overdue for LIVENESS       ──▶ leave

A recycled number's new owner inherits nothing: the leave releases the handle from its
account, so the next registration of the number makes a fresh account.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

DEFAULT_LIVENESS_S: Final = 3_600
DEFAULT_LEASE_S: Final = 14 * 86_400
DEFAULT_REPROOF_S: Final = 30 * 86_400  # how often a phone handle proves it still holds the SIM
DEFAULT_REPROOF_ANSWER_S: Final = 600  # how long the device holding the SIM has to answer
REPROOF = "reproof"  # the code purpose of a re-proof
REPROOF_PREFIX: Final = "Parley check "  # a silent SMS: the device holding the SIM answers it
MIN_SENDERS: Final = 2
DEREGISTER = "deregister"  # the code purpose of deregistration without a device


class Reason(enum.Enum):
    DEREGISTERED = "deregistered"
    PORTED_OUT = "port-out"
    SIM_CHANGED = "sim-change"
    RECYCLED = "recycle"
    UNRESPONSIVE = "unresponsive"  # the liveness rule
    LAPSED = "lapsed"  # every device's registration lease lapsed
    REPROOF_FAILED = "reproof-failed"  # the number no longer answers its silent code


EVENT_REASONS: Final = {
    "port-out": Reason.PORTED_OUT,
    "sim-change": Reason.SIM_CHANGED,
    "recycle": Reason.RECYCLED,
}


# --- registration leases ---------------------------------------------------------------


def renewal_due(lease_until_ms: int, now_ms: int, lease_ms: int) -> bool:
    """Renew a running device's lease once half of it is used (so at most twice a lease)."""
    return lease_until_ms - now_ms < lease_ms // 2


def lapse_plan(lapsed: Iterable[tuple[str, str]], devices_of: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Given lapsed (device id, account id) pairs and each such account's devices, return
    (accounts to leave: every device lapsed, lone devices to unlink: the account keeps
    others, which hold their own copies of everything queued).

    | the account's devices | verdict                                 |
    | all lapsed            | the account leaves (backlog re-routed)  |
    | some still leased     | only the lapsed devices are unlinked    |
    """
    by_account: dict[str, set[str]] = {}
    for device_id, account_id in lapsed:
        by_account.setdefault(account_id, set()).add(device_id)
    leave, unlink = [], []
    for account_id, gone in sorted(by_account.items()):
        if gone >= set(devices_of.get(account_id, [])):
            leave.append(account_id)
        else:
            unlink.extend(sorted(gone))
    return leave, unlink


# --- re-proof of a phone handle ----------------------------------------------------------


class Reproof(enum.Enum):
    SEND = "send"  # send a fresh silent code
    WAIT = "wait"  # a code is out and may still be answered
    FAILED = "failed"  # the code went unanswered: the handle leaves


def reproof_step(pending_expires_at_ms: int | None, now_ms: int) -> Reproof:
    """A phone handle whose last proof is older than the re-proof period:

    | silent code out | its answer window | step   |
    | no              | —                 | SEND   |
    | yes             | open              | WAIT   |
    | yes             | passed            | FAILED |
    """
    if pending_expires_at_ms is None:
        return Reproof.SEND
    return Reproof.WAIT if now_ms < pending_expires_at_ms else Reproof.FAILED


# --- delivery liveness ------------------------------------------------------------------


@dataclass(frozen=True)
class Overdue:
    """A message a recipient account's devices have not acked past its fallback window.
    ``since_ms`` is when its window ended. Senders are accounts: two people, not two
    devices of one person, must see the recipient go silent."""

    recipient_account: str
    sender_account: str
    message_id: str
    since_ms: int


def unresponsive(
    overdue: Iterable[Overdue], now_ms: int, liveness_ms: int, min_senders: int = MIN_SENDERS
) -> list[str]:
    """Accounts to stop advertising: those with messages from at least ``min_senders``
    senders, each unacked for at least ``liveness_ms`` after its window ended.

    | senders overdue ≥ liveness | verdict          |
    | < min_senders              | keep advertising |
    | ≥ min_senders              | stop (leave)     |
    """
    senders: dict[str, set[str]] = {}
    for item in overdue:
        if now_ms - item.since_ms >= liveness_ms:
            senders.setdefault(item.recipient_account, set()).add(item.sender_account)
    return sorted(account for account, who in senders.items() if len(who) >= min_senders)


# --- the backlog ------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """A message envelope still queued for a leaving account's devices."""

    sender_account: str
    message_id: str
    kind: str


def reroute(backlog: Iterable[Queued], leaving_account: str) -> dict[str, list[str]]:
    """Which senders to tell about which messages: {sender account: [message ids]}.

    Only messages from other Parley accounts are re-routed: the account's own copies
    have no one to reach, and inbound SMS reached the number's handset already. Each
    message once, however many of the account's devices held it."""
    plan: dict[str, list[str]] = {}
    for item in backlog:
        if item.kind != "message" or not item.sender_account or item.sender_account == leaving_account:
            continue
        ids = plan.setdefault(item.sender_account, [])
        if item.message_id not in ids:
            ids.append(item.message_id)
    return plan


# --- signed "left" records --------------------------------------------------------------


@dataclass(frozen=True)
class Left:
    handle: str
    left_at_ms: int
    reason: str
    moved_to: str = ""
    signature: str = ""  # Ed25519 over signed_bytes(), base64


@dataclass(frozen=True)
class Departure:
    """What a leave removed: the account (None if no account owned the handle), its
    unlinked devices, and the messages still queued for them."""

    account_id: str | None
    device_ids: list[str]
    backlog: list[Queued]


def signed_bytes(left: Left) -> bytes:
    """The exact bytes a "left" record's signature covers (a domain-separated line)."""
    return f"parley-left-v1\n{left.handle}\n{left.left_at_ms}\n{left.reason}\n{left.moved_to}".encode()


class LeftCheck(enum.Enum):
    VALID = "valid"
    FORGED = "forged"  # the signature does not verify under the server key
    WRONG_HANDLE = "wrong_handle"  # a valid record, for another handle
    STALE = "stale"  # older than a registration the client saw afterwards


def judge_left(
    signature_ok: bool, record_handle: str, asked: str, left_at_ms: int, seen_on_parley_ms: int
) -> LeftCheck:
    """Should a client believe a "left" record for handle ``asked``?

    | signature | handle  | left before we last saw it on Parley | verdict      |
    | bad       | any     | any                                  | FORGED       |
    | good      | other   | any                                  | WRONG_HANDLE |
    | good      | same    | yes                                  | STALE        |
    | good      | same    | no                                   | VALID        |
    """
    if not signature_ok:
        return LeftCheck.FORGED
    if record_handle != asked:
        return LeftCheck.WRONG_HANDLE
    if left_at_ms < seen_on_parley_ms:
        return LeftCheck.STALE
    return LeftCheck.VALID
