"""What a device reports to whoever drives it (the CLI, a user interface, the tests)."""

from __future__ import annotations

from dataclasses import dataclass

from parley.client.content import Verification
from parley.client.profile import StoredMessage


@dataclass(frozen=True)
class Received:
    """A message arrived (from someone else, or a copy of one this account sent)."""

    message: StoredMessage


@dataclass(frozen=True)
class StateChanged:
    """A message this account sent moved on (e.g. to "delivered", then "read")."""

    message_id: str
    state: str


@dataclass(frozen=True)
class Unreadable:
    """An envelope whose body could not be opened: shown as "could not decrypt", acked,
    and asked for again from the sender's device, whose resend takes its place."""

    sender_handle: str
    message_id: str
    reason: str


@dataclass(frozen=True)
class VerificationStep:
    """A step of a SAS comparison arrived from another device (see ``parley.client.sas``)."""

    sender_handle: str
    sender_device: str
    content: Verification


@dataclass(frozen=True)
class ReadElsewhere:
    """The person read these messages on another of their devices: no longer unread here."""

    message_ids: list[str]


@dataclass(frozen=True)
class Typing:
    """``sender_handle`` is typing in ``conversation`` until ``until_ms`` (by this
    device's clock), unless a later indicator says otherwise. Never stored."""

    sender_handle: str
    conversation: str
    until_ms: int


@dataclass(frozen=True)
class Repaired:
    """The device found something broken and repaired it (also in the repair log)."""

    check: str
    detail: str


Event = Received | StateChanged | Unreadable | VerificationStep | ReadElsewhere | Typing | Repaired
