"""``parley doctor``: gather what the device knows of itself and what the server reports,
run the checks (``parley.client.checks``, pure), carry out the repairs they ask for, and
log each one in the profile's repair log, beside those the watch loop made.

It works on a profile whose key store no longer opens (that is one of the things it
finds), so it talks to the server with the bare credential until it knows the keys open.
It uses HTTP only: a WebSocket would replace a ``parley watch`` running on the profile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import msgspec

from parley.client import checks
from parley.client.api import ServerApi
from parley.client.checks import Facts, Finding, Status
from parley.client.device import CLOCK_OFFSET, REVOKED, Device, wall_clock_ms
from parley.client.olm import OlmMachine
from parley.client.profile import Profile
from parley.errors import ParleyError, ProfileError, Rejected, Unreachable
from parley.wire import MAX_FETCH, DeviceList


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    log: list[tuple[int, str, str, str]]  # the newest repair log entries: (at_ms, check, outcome, detail)

    @property
    def exit_status(self) -> int:
        return checks.exit_status(self.findings)


async def examine(profile_name: str, clock: Callable[[], int] = wall_clock_ms, repair: bool = True) -> Report:
    """Check the device of ``profile_name``, repair what can be, and report."""
    profile = Profile.open(profile_name)
    try:
        olm: OlmMachine | None = OlmMachine.load(profile, clock)
    except ProfileError:
        olm = None
    if olm is None:
        async with ServerApi(profile.require("server"), profile.require("credential")) as api:
            facts = await gather(profile, api, None, clock)
        findings = checks.run_checks(facts)
        _note_revoked(profile, clock(), facts)
        _log_needs(profile, clock(), findings)
        report = Report(findings, profile.repairs())
        profile.close()
        return report
    async with Device(profile, clock=clock) as device:
        facts = await gather(profile, device.api, device.olm, clock)
        _note_revoked(profile, device.now(), facts)
        findings = checks.run_checks(facts)
        if repair:
            findings = [await _repair(device, facts, finding) for finding in findings]
        _log_needs(profile, device.now(), findings)
        return Report(findings, profile.repairs())


async def gather(profile: Profile, api: ServerApi, olm: OlmMachine | None, clock: Callable[[], int]) -> Facts:
    """The facts the checks read: the profile's state and what the server says now."""
    handle = profile.require("handle")
    device_id = profile.require("device_id")
    outbox = profile.outbox()
    seen = profile.db.execute("SELECT device_id FROM devices_seen WHERE handle = ?", (handle,)).fetchall()
    facts = Facts(
        now_ms=clock(),
        profile=profile.name,
        server=profile.require("server"),
        handle=handle,
        device_id=device_id,
        seen_own_devices=tuple(sorted(row[0] for row in seen)),
        key_store_opens=olm is not None,
        damaged_sessions=len(olm.damaged_sessions()) if olm is not None else 0,
        undecryptable=len(profile.in_state("undecryptable")),
        outbox=sum(1 for m in outbox if m.state == "sending"),
        held=tuple(sorted({m.conversation for m in outbox if m.state == "held"})),
        unsynced_reads=len(profile.unsynced_reads()),
        clock_offset_ms=int(profile.get(CLOCK_OFFSET) or 0),
        credential_ok=False if profile.get(REVOKED) is not None else None,
    )
    try:
        sent = clock()
        info = await api.info()
        facts = replace(facts, clock_skew_ms=checks.skew(sent, clock(), info.server_time_ms))
    except Unreachable:
        return replace(facts, reachable=False)
    try:
        raw = await api.get_json("/v1/devices")
    except Rejected as error:
        if error.status == 401:
            return replace(facts, credential_ok=False)
        raise
    listing = msgspec.convert(raw, DeviceList)
    lease = listing.lease_expires_ms or None
    facts = replace(
        facts,
        credential_ok=True,
        own_devices=tuple(sorted(d.device_id for d in listing.devices)),
        lease_expires_ms=lease,
        queued_on_server=len((await api.fetch(after=0, limit=MAX_FETCH)).envelopes),
    )
    if olm is not None:
        count = await api.key_count()
        facts = replace(facts, one_time_keys=count.one_time_keys, fallback_key=count.fallback_key)
    return facts


async def _repair(device: Device, facts: Facts, finding: Finding) -> Finding:
    action = REPAIRS.get(finding.repair)
    if action is None:
        return finding
    try:
        done = await action(device, facts)
    except ParleyError as error:
        command = f"parley doctor --profile {facts.profile}"
        return replace(
            finding, status=Status.NEEDS_YOU, detail=f"{finding.detail}; repair failed: {error}", command=command
        )
    device.log_repair(finding.check, Status.REPAIRED.value, f"{finding.detail}: {done}")
    return replace(finding, status=Status.REPAIRED, detail=f"{finding.detail}: {done}")


def _note_revoked(profile: Profile, now_ms: int, facts: Facts) -> None:
    """Remember a refused credential: ``parley register`` may then reuse the profile."""
    if facts.credential_ok is False and profile.get(REVOKED) is None:
        profile.set_many({REVOKED: str(now_ms)})


def _log_needs(profile: Profile, now_ms: int, findings: list[Finding]) -> None:
    last = {check: outcome for _, check, outcome, _ in reversed(profile.repairs(50))}
    for finding in findings:
        if finding.status is Status.NEEDS_YOU and last.get(finding.check) != Status.NEEDS_YOU.value:
            profile.log_repair(now_ms, finding.check, Status.NEEDS_YOU.value, finding.detail)


# --- the repairs: each returns what it did, in a few words ---


async def _renew_lease(device: Device, facts: Facts) -> str:
    # The server renews a lease whenever its device uses it and half of it has passed
    # (parley.core.leaving.renewal_due): an authenticated request is the renewal.
    await device.own_devices()
    return "renewed"


async def _refresh_devices(device: Device, facts: Facts) -> str:
    await device.own_devices()
    return "refreshed"


async def _replenish_keys(device: Device, facts: Facts) -> str:
    return f"uploaded {await device.channel.replenish_keys()} one-time keys"


async def _drop_damaged(device: Device, facts: Facts) -> str:
    dropped = device.olm.drop_damaged_sessions()
    await device.channel.heal()
    return f"dropped {dropped}; new sessions start with the next message"


async def _heal(device: Device, facts: Facts) -> str:
    await device.channel.heal()
    return "asked the senders' devices to send them again"


async def _flush_outbox(device: Device, facts: Facts) -> str:
    return f"sent {len(await device.flush_outbox())} again (the server keeps one copy)"


async def _sync(device: Device, facts: Facts) -> str:
    events = await device.sync()
    return f"fetched and stored ({len(events)} new)"


async def _flush_reads(device: Device, facts: Facts) -> str:
    return f"told the other devices of {await device.reads.flush()}"


async def _correct_clock(device: Device, facts: Facts) -> str:
    correction = checks.clock_correction(device.clock_offset_ms, facts.clock_skew_ms or 0)
    if correction is None:
        return "already corrected"
    device.set_clock_offset(correction)
    return "using the server's time" if correction else "no correction needed any more"


REPAIRS: dict[str, Callable[[Device, Facts], Awaitable[str]]] = {
    "renew_lease": _renew_lease,
    "refresh_devices": _refresh_devices,
    "replenish_keys": _replenish_keys,
    "drop_damaged_sessions": _drop_damaged,
    "heal": _heal,
    "flush_outbox": _flush_outbox,
    "sync": _sync,
    "flush_reads": _flush_reads,
    "correct_clock": _correct_clock,
}
