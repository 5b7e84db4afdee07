"""Which devices a message must reach, and whether a send named exactly those.

A sender posts one envelope per target device: every device of every recipient, and
every other device of its own account (the "sent" copies that keep a person's devices
in step). The server checks the named set against the directory and refuses a stale one
with the difference, so the client re-fetches and retries; it never guesses. A control
send (device-to-device traffic such as a resend request) names any subset of those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSetDiff:
    missing: list[str]  # current devices the send left out
    extra: list[str]  # devices the send named that are not current (removed, unknown)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra)


def expected_targets(
    sender_devices: Iterable[str], sender_device: str, recipient_devices: Mapping[str, Iterable[str]]
) -> set[str]:
    """Every device the message must reach.

    ``recipient_devices`` maps each recipient account to its devices. A recipient that is
    the sender's own account (a note to self) contributes the sender's other devices.
    """
    targets = {device for device in sender_devices if device != sender_device}
    for devices in recipient_devices.values():
        targets.update(device for device in devices if device != sender_device)
    return targets


def diff_device_set(expected: set[str], named: Sequence[str]) -> DeviceSetDiff:
    """Compare the devices a send named with the devices it must reach."""
    named_set = set(named)
    return DeviceSetDiff(missing=sorted(expected - named_set), extra=sorted(named_set - expected))


def diff_control_set(expected: set[str], named: Sequence[str]) -> DeviceSetDiff:
    """A control send names any subset of the targets a message would have (e.g. the one
    device that asked for a resend): only devices outside them are wrong."""
    return DeviceSetDiff(missing=[], extra=sorted(set(named) - expected))


def duplicates(named: Sequence[str]) -> list[str]:
    """Devices named more than once in one send (a malformed request)."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for device in named:
        (repeated if device in seen else seen).add(device)
    return sorted(repeated)
