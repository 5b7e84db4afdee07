"""The seam where envelope bodies are sealed for one device and opened again.

Every envelope is addressed to exactly one device, so the codec works per device pair:
:class:`parley.client.olm.OlmMachine` implements it with Olm sessions (vodozemac). The
device (``parley.client.device``) does the I/O around it: when :meth:`needs_session`
says so, it claims a key for that device from the server and hands it to
:meth:`start_session`. A later group scheme (Megolm) fits behind the same seam: its
session keys travel as pairwise-sealed content, its messages as ``Sealed`` bodies with
``scheme="megolm"``.
"""

from __future__ import annotations

from typing import Protocol

from parley.wire import ClaimedKey, DeviceInfo


class EnvelopeCodec(Protocol):
    def needs_session(self, device: DeviceInfo) -> bool:
        """True if a key must be claimed for ``device`` before :meth:`seal`."""
        ...

    def start_session(self, device: DeviceInfo, claimed: ClaimedKey) -> None:
        """Start a session with ``device`` from a key the server handed out; raise
        :class:`parley.errors.ProtocolError` if the device did not sign it."""
        ...

    def seal(self, device: DeviceInfo, plaintext: bytes) -> bytes: ...

    def open(self, sender: DeviceInfo, body: bytes) -> bytes:
        """The plaintext, or :class:`parley.errors.DecryptFailed`."""
        ...

    def reset(self, device: DeviceInfo) -> None:
        """A session with ``device`` failed: the next seal starts a new one."""
        ...
