"""Typing indicators: ephemeral, end to end, never stored, and they expire by themselves.

A typing indicator is a ``TypingNow`` content sealed like any other, but relayed by the
server (``POST /v1/signals`` or a ``signal`` frame) only to the devices connected at that
moment, as ``ephemeral`` frames: nothing goes into a mailbox, nothing is acked, and a
device that was offline never sees it. It is sealed only on sessions that already exist,
so it never spends a one-time key. The receiver shows it until ``ttl_ms`` (at most
:data:`MAX_TTL_MS`) passes by its own clock, or a "stopped" indicator arrives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from parley.client.channel import Channel
from parley.client.content import TypingNow, encode_content
from parley.client.events import Typing
from parley.errors import DecryptFailed
from parley.wire import DeviceInfo, Envelope, SignalRequest

DEFAULT_TTL_MS = 5_000
MAX_TTL_MS = 15_000


def typing_until(now_ms: int, content: TypingNow) -> int:
    """Until when the indicator shows, by the receiver's clock (now if it stopped)."""
    return now_ms + min(content.ttl_ms, MAX_TTL_MS) if content.active else now_ms


class Presence:
    def __init__(
        self,
        channel: Channel,
        targets: Callable[[list[str]], Awaitable[list[DeviceInfo]]],
        handle: str,
        clock: Callable[[], int],
        make_id: Callable[[], str],
    ) -> None:
        self._channel = channel
        self._targets = targets
        self._handle = handle
        self._clock = clock
        self._make_id = make_id

    async def send_typing(self, recipients: list[str], active: bool = True, ttl_ms: int = DEFAULT_TTL_MS) -> int:
        """Tell the recipients' connected devices (and this person's) that this person is
        typing; return how many devices were connected to get it."""
        devices = [d for d in await self._targets(recipients) if not self._channel.olm.needs_session(d)]
        if not devices:
            return 0
        body = encode_content(TypingNow(to=recipients, active=active, ttl_ms=ttl_ms))
        message_id = self._make_id()
        envelopes = await self._channel.seal(message_id, devices, body, record=False)
        request = SignalRequest(message_id=message_id, recipients=recipients, envelopes=envelopes)
        return (await self._channel.api.signal(request)).relayed

    def open(self, envelope: Envelope) -> Typing | None:
        """An ``ephemeral`` envelope: the indicator it carries, or None (it is dropped,
        never healed: it would be stale by the time a resend came)."""
        try:
            content = self._channel.open(envelope)
        except DecryptFailed:
            return None
        if not isinstance(content, TypingNow):
            return None
        participants = {envelope.sender_handle, *content.to} - {self._handle}
        return Typing(envelope.sender_handle, ",".join(sorted(participants)), typing_until(self._clock(), content))
