"""Envelopes the server writes itself to tell a sender's devices something."""

from __future__ import annotations

from parley.server.directory import Directory
from parley.store.base import NewEnvelope
from parley.wire import FallbackDue, frame_encode

SERVER_DEVICE = "server"  # sender_device of envelopes the server writes itself


async def fallback_notices(
    directory: Directory, sender_account: str, message_id: str, recipients: list[str], now_ms: int
) -> list[NewEnvelope]:
    """A "fallback" notice for every device of the sender: hand this message over by SMS
    to these recipients (its window passed, or the recipients left Parley)."""
    account = await directory.account(sender_account)
    body = frame_encode(FallbackDue(message_id, recipients))
    return [
        NewEnvelope(
            device_id=device_id,
            message_id=message_id,
            kind="fallback",
            sender_account=sender_account,
            sender_device=SERVER_DEVICE,
            sender_handle=account.primary_handle,
            sent_at_ms=now_ms,
            body=body,
        )
        for device_id in account.device_ids
    ]
