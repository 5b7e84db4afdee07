"""Delivery receipts: what the server writes when a recipient device acks.

"Delivered" means a device of the recipient has the message. Acks arrive in batches (a
device acks everything up to a seq), so the receipts for one ack are coalesced: one
receipt per sender account, listing every message of theirs that the ack covered.
A device acking its own account's "sent" copies, or a receipt, produces nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class AckedEnvelope:
    message_id: str
    kind: str
    sender_account: str


@dataclass(frozen=True)
class ReceiptPlan:
    sender_account: str  # whose devices get the receipt
    message_ids: list[str]


def plan_receipts(acked: Iterable[AckedEnvelope], acking_account: str) -> list[ReceiptPlan]:
    # dicts as ordered sets: a message reaches several devices of one recipient.
    by_sender: dict[str, dict[str, None]] = {}
    for envelope in acked:
        if envelope.kind != "message" or envelope.sender_account == acking_account:
            continue
        by_sender.setdefault(envelope.sender_account, {})[envelope.message_id] = None
    return [ReceiptPlan(account, list(ids)) for account, ids in by_sender.items()]
