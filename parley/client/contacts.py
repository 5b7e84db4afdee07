"""The device's memory of other devices' keys: what it has seen, what the person verified.

Every directory answer passes through :meth:`TrustBook.observe`, which compares it with
what was seen before (``parley.core.trust`` decides) and writes a notice into the
conversation when a contact's keys changed. Verification records the identity keys the
person compared; a contact stays verified while every current key is one of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from parley.client.profile import Profile, StoredMessage
from parley.core import trust
from parley.wire import DeviceInfo

HOLD_SETTING = "hold_on_key_change"


def device_keys(devices: Sequence[DeviceInfo]) -> list[trust.DeviceKeys]:
    return [trust.DeviceKeys(d.device_id, d.identity_key, d.signing_key) for d in devices]


class TrustBook:
    def __init__(self, profile: Profile, own_handle: str, clock: Callable[[], int]) -> None:
        self._profile = profile
        self._db = profile.db
        self._own_handle = own_handle
        self._clock = clock

    def observe(self, handle: str, devices: Sequence[DeviceInfo]) -> trust.KeyChange:
        """Record the devices the directory lists for ``handle``; note a key change."""
        current = device_keys(devices)
        seen = self.keys_of(handle)
        change = trust.compare(seen, current)
        if seen and not change.is_change and not change.removed:
            return change
        with self._profile.batch():
            self._db.execute("DELETE FROM devices_seen WHERE handle = ?", (handle,))
            self._db.executemany(
                "INSERT OR REPLACE INTO devices_seen VALUES (?, ?, ?, ?)",
                [(handle, d.device_id, d.identity_key, d.signing_key) for d in current],
            )
            if change.is_change:
                self._notice(handle, change, self.status(handle))
        return change

    def keys_of(self, handle: str) -> list[trust.DeviceKeys]:
        rows = self._db.execute(
            "SELECT device_id, identity_key, signing_key FROM devices_seen WHERE handle = ? ORDER BY device_id",
            (handle,),
        ).fetchall()
        return [trust.DeviceKeys(*row) for row in rows]

    def device(self, device_id: str) -> tuple[str, DeviceInfo] | None:
        """The handle and keys of a device seen in the directory, if any."""
        row = self._db.execute(
            "SELECT handle, identity_key, signing_key FROM devices_seen WHERE device_id = ?", (device_id,)
        ).fetchone()
        if row is None:
            return None
        handle, identity_key, signing_key = row
        return handle, DeviceInfo(device_id, "", 0, identity_key=identity_key, signing_key=signing_key)

    # --- verification ---

    def status(self, handle: str) -> trust.Status:
        row = self._db.execute("SELECT identity_keys FROM verified WHERE handle = ?", (handle,)).fetchone()
        return trust.status(json.loads(row[0]) if row else None, self.keys_of(handle))

    def verify(self, handle: str, devices: Sequence[trust.DeviceKeys]) -> None:
        keys = sorted(d.identity_key for d in devices)
        self._db.execute("INSERT OR REPLACE INTO verified VALUES (?, ?)", (handle, json.dumps(keys)))

    def unverify(self, handle: str) -> None:
        self._db.execute("DELETE FROM verified WHERE handle = ?", (handle,))

    @property
    def hold_on_change(self) -> bool:
        return self._profile.get(HOLD_SETTING) != "off"

    def must_hold(self, handle: str) -> bool:
        return trust.must_hold(self.status(handle), self.hold_on_change)

    def _notice(self, handle: str, change: trust.KeyChange, status: trust.Status) -> None:
        now = self._clock()
        devices = ", ".join(change.added)
        text = f"Your safety number with {handle} changed (new keys: {devices}). Compare it: parley verify {handle}"
        if handle == self._own_handle:  # the server could add a device to read sent copies
            text = f"A new device joined your account: {devices}. If it is not yours, unlink it (parley unlink)"
        elif status is trust.Status.CHANGED and self.hold_on_change:
            text += ". You had verified them: messages to them are held until you verify again."
        self._profile.add_message(
            StoredMessage(
                sender_device="",
                message_id=f"notice.{now}.{devices}"[:64],
                conversation=handle,
                direction="notice",
                sender_handle=handle,
                recipients=[handle],
                text=text,
                sent_at_ms=now,
                state="notice",
            )
        )
