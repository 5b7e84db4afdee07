"""A Parley device: registers, looks people up, sends, receives, keeps its history.

Sending is crash-safe: a message is written to the local history as "sending" before it
leaves, and sent again under the same id (which the server de-duplicates) until the
server confirms it. Receiving is at-least-once from the server and exactly-once in the
history: an envelope is stored before it is acked, and stored once by its id.

Every body is sealed for its one target device (``parley.client.olm``); before the first
message to a device, a key is claimed for it. A body that does not open is kept as a
"could not decrypt" placeholder, the device starts a new session with the sender's
device and asks it to send the message again (``parley.client.channel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from websockets.asyncio.client import connect

from parley.client import leaving
from parley.client.api import ServerApi, ws_url
from parley.client.channel import Channel
from parley.client.contacts import TrustBook, device_keys
from parley.client.content import Read, ResendRequest, SasMac, SasStart, Text, TypingNow, encode_content
from parley.client.events import (
    Event,
    ReadElsewhere,
    Received,
    Repaired,
    StateChanged,
    Typing,
    Unreadable,
    VerificationStep,
)
from parley.client.olm import OlmMachine
from parley.client.presence import Presence
from parley.client.profile import COULD_NOT_DECRYPT, PLACEHOLDER_STATES, Profile, StoredMessage, conversation_key
from parley.client.receipts import ReadState
from parley.client.registration import forget_old_device, read_code_from_handset
from parley.client.sms import SmsHandover, accept_carrier, new_inbox_key, sms_route
from parley.client.watch import HEARTBEAT_S, Watcher
from parley.core import fallback, handles, trust
from parley.errors import (
    DecryptFailed,
    ParleyError,
    ProfileError,
    Rejected,
    StaleDevices,
    UsageError,
)
from parley.wire import (
    MAX_FRAME_BYTES,
    MAX_LOOKUP_HANDLES,
    DeviceInfo,
    Envelope,
    LookupResult,
    OutEnvelope,
    receipt_decoder,
)

__all__ = [
    "Device",
    "Event",
    "ReadElsewhere",
    "Received",
    "Repaired",
    "StateChanged",
    "Typing",
    "Unreadable",
    "VerificationStep",
    "conversation_key",
    "read_code_from_handset",
]

SEND_ATTEMPTS = 3
CLOCK_OFFSET = "clock_offset_ms"  # the server's clock minus this device's, when corrected
REVOKED = "revoked"  # set once the server refused this device's credential


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def new_message_id() -> str:
    return secrets.token_urlsafe(16)


class Device:
    def __init__(
        self,
        profile: Profile,
        clock: Callable[[], int] = wall_clock_ms,
        make_id: Callable[[], str] = new_message_id,
    ) -> None:
        self.profile = profile
        self.server = profile.require("server")
        self.device_id = profile.require("device_id")
        self.account_id = profile.require("account_id")
        self.handle = profile.require("handle")
        self._credential = profile.require("credential")
        self.api = ServerApi(self.server, self._credential)
        self.raw_clock = clock
        self.clock_offset_ms = int(profile.get(CLOCK_OFFSET) or 0)
        self._clock = self.now
        self._make_id = make_id
        self.olm = OlmMachine.load(profile, self.now)
        self.trust = TrustBook(profile, self.handle, self.now)
        self.channel = Channel(profile, self.api, self.olm, self.trust, self.device_id, self.handle, make_id)
        self._sms = SmsHandover(self.api, profile, self._other_devices, self._seal_copies)
        self.reads = ReadState(
            profile,
            self.channel,
            self.lookup,
            self.own_devices,
            self.handle,
            self.account_id,
            self.device_id,
            self.now,
            make_id,
        )

        self.presence = Presence(self.channel, self._targets, self.handle, self.now, make_id)

    def now(self) -> int:
        """This device's clock, corrected by the skew measured against the server's."""
        return self.raw_clock() + self.clock_offset_ms

    def set_clock_offset(self, offset_ms: int) -> None:
        self.clock_offset_ms = offset_ms
        self.profile.set_many({CLOCK_OFFSET: str(offset_ms)})

    def log_repair(self, check: str, outcome: str, detail: str) -> None:
        """Write one line of the repair log that ``parley doctor`` shows."""
        self.profile.log_repair(self.now(), check, outcome, detail)

    def new_id(self) -> str:
        return self._make_id()

    # --- lifecycle ---

    @classmethod
    def open(cls, profile_name: str) -> Device:
        return cls(Profile.open(profile_name))

    @classmethod
    async def register(
        cls,
        server: str,
        phone: str,
        profile_name: str,
        code: str | None = None,
        device_name: str | None = None,
        ask_code: Callable[[str], Awaitable[str]] | None = None,
    ) -> Device:
        """Prove the number with a one-time code and store the new device's credential.

        Without ``code``, a code is requested: against the carrier simulator the device
        reads it from its own handset, as a phone reads its own SMS; otherwise
        ``ask_code`` asks the person. With ``code``, the code sent earlier is used.
        """
        handle = handles.normalise(phone)
        if not handles.is_phone(handle):
            raise UsageError("register with a phone number (+E.164)")
        number = handles.phone_of(handle)
        again = False
        try:
            existing = Profile.open(profile_name)
        except ProfileError:
            pass  # no device under that name yet: good
        else:
            again = existing.get(REVOKED) is not None  # the server refused it: register it anew
            existing.close()
            if not again:
                raise UsageError(f"profile {profile_name!r} already has a device; pick another --profile name")
        async with ServerApi(server) as api:
            if code is None:
                info = await api.info()
                since_ms = info.server_time_ms
                await api.request_code(handle)
                if info.carrier == "sim":
                    code = await read_code_from_handset(api, number, since_ms)
                elif ask_code is not None:
                    code = await ask_code(f"A code was sent by SMS to {number}. Code: ")
                else:
                    raise UsageError(f"a code was sent by SMS to {number}; run again with --code CODE")
            name = device_name or f"{profile_name} on {socket.gethostname()}"
            profile = Profile.create(profile_name)
            if again:
                forget_old_device(profile)
            olm = OlmMachine.create(profile, wall_clock_ms)
            inbox_key, inbox_secret = new_inbox_key()  # inbound SMS are sealed to it
            request = msgspec.structs.replace(olm.register_request(handle, code, name[:64]), inbox_key=inbox_key)
            try:
                registered = await api.register(request)
            except BaseException:
                profile.close()
                raise
            olm.published()
            left_key = (await api.info()).left_key  # pinned: "left" records must verify under it
        profile.db.execute("DELETE FROM settings WHERE key = ?", (REVOKED,))
        profile.set_many(
            {
                "server": api.server,
                "device_id": registered.device_id,
                "account_id": registered.account_id,
                "handle": registered.handle,
                "credential": registered.credential,
                "inbox_secret": inbox_secret,
                leaving.LEFT_KEY: left_key,
            }
        )
        return cls(profile)

    async def close(self) -> None:
        await self.api.close()
        self.profile.close()

    async def __aenter__(self) -> Device:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- directory ---

    async def lookup(self, queries: list[str]) -> list[LookupResult]:
        """Look handles up; every answer passes the trust book (key change notices)."""
        results = (await self.api.lookup(queries)).results
        for result in results:
            if result.on_parley:
                self.trust.observe(result.handle, result.devices)
        leaving.observe(self.profile, results)
        return results

    async def own_devices(self) -> list[DeviceInfo]:
        devices = (await self.api.devices()).devices
        self.trust.observe(self.handle, devices)
        return devices

    # --- keys and verification ---

    async def safety_number(self, raw_handle: str) -> tuple[str, list[trust.DeviceKeys]]:
        """The safety number with ``raw_handle``, and the contact's keys it covers."""
        handle = handles.normalise(raw_handle)
        (result,) = await self.lookup([handle])
        if not result.on_parley:
            raise UsageError(f"{handle} is not on Parley: there are no keys to compare")
        own = await self.own_devices()
        theirs = device_keys(result.devices)
        return trust.safety_number((self.handle, device_keys(own)), (handle, theirs)), theirs

    async def mark_verified(self, raw_handle: str, keys: list[trust.DeviceKeys]) -> list[str]:
        """Trust exactly ``keys`` for ``raw_handle``; send what was held; return those ids."""
        self.trust.verify(handles.normalise(raw_handle), keys)
        return await self.flush_outbox()

    # --- sending ---

    async def send_text(self, recipients: list[str], text: str, fallback_s: int | None = None) -> str:
        """Send ``text`` to ``recipients``; return the message id once the server has it.

        Over Parley to handles on Parley, with SMS after ``fallback_s`` seconds (default
        30) if none of a recipient's devices acks; by SMS at once to a number that is not
        on Parley (the routing table in ``parley.core.fallback``).
        """
        targets = [handles.normalise(raw) for raw in recipients]
        if not text:
            raise UsageError("the message is empty")
        if fallback_s is not None and not 0 <= fallback_s <= fallback.MAX_WINDOW_S:
            raise UsageError(f"the fallback window must be 0 to {fallback.MAX_WINDOW_S} seconds")
        by_sms = await self._sms_route(targets, text)
        message_id = self._make_id()
        now = self._clock()
        message = StoredMessage(
            sender_device=self.device_id,
            message_id=message_id,
            conversation=conversation_key(set(targets)),
            direction="out",
            sender_handle=self.handle,
            recipients=targets,
            text=text,
            sent_at_ms=now,
            state="sending",
        )
        # Written first: if this process dies before the server confirms, the next run
        # sends it again under the same id (flush_outbox) and the server keeps one copy.
        self.profile.add_message(message)
        if by_sms:
            await self._post_sms(message, targets[0], copies=True)
        else:
            await self._post(message, fallback_s)
        return message_id

    async def _sms_route(self, targets: list[str], text: str) -> bool:
        """True if the message goes by SMS now; raise if it cannot go at all."""
        return sms_route(await self.lookup(targets), text)

    async def _post_sms(self, message: StoredMessage, to: str, copies: bool) -> str | None:
        return await self._sms.post(message, to, copies)

    async def flush_sms(self) -> list[tuple[str, str]]:
        """Send as SMS every message whose fallback window passed (told by the server);
        return (message id, its state now) for each."""
        return await self._sms.flush()

    async def _other_devices(self) -> list[DeviceInfo]:
        return [d for d in await self.own_devices() if d.device_id != self.device_id]

    async def _seal_copies(self, devices: list[DeviceInfo], message: StoredMessage) -> list[OutEnvelope]:
        """The copies of an SMS this device sends, sealed for this account's other devices."""
        return await self.channel.seal(message.message_id, devices, self._plaintext(message))

    def _plaintext(self, message: StoredMessage) -> bytes:
        content = Text(
            to=message.recipients, text=message.text, sent_at_ms=message.sent_at_ms, message_id=message.message_id
        )
        return encode_content(content)

    async def flush_outbox(self) -> list[str]:
        """Send again what an earlier run wrote but could not confirm."""
        sent = []
        for message in self.profile.outbox():
            if await self._sms_route(message.recipients, message.text):
                await self._post_sms(message, message.recipients[0], copies=True)
                sent.append(message.message_id)
            elif await self._post(message):
                sent.append(message.message_id)
        await self.flush_sms()
        return sent

    async def _post(self, message: StoredMessage, fallback_s: int | None = None) -> bool:
        """Send a stored message; return False if it is held (a verified contact's keys
        changed), True once the server has it."""
        plaintext = self._plaintext(message)
        for _ in range(SEND_ATTEMPTS):
            targets = await self._targets(message.recipients)
            if any(self.trust.must_hold(h) for h in message.recipients if h != self.handle):
                self.profile.set_state(self.device_id, message.message_id, "held")
                return False
            try:
                await self.channel.send_sealed(
                    message.message_id, message.recipients, targets, plaintext, "message", fallback_s
                )
            except StaleDevices:
                continue  # a device came or went between lookup and send: look again
            except Rejected as error:
                if error.code != "not_found":  # a device vanished between lookup and claim
                    raise
                continue
            self.profile.advance_state([message.message_id], "sent")
            return True
        raise Rejected("stale_devices", "the recipients' devices kept changing; try again")

    async def _targets(self, recipients: list[str]) -> list[DeviceInfo]:
        """Every device the message must reach: the recipients' and our own other ones."""
        results = await self.lookup(recipients)
        targets: dict[str, DeviceInfo] = {}
        for result in results:
            if not result.on_parley:
                raise UsageError(f"{result.handle or result.query} is not on Parley")
            targets.update((d.device_id, d) for d in result.devices)
        targets.update((d.device_id, d) for d in await self.own_devices())
        targets.pop(self.device_id, None)
        return list(targets.values())

    # --- read state ---

    async def mark_read(self, raw_handle: str | None = None) -> list[str]:
        """Mark a conversation (or all) read here, on this person's other devices, and
        (where allowed) for the senders; return the ids that were unread."""
        conversation = handles.normalise(raw_handle) if raw_handle else None
        return await self.reads.mark_read(conversation)

    async def typing(self, raw_handle: str, active: bool = True) -> int:
        """Show the person's devices and the contact's connected devices that this person
        is typing (or stopped); nothing is stored. Return how many devices got it."""
        return await self.presence.send_typing([handles.normalise(raw_handle)], active)

    # --- receiving ---

    async def sync(self) -> list[Event]:
        """Fetch everything queued for this device, store it, ack it; return what's new."""
        events: list[Event] = []
        after = 0
        while True:
            page = await self.api.fetch(after=after)
            if not page.envelopes:
                break
            events.extend(await self.accept(page.envelopes))
            after = page.envelopes[-1].seq
            await self.api.ack(after)
            if not page.more:
                break
        await self.flush_sms()
        await self.channel.replenish_keys()
        await self.reads.flush()
        return events

    async def accept(self, envelopes: list[Envelope]) -> list[Event]:
        """Open and store a batch of envelopes in one transaction (the sessions that
        opened them commit with them); they may be acked after this. Then ask for
        resends of what did not open, and answer resend requests."""
        await self._learn_senders(envelopes)
        events: list[Event] = []
        with self.profile.batch():
            for envelope in envelopes:
                events.extend(self._accept_one(envelope))
        with contextlib.suppress(ParleyError):  # retried at the next sync or connect
            await self.channel.heal()
            await self.channel.replenish_if_used()
        return events

    async def _learn_senders(self, envelopes: list[Envelope]) -> None:
        """Look up the keys of sending devices this device has not seen yet."""
        unknown = {
            e.sender_handle
            for e in envelopes
            if e.kind in ("message", "control") and self.trust.device(e.sender_device) is None and e.sender_handle
        }
        if unknown:
            with contextlib.suppress(ParleyError):  # their envelopes then show "could not decrypt"
                await self.lookup(sorted(unknown)[:MAX_LOOKUP_HANDLES])

    def _accept_one(self, envelope: Envelope) -> list[Event]:
        if envelope.kind == "delivered":
            try:
                receipt = receipt_decoder.decode(envelope.body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return []  # a receipt is a courtesy: a bad one changes nothing
            moved = self.profile.advance_state(receipt.message_ids, "delivered")
            return [StateChanged(message_id, "delivered") for message_id in moved]
        if envelope.kind in ("fallback", "sms_status", "sms"):
            return self._accept_carrier(envelope)
        if envelope.kind == "control":
            if not self.profile.first_sight_of_control(envelope.sender_device, envelope.message_id):
                return []  # delivered again after a crash: its ratchet step is already taken
        else:
            stored = self.profile.get_message(envelope.sender_device, envelope.message_id)
            if stored is not None and stored.state not in PLACEHOLDER_STATES:
                return []  # a replay, or delivered again: shown once
        try:
            content = self.channel.open(envelope)
        except DecryptFailed as error:
            return self._undecryptable(envelope, str(error))
        if isinstance(content, ResendRequest):
            if envelope.kind == "control":
                self.channel.resend_asked(envelope.sender_device, list(content.message_ids))
            return []
        if isinstance(content, TypingNow):
            return []  # only ever relayed as an ephemeral: a stored one is stale
        if isinstance(content, Read):
            return self.reads.accept(envelope, content) if envelope.kind == "control" else []
        if isinstance(content, SasStart | SasMac):
            if envelope.kind != "control":
                return []
            return [VerificationStep(envelope.sender_handle, envelope.sender_device, content)]
        own = envelope.sender_account == self.account_id
        participants = set(content.to) if own else (set(content.to) | {envelope.sender_handle}) - {self.handle}
        message = StoredMessage(
            sender_device=envelope.sender_device,
            message_id=content.message_id,
            conversation=conversation_key(participants),
            direction="out" if own else "in",
            sender_handle=envelope.sender_handle,
            recipients=list(content.to),
            text=content.text,
            sent_at_ms=content.sent_at_ms,
            state="sent" if own else "received",
        )
        added = self.profile.fill_placeholder(message)
        return [Received(message)] if added else []

    def _undecryptable(self, envelope: Envelope, reason: str) -> list[Event]:
        unreadable = Unreadable(envelope.sender_handle, envelope.message_id, reason)
        if envelope.kind == "control":
            return [unreadable]  # never ask for a resend of a resend: no loops
        own = envelope.sender_account == self.account_id
        placeholder = StoredMessage(
            sender_device=envelope.sender_device,
            message_id=envelope.message_id,
            conversation=self.handle if own else envelope.sender_handle,
            direction="out" if own else "in",
            sender_handle=envelope.sender_handle,
            recipients=[],
            text=COULD_NOT_DECRYPT,
            sent_at_ms=envelope.sent_at_ms,
            state="undecryptable",
        )
        return [unreadable] if self.profile.add_message(placeholder) else []

    def _accept_carrier(self, envelope: Envelope) -> list[Event]:
        """The carrier path's envelopes: fallback notices, SMS status, inbound SMS."""
        return accept_carrier(self.profile, envelope)

    async def watch(
        self, on_event: Callable[[Event], None], stop: asyncio.Event | None = None, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        """Stay connected, store and ack what arrives, and call ``on_event`` for it.

        Heartbeats find a half-open connection; it reconnects with backoff and jitter and
        resumes after the last acked envelope, so nothing is missed or shown twice. Each
        repair is logged for ``parley doctor`` (``parley.client.watch``). Returns when
        ``stop`` is set; raises when the person must act (the credential was revoked).
        """
        await Watcher(self, on_event, stop or asyncio.Event(), heartbeat_s).run()

    def connect(self, open_timeout: float = 10) -> Any:
        """Open this device's WebSocket (an async context manager)."""
        headers = {"authorization": f"Bearer {self._credential}"}
        return connect(
            ws_url(self.server),
            additional_headers=headers,
            max_size=MAX_FRAME_BYTES,
            open_timeout=open_timeout,
            ping_interval=None,  # the application's own heartbeat (Ping/Pong) also reads the clock
            close_timeout=2,
        )
