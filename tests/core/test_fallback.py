"""The routing and fallback decision tables (docs/routing.md), without I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parley.core import fallback as fb


@pytest.mark.parametrize(
    ("on_parley", "is_phone", "capable", "route"),
    [
        (True, True, True, fb.Route.PARLEY),
        (True, False, False, fb.Route.PARLEY),
        (False, True, True, fb.Route.SMS),
        (False, True, False, fb.Route.NOT_SMS_CAPABLE),
        (False, False, False, fb.Route.UNREACHABLE),
    ],
)
def test_route(on_parley: bool, is_phone: bool, capable: bool, route: fb.Route) -> None:
    assert fb.route(on_parley, is_phone, capable) is route


def test_sms_capable_numbers() -> None:
    assert fb.sms_capable("+14155550100")  # fixed line or mobile
    assert not fb.sms_capable("+442079460000")  # a London fixed line
    assert not fb.sms_capable("not a number")


def test_watches_one_per_other_account_by_phone_default_window() -> None:
    recipients = [("tel:+1", "bob"), ("tel:+1b", "bob"), ("mailto:a@b.c", "dan"), ("tel:+2", "alice")]
    watches = fb.watches_for_send("alice", "m1", recipients, 1000, None)
    assert watches == [fb.Fallback("alice", "m1", "bob", "tel:+1", 1000 + 30_000)]
    assert fb.watches_for_send("alice", "m1", recipients, 1000, 0) == []
    # Control traffic (resend requests, read receipts) has no text to send as SMS.
    assert fb.watches_for_send("alice", "m1", recipients, 1000, None, "control") == []
    assert fb.watches_for_send("alice", "m1", recipients, 1000, 2)[0].deadline_ms == 3000


def test_due_only_when_waiting_and_past_deadline() -> None:
    watch = fb.Fallback("a", "m", "b", "tel:+1", 5000)
    assert not fb.is_due(watch, 4999)
    assert fb.is_due(watch, 5000)
    assert not fb.is_due(replace(watch, state=fb.WatchState.DUE), 9999)


@pytest.mark.parametrize(
    ("queued", "fallback", "deadline", "claim"),
    [
        (True, True, 0, fb.Claim.DUPLICATE),
        (True, False, None, fb.Claim.DUPLICATE),
        (False, False, None, fb.Claim.QUEUED),
        (False, True, None, fb.Claim.NO_FALLBACK),
        (False, True, 2000, fb.Claim.NOT_DUE),
        (False, True, 1000, fb.Claim.QUEUED),
    ],
)
def test_claim_table(queued: bool, fallback: bool, deadline: int | None, claim: fb.Claim) -> None:
    watch = fb.Fallback("a", "m", "b", "tel:+1", deadline) if deadline is not None else None
    assert fb.claim(queued, fallback, watch, 1000) is claim


def item(**changes: object) -> fb.OutboxItem:
    base = fb.OutboxItem("s1", "a", "m", "+1", "+2", "hello", fb.SmsState.PENDING, 0, 0)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_accepted_clears_the_text() -> None:
    sent = fb.after_attempt(item(), fb.Attempt.ACCEPTED, 10, carrier_ref="r1")
    assert (sent.state, sent.text, sent.carrier_ref, sent.attempts) == (fb.SmsState.SENT, "", "r1", 1)


def test_busy_backs_off_then_fails() -> None:
    current = item()
    delays = []
    for _ in range(fb.MAX_ATTEMPTS - 1):
        current = fb.after_attempt(current, fb.Attempt.BUSY, 100, error="down")
        assert current.state is fb.SmsState.PENDING and current.text == "hello"
        delays.append(current.next_attempt_ms - 100)
    assert delays[:4] == [1000, 2000, 4000, 8000] and max(delays) == fb.MAX_BACKOFF_MS
    failed = fb.after_attempt(current, fb.Attempt.BUSY, 100)
    assert (failed.state, failed.text) == (fb.SmsState.FAILED, "")


def test_rejected_fails_at_once_and_too_old_fails() -> None:
    assert fb.after_attempt(item(), fb.Attempt.REJECTED, 1).state is fb.SmsState.FAILED
    assert fb.after_attempt(item(), fb.Attempt.BUSY, fb.MAX_PENDING_MS).state is fb.SmsState.FAILED


def test_reports_move_only_sent_items() -> None:
    sent = item(state=fb.SmsState.SENT, text="")
    assert fb.after_report(sent, True).state is fb.SmsState.DELIVERED
    assert fb.after_report(sent, False).state is fb.SmsState.FAILED
    assert fb.after_report(item(), True) == item()
    delivered = item(state=fb.SmsState.DELIVERED)
    assert fb.after_report(delivered, False) == delivered
