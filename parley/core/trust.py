"""Trust in a contact's device keys: key changes, verification, safety numbers.

A device's keys never change: a "key change" is a contact's account gaining a device
(or a device id answering with other keys), which is also what a server that wants to
read along would have to do. So the client remembers the keys it has seen per handle
and compares every directory answer with them:

    seen before   now                    result
    nothing       any devices            trust on first use: no notice
    keys K        K plus new keys        key change: a notice in the conversation
    keys K        a subset of K          no notice (a device left; nothing new to trust)

A contact the person verified (by comparing safety numbers) is *verified* while every
current key is one they verified, and *changed* as soon as one is not; while changed,
outgoing messages are held (unless the person turned holding off) until they verify
again. Pure functions over plain data; the client keeps the data.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SAFETY_NUMBER_VERSION = b"parley.safety-number.v1"
GROUPS_PER_SIDE = 6  # 6 groups of 5 digits per account; 12 groups in all, as Signal shows


@dataclass(frozen=True)
class DeviceKeys:
    device_id: str
    identity_key: str
    signing_key: str


@dataclass(frozen=True)
class KeyChange:
    added: list[str]  # device ids with keys not seen before
    removed: list[str]

    @property
    def is_change(self) -> bool:
        """Whether to tell the person: only new keys are news."""
        return bool(self.added)


class Status(enum.Enum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    CHANGED = "changed"  # verified once, but a current key is not one they verified


def compare(seen: Sequence[DeviceKeys], current: Sequence[DeviceKeys]) -> KeyChange:
    """What changed between the keys seen before and the directory's answer now."""
    if not seen:
        return KeyChange(added=[], removed=[])  # first contact: trust on first use
    known = {(d.device_id, d.identity_key, d.signing_key) for d in seen}
    added = sorted(d.device_id for d in current if (d.device_id, d.identity_key, d.signing_key) not in known)
    now = {d.device_id for d in current}
    removed = sorted(d.device_id for d in seen if d.device_id not in now)
    return KeyChange(added=added, removed=removed)


def status(verified_keys: Iterable[str] | None, current: Sequence[DeviceKeys]) -> Status:
    if verified_keys is None:
        return Status.UNVERIFIED
    verified = set(verified_keys)
    if all(d.identity_key in verified for d in current):
        return Status.VERIFIED
    return Status.CHANGED


def must_hold(current_status: Status, hold_on_change: bool) -> bool:
    return hold_on_change and current_status is Status.CHANGED


def safety_number(side_a: tuple[str, Sequence[DeviceKeys]], side_b: tuple[str, Sequence[DeviceKeys]]) -> str:
    """60 digits in 12 groups that both people compute alike from the keys they see.

    Each side is (handle, its devices' keys). The sides are ordered by handle, so
    either person gets the same number; any key that differs changes it.
    """
    groups = []
    for handle, devices in sorted([side_a, side_b], key=lambda side: side[0]):
        digest = _account_digest(handle, devices)
        for n in range(GROUPS_PER_SIDE):
            chunk = int.from_bytes(digest[n * 5 : n * 5 + 5], "big")
            groups.append(f"{chunk % 100_000:05d}")
    return " ".join(groups)


def normalise_number(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _account_digest(handle: str, devices: Sequence[DeviceKeys]) -> bytes:
    hasher = hashlib.sha512(SAFETY_NUMBER_VERSION + b"\x00" + handle.encode())
    for identity_key, signing_key in sorted((d.identity_key, d.signing_key) for d in devices):
        hasher.update(b"\x00" + identity_key.encode() + b"\x00" + signing_key.encode())
    return hasher.digest()
