"""Helpers of registration: reading a code from the simulated handset, and registering a
profile again after the server refused its credential (``parley doctor`` names that)."""

from __future__ import annotations

import asyncio
import re
import time

from parley.client.api import ServerApi
from parley.client.profile import Profile
from parley.errors import Unreachable

_CODE = re.compile(r"\b(\d{6})\b")


def forget_old_device(profile: Profile) -> None:
    """Registering a profile again after its credential was revoked: keep the history,
    drop what belonged to the old device's keys (its sessions and one-time key state)."""
    with profile.batch():
        profile.db.execute("DELETE FROM olm_sessions")
        # This device's old id would show up as gone and the new one as a stranger.
        profile.db.execute("DELETE FROM devices_seen WHERE handle = (SELECT value FROM settings WHERE key = 'handle')")
        profile.db.execute("DELETE FROM settings WHERE key IN ('olm_account', 'credential', 'device_id')")


async def read_code_from_handset(api: ServerApi, number: str, since_ms: int, timeout_s: float = 10.0) -> str:
    """Against the carrier simulator: read the newest code that reached our handset."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        inbox = await api.handset_inbox(number)
        for sms in reversed(inbox.messages):
            match = _CODE.search(sms.text)
            if sms.at_ms >= since_ms and match:
                return match.group(1)
        await asyncio.sleep(0.1)
    raise Unreachable(f"no code reached the simulated handset of {number} within {timeout_s:.0f} s")
