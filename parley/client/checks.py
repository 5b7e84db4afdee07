"""The device's self-checks: small pure functions over what the device knows of itself
(:class:`Facts`, gathered by ``parley.client.doctor``) and what the server reports.

Each check returns a :class:`Finding`: ``ok``; a ``repair`` the device carries out by
itself (the doctor and the watch loop run it, log it, and report ``repaired``); or
``needs you`` with the one command that fixes it. No I/O, no clock: ``now`` is a fact.

    check          looks at                               repairs by itself        needs you when
    connection     can the server be reached               (reconnects: watch)      offline / server down
    registration   credential accepted, device listed,    lease renewal            credential revoked,
                   lease expiry (if the server reports)                            device gone, lease over
    devices        own device list vs what was seen       refresh it               -
    keys           key store opens; one-time keys left    replenish                key store broken
    sessions       damaged session pickles; messages       drop them; heal (ask     -
                   that did not decrypt                    for a resend)
    outbox         messages written but not confirmed     send them again          held by a key change
    mailbox        envelopes queued on the server         fetch them               -
    reads          reads not yet told to other devices    send them                -
    clock          skew against the server's clock        use the server's time    skew over an hour
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ONE_TIME_KEYS_LOW = 10  # as parley.client.olm: replenish below this
CLOCK_TOLERANCE_MS = 10_000  # skew within this is noise (network delay)
CLOCK_BROKEN_MS = 3_600_000  # beyond this, TLS and the person's own sense of time break
LEASE_RENEW_MS = 24 * 3_600_000  # renew a lease with less than this left
OUTBOX_STUCK_MS = 0  # any message still "sending" when the doctor looks is stuck


NOT_CHECKED = "not checked: the server did not answer for this device"


class Status(enum.Enum):
    OK = "ok"
    REPAIRED = "repaired"
    NEEDS_YOU = "needs you"


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    repair: str = ""  # the automatic repair to run ("" for none)
    command: str = ""  # for "needs you": the one command to run


@dataclass(frozen=True)
class Facts:
    now_ms: int
    profile: str
    server: str
    handle: str
    device_id: str
    reachable: bool = True
    credential_ok: bool | None = None  # None: not known (server unreachable)
    own_devices: tuple[str, ...] | None = None  # what the server lists for this account
    seen_own_devices: tuple[str, ...] = ()  # what this device saw last
    lease_expires_ms: int | None = None  # only if the server reports leases
    key_store_opens: bool = True
    one_time_keys: int | None = None
    fallback_key: bool | None = None
    damaged_sessions: int = 0
    undecryptable: int = 0
    outbox: int = 0
    held: tuple[str, ...] = ()  # conversations with held messages
    unsynced_reads: int = 0
    queued_on_server: int | None = None
    clock_skew_ms: int | None = None  # the server's clock minus this device's
    clock_offset_ms: int = 0  # the correction the device applies now


def register_command(facts: Facts) -> str:
    number = facts.handle.removeprefix("tel:")
    return f"parley register --server {facts.server} --phone {number} --profile {facts.profile}"


def connection(facts: Facts) -> Finding:
    if facts.reachable:
        return Finding("connection", Status.OK, f"{facts.server} answers")
    return Finding(
        "connection",
        Status.NEEDS_YOU,
        f"cannot reach {facts.server}: is this machine online, is the server running?"
        " (a watching device keeps retrying by itself)",
        command=f"parley doctor --profile {facts.profile}",
    )


def registration(facts: Facts) -> Finding:
    if facts.credential_ok is False:
        return Finding(
            "registration",
            Status.NEEDS_YOU,
            "the server no longer accepts this device (revoked, unlinked or expired)",
            command=register_command(facts),
        )
    if facts.own_devices is not None and facts.device_id not in facts.own_devices:
        return Finding(
            "registration",
            Status.NEEDS_YOU,
            "this device is missing from its own account's device list",
            command=register_command(facts),
        )
    if facts.lease_expires_ms is not None:
        left = facts.lease_expires_ms - facts.now_ms
        if left <= 0:
            return Finding(
                "registration", Status.NEEDS_YOU, "the registration lease ran out", command=register_command(facts)
            )
        if left < LEASE_RENEW_MS:
            return Finding("registration", Status.OK, f"lease ends in {span(left)}", repair="renew_lease")
        return Finding("registration", Status.OK, f"registered; lease ends in {span(left)}")
    if facts.credential_ok is None:
        return Finding("registration", Status.OK, NOT_CHECKED)
    return Finding("registration", Status.OK, "the server accepts this device")


def devices(facts: Facts) -> Finding:
    if facts.own_devices is None:
        return Finding("devices", Status.OK, NOT_CHECKED)
    if set(facts.own_devices) != set(facts.seen_own_devices):
        return Finding(
            "devices",
            Status.OK,
            f"own device list changed ({len(facts.own_devices)} listed, {len(facts.seen_own_devices)} known here)",
            repair="refresh_devices",
        )
    return Finding("devices", Status.OK, f"{len(facts.own_devices)} device(s) on this account, all known")


def keys(facts: Facts) -> Finding:
    if not facts.key_store_opens:
        return Finding(
            "keys",
            Status.NEEDS_YOU,
            "the key store no longer opens (key file lost or damaged): this device cannot decrypt",
            command=register_command(facts),
        )
    if facts.one_time_keys is None:
        return Finding("keys", Status.OK, "key store opens; key count not checked")
    if facts.one_time_keys < ONE_TIME_KEYS_LOW or not facts.fallback_key:
        return Finding(
            "keys", Status.OK, f"only {facts.one_time_keys} one-time key(s) left on the server", repair="replenish_keys"
        )
    return Finding("keys", Status.OK, f"key store opens; {facts.one_time_keys} one-time keys on the server")


def sessions(facts: Facts) -> Finding:
    if facts.damaged_sessions:
        return Finding(
            "sessions", Status.OK, f"{facts.damaged_sessions} session(s) no longer open", repair="drop_damaged_sessions"
        )
    if facts.undecryptable:
        return Finding("sessions", Status.OK, f"{facts.undecryptable} message(s) did not decrypt", repair="heal")
    return Finding("sessions", Status.OK, "every session opens")


def outbox(facts: Facts) -> Finding:
    if facts.outbox:
        return Finding(
            "outbox", Status.OK, f"{facts.outbox} message(s) written but not confirmed", repair="flush_outbox"
        )
    if facts.held:
        first = facts.held[0]
        return Finding(
            "outbox",
            Status.NEEDS_YOU,
            f"messages to {', '.join(facts.held)} are held: their safety number changed",
            command=f"parley verify --profile {facts.profile} {first.removeprefix('tel:')}",
        )
    return Finding("outbox", Status.OK, "nothing waiting to be sent")


def mailbox(facts: Facts) -> Finding:
    if facts.queued_on_server:
        return Finding(
            "mailbox", Status.OK, f"{facts.queued_on_server} envelope(s) waiting on the server", repair="sync"
        )
    if facts.queued_on_server is None:
        return Finding("mailbox", Status.OK, NOT_CHECKED)
    return Finding("mailbox", Status.OK, "nothing waiting on the server")


def reads(facts: Facts) -> Finding:
    if facts.unsynced_reads:
        return Finding(
            "reads",
            Status.OK,
            f"{facts.unsynced_reads} read(s) not yet told to the other devices",
            repair="flush_reads",
        )
    return Finding("reads", Status.OK, "read state in step")


def clock(facts: Facts) -> Finding:
    if facts.clock_skew_ms is None:
        return Finding("clock", Status.OK, NOT_CHECKED)
    skew = facts.clock_skew_ms
    if abs(skew) > CLOCK_BROKEN_MS:
        return Finding(
            "clock",
            Status.NEEDS_YOU,
            f"this device's clock is {describe_skew(skew)}: secure connections and codes fail",
            command="sudo timedatectl set-ntp true",
        )
    if clock_correction(facts.clock_offset_ms, skew) is not None:
        return Finding("clock", Status.OK, f"this device's clock is {describe_skew(skew)}", repair="correct_clock")
    if abs(skew) > CLOCK_TOLERANCE_MS:
        return Finding("clock", Status.OK, f"this device's clock is {describe_skew(skew)}; Parley uses the server's")
    return Finding("clock", Status.OK, "in step with the server")


CHECKS = (connection, registration, devices, keys, sessions, outbox, mailbox, reads, clock)


def run_checks(facts: Facts) -> list[Finding]:
    return [check(facts) for check in CHECKS]


def clock_correction(offset_ms: int, skew_ms: int) -> int | None:
    """The offset to apply to this device's clock, or None if the current one is good.
    Small skews are left alone (no correction at all)."""
    wanted = skew_ms if abs(skew_ms) > CLOCK_TOLERANCE_MS else 0
    return wanted if abs(wanted - offset_ms) > CLOCK_TOLERANCE_MS or (wanted == 0 and offset_ms != 0) else None


def skew(sent_ms: int, received_ms: int, server_ms: int) -> int:
    """The server's clock minus this device's, from one round trip (server time is taken
    to be read half-way)."""
    return server_ms - (sent_ms + received_ms) // 2


def exit_status(findings: list[Finding]) -> int:
    """Non-zero only when something still needs the person."""
    return 1 if any(f.status is Status.NEEDS_YOU for f in findings) else 0


def span(ms: int) -> str:
    seconds = abs(ms) // 1000
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def describe_skew(skew_ms: int) -> str:
    return f"{span(skew_ms)} {'behind' if skew_ms > 0 else 'ahead of'} the server's"
