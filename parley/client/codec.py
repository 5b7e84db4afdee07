"""The seam where envelope bodies are sealed for one device and opened again.

Every envelope is addressed to exactly one device, so the codec works per device pair.
Until end-to-end encryption lands (its own issue: Olm sessions per device pair, through
vodozemac), the codec is the identity and the server could read bodies; nothing else in
the client changes when a real codec replaces it.
"""

from __future__ import annotations

from typing import Protocol

from parley.wire import DeviceInfo


class EnvelopeCodec(Protocol):
    def seal(self, device: DeviceInfo, plaintext: bytes) -> bytes: ...

    def open(self, sender_device: str, body: bytes) -> bytes: ...


class PlaintextCodec:
    def seal(self, device: DeviceInfo, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, sender_device: str, body: bytes) -> bytes:
        return body
