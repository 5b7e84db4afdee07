"""The rules of leaving Parley, without I/O: the liveness rule, the backlog plan, and
whether a "left" record is believed."""

from __future__ import annotations

import vodozemac

from parley.client.leaving import check_left
from parley.core.leaving import (
    Left,
    LeftCheck,
    Overdue,
    Queued,
    Reproof,
    judge_left,
    lapse_plan,
    renewal_due,
    reproof_step,
    reroute,
    signed_bytes,
    unresponsive,
)
from parley.wire import LeftRecord

HOUR = 3_600_000


def test_two_senders_overdue_for_the_liveness_time_stop_advertising() -> None:
    notes = [Overdue("bob", "alice", "m1", 0), Overdue("bob", "dave", "m2", 10)]
    assert unresponsive(notes, HOUR + 10, HOUR) == ["bob"]
    assert unresponsive(notes, HOUR + 9, HOUR) == []  # dave's is not overdue long enough yet


def test_one_sender_alone_never_stops_advertising() -> None:
    notes = [Overdue("bob", "alice", f"m{i}", 0) for i in range(50)]
    assert unresponsive(notes, 10 * HOUR, HOUR) == []


def test_accounts_are_judged_apart() -> None:
    notes = [Overdue("bob", "alice", "m1", 0), Overdue("carol", "dave", "m2", 0), Overdue("carol", "erin", "m3", 0)]
    assert unresponsive(notes, HOUR, HOUR) == ["carol"]
    assert unresponsive(notes, HOUR, HOUR, min_senders=1) == ["bob", "carol"]


def test_backlog_plan_tells_each_sender_once_per_message() -> None:
    backlog = [
        Queued("alice", "m1", "message"),
        Queued("alice", "m1", "message"),  # the same message on a second device
        Queued("dave", "m2", "message"),
        Queued("bob", "m3", "message"),  # the leaving account's own copy
        Queued("alice", "r1", "delivered"),  # a receipt: nothing to re-route
        Queued("", "sms.1", "sms"),  # inbound SMS reached the handset already
    ]
    assert reroute(backlog, "bob") == {"alice": ["m1"], "dave": ["m2"]}
    assert reroute([], "bob") == {}


def test_left_record_decision_table() -> None:
    assert judge_left(False, "tel:+1", "tel:+1", 10, 0) is LeftCheck.FORGED
    assert judge_left(True, "tel:+2", "tel:+1", 10, 0) is LeftCheck.WRONG_HANDLE
    assert judge_left(True, "tel:+1", "tel:+1", 10, 20) is LeftCheck.STALE
    assert judge_left(True, "tel:+1", "tel:+1", 10, 10) is LeftCheck.VALID


def signed(account: vodozemac.Account, left: Left) -> LeftRecord:
    signature = account.sign(signed_bytes(left)).to_base64()
    return LeftRecord(left.handle, left.left_at_ms, left.reason, signature, left.moved_to)


def test_client_checks_the_signature_against_the_pinned_key() -> None:
    server, forger = vodozemac.Account(), vodozemac.Account()
    key = server.ed25519_key.to_base64()
    left = Left("tel:+14155550111", 1000, "deregistered", "tel:+14155550199")
    assert check_left(signed(server, left), left.handle, key, 0) is LeftCheck.VALID
    assert check_left(signed(forger, left), left.handle, key, 0) is LeftCheck.FORGED
    assert check_left(signed(server, left), left.handle, "", 0) is LeftCheck.FORGED  # no pinned key
    tampered = LeftRecord(left.handle, left.left_at_ms, left.reason, signed(server, left).signature, "tel:+1999")
    assert check_left(tampered, left.handle, key, 0) is LeftCheck.FORGED  # "moved to" changed
    assert check_left(signed(server, left), "tel:+14155550122", key, 0) is LeftCheck.WRONG_HANDLE
    assert check_left(signed(server, left), left.handle, key, 2000) is LeftCheck.STALE


def test_a_running_client_renews_once_half_its_lease_is_used() -> None:
    assert not renewal_due(lease_until_ms=1000, now_ms=400, lease_ms=1000)
    assert renewal_due(lease_until_ms=1000, now_ms=501, lease_ms=1000)
    assert renewal_due(lease_until_ms=0, now_ms=0, lease_ms=1000)  # no lease yet: give it one


def test_lapse_plan_leaves_only_when_every_device_lapsed() -> None:
    devices = {"bob": ["b1", "b2"], "carol": ["c1"]}
    assert lapse_plan([("b1", "bob"), ("c1", "carol")], devices) == (["carol"], ["b1"])
    assert lapse_plan([("b1", "bob"), ("b2", "bob")], devices) == (["bob"], [])
    assert lapse_plan([], devices) == ([], [])


def test_reproof_step_table() -> None:
    assert reproof_step(None, 100) is Reproof.SEND
    assert reproof_step(200, 100) is Reproof.WAIT
    assert reproof_step(100, 100) is Reproof.FAILED
