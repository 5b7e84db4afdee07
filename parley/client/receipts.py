"""Read receipts and read sync, end to end.

Reading a conversation records its unread messages as read (``read_marks``, not yet
*synced*), then sends one ``Read`` content (``parley.client.content``) as ``control``
envelopes: to this person's other devices always (their unread state clears), and to
each sender's devices only if this person allows read receipts for that conversation.
Only then are the marks synced, so a crash or a lost connection in between leaves them
for :meth:`ReadState.flush` (run on every connect, sync and by ``parley doctor``): a read
is never silently lost.

Why ``control`` and not ``message``: a ``message`` envelope makes the server write a
"delivered" receipt when it is acked and, to a phone number, starts an SMS fallback
watch; a receipt must do neither. The server learns only that a control envelope went
from one device to some devices, as for a resend request; not what it says.

The setting: ``read_receipts`` (``on`` unless ``off``) for the person, and
``read_receipts:<conversation>`` overriding it for one conversation
(``parley config read-receipts off [--with HANDLE]``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from parley.client.channel import Channel
from parley.client.content import MAX_READ, Read, encode_content
from parley.client.events import Event, ReadElsewhere, StateChanged
from parley.client.profile import Profile
from parley.errors import Rejected
from parley.wire import DeviceInfo, Envelope, LookupResult

SETTING = "read_receipts"


def setting_key(conversation: str | None = None) -> str:
    return f"{SETTING}:{conversation}" if conversation else SETTING


def receipts_allowed(person: str | None, conversation: str | None) -> bool:
    """The per-conversation setting wins; else the person's; on unless set "off"."""
    if conversation in ("on", "off"):
        return conversation == "on"
    return person != "off"


class ReadState:
    def __init__(
        self,
        profile: Profile,
        channel: Channel,
        lookup: Callable[[list[str]], Awaitable[list[LookupResult]]],
        own_devices: Callable[[], Awaitable[list[DeviceInfo]]],
        handle: str,
        account_id: str,
        device_id: str,
        clock: Callable[[], int],
        make_id: Callable[[], str],
    ) -> None:
        self._profile = profile
        self._channel = channel
        self._lookup = lookup
        self._own_devices = own_devices
        self._handle = handle
        self._account_id = account_id
        self._device_id = device_id
        self._clock = clock
        self._make_id = make_id

    def allowed(self, conversation: str) -> bool:
        return receipts_allowed(self._profile.get(SETTING), self._profile.get(setting_key(conversation)))

    async def mark_read(self, conversation: str | None) -> list[str]:
        """Mark a conversation (or everything) read here and tell the other devices and,
        where allowed, the senders; return the ids that were unread."""
        ids = [m.message_id for m in self._profile.unread(conversation)]
        self._profile.mark_read(ids, self._clock(), synced=False)
        await self.flush()
        return ids

    async def flush(self) -> int:
        """Send every read not yet synced; return how many messages it covered."""
        pending = self._profile.unsynced_reads()
        if not pending:
            return 0
        ids = [message.message_id for message, _ in pending]
        at_ms = max(read_at for _, read_at in pending)
        others = [d for d in await self._own_devices() if d.device_id != self._device_id]
        by_sender: dict[str, list[str]] = {}
        for message, _ in pending:
            if message.state == "received" and self.allowed(message.conversation):
                by_sender.setdefault(message.sender_handle, []).append(message.message_id)
        if others:
            await self._send([self._handle], others, ids, at_ms)
        for sender, sender_ids in by_sender.items():
            if self._channel.trust.must_hold(sender):
                continue  # their keys changed since verified: tell them nothing
            results = await self._lookup([sender])
            devices = [d for r in results if r.on_parley for d in r.devices]
            with contextlib.suppress(Rejected):  # their devices changed: the receipt is a courtesy
                await self._send([sender], devices, sender_ids, at_ms)
        self._profile.reads_synced(ids)
        return len(ids)

    async def _send(self, recipients: list[str], devices: list[DeviceInfo], ids: list[str], at_ms: int) -> None:
        if not devices:
            return
        for start in range(0, len(ids), MAX_READ):
            body = encode_content(Read(message_ids=ids[start : start + MAX_READ], read_at_ms=at_ms))
            await self._channel.send_sealed(self._make_id(), recipients, devices, body, "control")

    def accept(self, envelope: Envelope, content: Read) -> list[Event]:
        """A ``Read`` arrived: from one of this person's devices (sync), or a receipt."""
        if envelope.sender_account == self._account_id:
            marked = self._profile.mark_read(list(content.message_ids), content.read_at_ms, synced=True)
            return [ReadElsewhere(marked)] if marked else []
        moved = self._profile.advance_sent_to(list(content.message_ids), "read", envelope.sender_handle)
        return [StateChanged(message_id, "read") for message_id in moved]
