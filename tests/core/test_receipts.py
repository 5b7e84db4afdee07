"""Receipts: one per sender account for each ack, never for one's own account."""

from __future__ import annotations

from parley.core.receipts import AckedEnvelope, ReceiptPlan, plan_receipts

BOB = "bob"  # the account acking


def message(message_id: str, sender: str) -> AckedEnvelope:
    return AckedEnvelope(message_id=message_id, kind="message", sender_account=sender)


def test_nothing_acked_plans_nothing() -> None:
    assert plan_receipts([], BOB) == []


def test_one_receipt_per_sender_account_lists_all_its_messages() -> None:
    acked = [message("m1", "alice"), message("m2", "carol"), message("m3", "alice")]
    assert plan_receipts(acked, BOB) == [
        ReceiptPlan("alice", ["m1", "m3"]),
        ReceiptPlan("carol", ["m2"]),
    ]


def test_own_accounts_sent_copies_produce_no_receipt() -> None:
    acked = [message("m1", BOB), message("m2", "alice"), message("m3", BOB)]
    assert plan_receipts(acked, BOB) == [ReceiptPlan("alice", ["m2"])]


def test_receipts_produce_no_receipt() -> None:
    acked = [AckedEnvelope("m1", "delivered", "alice"), message("m2", "alice")]
    assert plan_receipts(acked, BOB) == [ReceiptPlan("alice", ["m2"])]


def test_only_own_copies_and_receipts_plan_nothing() -> None:
    acked = [message("m1", BOB), AckedEnvelope("m2", "delivered", "alice")]
    assert plan_receipts(acked, BOB) == []


def test_message_ids_are_deduplicated_in_first_seen_order() -> None:
    acked = [message("m2", "alice"), message("m1", "alice"), message("m2", "alice"), message("m1", "alice")]
    assert plan_receipts(acked, BOB) == [ReceiptPlan("alice", ["m2", "m1"])]


def test_same_message_id_from_different_senders_is_kept_per_sender() -> None:
    acked = [message("m1", "alice"), message("m1", "carol")]
    assert plan_receipts(acked, BOB) == [ReceiptPlan("alice", ["m1"]), ReceiptPlan("carol", ["m1"])]
