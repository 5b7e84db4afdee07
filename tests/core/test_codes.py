"""Verification codes: one code, one handle, one purpose, used at most once."""

from __future__ import annotations

from dataclasses import replace

from parley.core.codes import (
    CODE_ATTEMPTS,
    CODE_TTL_MS,
    PendingCode,
    Verdict,
    check,
    hash_code,
    issue,
)

SECRET = b"server-secret-for-tests-32-bytes"
HANDLE = "tel:+14155550100"
NOW = 1_700_000_000_000
CODE = "123456"


def pending(code: str = CODE, purpose: str = "register", handle: str = HANDLE) -> PendingCode:
    return issue(SECRET, handle, purpose, code, NOW)


def test_issue_records_expiry_attempts_and_only_a_hash() -> None:
    record = pending()
    assert record.handle == HANDLE
    assert record.purpose == "register"
    assert record.expires_at_ms == NOW + CODE_TTL_MS
    assert record.attempts_left == CODE_ATTEMPTS == 5
    assert CODE not in repr(record)
    assert record.code_hash == hash_code(SECRET, HANDLE, "register", CODE)


def test_issue_takes_a_custom_ttl_and_attempts() -> None:
    record = issue(SECRET, HANDLE, "register", CODE, NOW, ttl_ms=1000, attempts=2)
    assert record.expires_at_ms == NOW + 1000
    assert record.attempts_left == 2


def test_right_code_is_accepted_and_used_up() -> None:
    assert check(pending(), SECRET, CODE, NOW + 1) == (Verdict.ACCEPTED, None)


def test_surrounding_whitespace_in_the_guess_is_ignored() -> None:
    verdict, _ = check(pending(), SECRET, f"  {CODE}\n", NOW)
    assert verdict is Verdict.ACCEPTED


def test_wrong_code_spends_one_attempt() -> None:
    record = pending()
    for expected_left in range(CODE_ATTEMPTS - 1, 0, -1):
        verdict, kept = check(record, SECRET, "000000", NOW)
        assert verdict is Verdict.WRONG
        assert kept is not None
        assert kept.attempts_left == expected_left
        assert kept.code_hash == record.code_hash
        assert kept.expires_at_ms == record.expires_at_ms
        record = kept


def test_fifth_wrong_guess_exhausts_the_code() -> None:
    record: PendingCode | None = pending()
    verdicts = []
    for _ in range(CODE_ATTEMPTS):
        verdict, record = check(record, SECRET, "000000", NOW)
        verdicts.append(verdict)
    assert verdicts == [Verdict.WRONG] * (CODE_ATTEMPTS - 1) + [Verdict.EXHAUSTED]
    assert record is None


def test_right_code_on_the_last_attempt_is_still_accepted() -> None:
    record: PendingCode | None = pending()
    for _ in range(CODE_ATTEMPTS - 1):
        _, record = check(record, SECRET, "000000", NOW)
    assert check(record, SECRET, CODE, NOW) == (Verdict.ACCEPTED, None)


def test_record_with_no_attempts_left_refuses_even_the_right_code() -> None:
    record = replace(pending(), attempts_left=0)
    assert check(record, SECRET, CODE, NOW) == (Verdict.EXHAUSTED, None)


def test_code_expires_at_its_deadline() -> None:
    record = pending()
    assert check(record, SECRET, CODE, record.expires_at_ms - 1)[0] is Verdict.ACCEPTED
    assert check(record, SECRET, CODE, record.expires_at_ms) == (Verdict.EXPIRED, None)
    assert check(record, SECRET, "000000", record.expires_at_ms + 1) == (Verdict.EXPIRED, None)


def test_no_pending_code_gives_none() -> None:
    assert check(None, SECRET, CODE, NOW) == (Verdict.NONE, None)


def test_used_code_cannot_be_accepted_twice() -> None:
    verdict, kept = check(pending(), SECRET, CODE, NOW)
    assert verdict is Verdict.ACCEPTED
    assert check(kept, SECRET, CODE, NOW) == (Verdict.NONE, None)


def test_code_is_bound_to_its_purpose() -> None:
    issued_for_register = pending(purpose="register")
    presented_as_deregister = replace(issued_for_register, purpose="deregister")
    assert check(presented_as_deregister, SECRET, CODE, NOW)[0] is Verdict.WRONG


def test_code_is_bound_to_its_handle() -> None:
    issued_for_alice = pending(handle=HANDLE)
    presented_for_bob = replace(issued_for_alice, handle="tel:+14155550199")
    assert check(presented_for_bob, SECRET, CODE, NOW)[0] is Verdict.WRONG


def test_code_is_bound_to_the_server_secret() -> None:
    assert check(pending(), b"another-secret", CODE, NOW)[0] is Verdict.WRONG


def test_hash_differs_by_purpose_handle_code_and_secret() -> None:
    base = hash_code(SECRET, HANDLE, "register", CODE)
    others = {
        hash_code(SECRET, HANDLE, "deregister", CODE),
        hash_code(SECRET, "tel:+14155550199", "register", CODE),
        hash_code(SECRET, HANDLE, "register", "123457"),
        hash_code(b"another-secret", HANDLE, "register", CODE),
    }
    assert base not in others
    assert len(others) == 4
