"""The self-checks as pure functions: facts in, findings out; no server, no clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parley.client import checks
from parley.client.checks import Facts, Status
from parley.client.receipts import receipts_allowed
from parley.client.watch import BACKOFF_MAX_S, jittered, next_backoff

NOW = 1_800_000_000_000
GOOD = Facts(
    now_ms=NOW,
    profile="alice",
    server="http://127.0.0.1:8080",
    handle="tel:+14155550100",
    device_id="d1",
    credential_ok=True,
    own_devices=("d1", "d2"),
    seen_own_devices=("d1", "d2"),
    one_time_keys=40,
    fallback_key=True,
    queued_on_server=0,
    clock_skew_ms=120,
)


def by_check(facts: Facts) -> dict[str, checks.Finding]:
    return {f.check: f for f in checks.run_checks(facts)}


def test_a_healthy_device_is_all_ok_and_exits_zero() -> None:
    findings = checks.run_checks(GOOD)
    assert [f.check for f in findings] == [c.__name__ for c in checks.CHECKS]
    assert all(f.status is Status.OK and not f.repair for f in findings), findings
    assert checks.exit_status(findings) == 0


@pytest.mark.parametrize(
    ("change", "check", "repair"),
    [
        ({"own_devices": ("d1", "d2", "d3")}, "devices", "refresh_devices"),
        ({"one_time_keys": 0}, "keys", "replenish_keys"),
        ({"fallback_key": False}, "keys", "replenish_keys"),
        ({"damaged_sessions": 1}, "sessions", "drop_damaged_sessions"),
        ({"undecryptable": 2}, "sessions", "heal"),
        ({"outbox": 1}, "outbox", "flush_outbox"),
        ({"queued_on_server": 5}, "mailbox", "sync"),
        ({"unsynced_reads": 3}, "reads", "flush_reads"),
        ({"clock_skew_ms": 600_000}, "clock", "correct_clock"),
        ({"lease_expires_ms": NOW + 3_600_000}, "registration", "renew_lease"),
    ],
)
def test_what_the_device_repairs_by_itself(change: dict[str, object], check: str, repair: str) -> None:
    finding = by_check(replace(GOOD, **change))[check]  # type: ignore[arg-type]
    assert finding.repair == repair and finding.status is Status.OK
    assert checks.exit_status(checks.run_checks(replace(GOOD, **change))) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "check", "command"),
    [
        (
            {"credential_ok": False},
            "registration",
            "parley register --server http://127.0.0.1:8080 --phone +14155550100",
        ),
        ({"own_devices": ("d2",), "seen_own_devices": ("d2",)}, "registration", "parley register"),
        ({"lease_expires_ms": NOW - 1}, "registration", "parley register"),
        ({"key_store_opens": False}, "keys", "parley register"),
        ({"held": ("tel:+14155550111",)}, "outbox", "parley verify --profile alice +14155550111"),
        ({"clock_skew_ms": -7_200_000}, "clock", "timedatectl set-ntp true"),
        ({"reachable": False, "credential_ok": None, "own_devices": None}, "connection", "parley doctor"),
    ],
)
def test_what_needs_the_person_names_one_command(change: dict[str, object], check: str, command: str) -> None:
    findings = checks.run_checks(replace(GOOD, **change))  # type: ignore[arg-type]
    finding = {f.check: f for f in findings}[check]
    assert finding.status is Status.NEEDS_YOU and command in finding.command
    assert checks.exit_status(findings) == 1


def test_clock_correction_ignores_noise_and_follows_real_skew() -> None:
    assert checks.clock_correction(0, 2_000) is None  # network delay: no correction
    assert checks.clock_correction(0, 600_000) == 600_000  # ten minutes: use the server's time
    assert checks.clock_correction(600_000, 601_000) is None  # already corrected
    assert checks.clock_correction(600_000, 500) == 0  # the clock was fixed: drop the correction
    assert checks.skew(sent_ms=1_000, received_ms=1_200, server_ms=601_100) == 600_000
    corrected = by_check(replace(GOOD, clock_skew_ms=600_000, clock_offset_ms=600_000))["clock"]
    assert corrected.status is Status.OK and not corrected.repair and "Parley uses the server's" in corrected.detail


def test_backoff_doubles_to_a_cap_with_jitter() -> None:
    delays = [0.5]
    while delays[-1] < BACKOFF_MAX_S:
        delays.append(next_backoff(delays[-1]))
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and delays[-1] == BACKOFF_MAX_S
    assert jittered(4.0, 0.0) == 2.0 and jittered(4.0, 0.999) < 6.0


def test_read_receipt_setting_per_person_and_conversation() -> None:
    assert receipts_allowed(None, None)  # on by default
    assert not receipts_allowed("off", None)
    assert receipts_allowed("off", "on")  # the conversation's override wins
    assert not receipts_allowed("on", "off")
