"""The gateway interface every SMS carrier adapter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sms:
    """One SMS as a handset or gateway sees it. ``sender``/``to`` are E.164 numbers."""

    sms_id: str
    sender: str
    to: str
    text: str
    at_ms: int


class SmsGateway(Protocol):
    """Sends SMS on behalf of the server (codes now; fallback and replies later)."""

    name: str

    async def send_sms(self, sender: str, to: str, text: str) -> str:
        """Hand one SMS to the carrier; return the carrier's id for it."""
        ...
