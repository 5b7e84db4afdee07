"""The encrypted channel from this device to others, over the server.

It claims keys and starts sessions on demand, seals a plaintext for each target device
and posts it, opens what arrives, replenishes this device's one-time keys, and heals:
for every message that did not decrypt, it starts a new session with the sender's device
and asks it to send the message again; it answers such requests from others, but only
for a device that was a target of the message. All cryptography is in the codec
(:class:`parley.client.olm.OlmMachine`); this module does the I/O around it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import msgspec

from parley.client.api import ServerApi
from parley.client.codec import EnvelopeCodec
from parley.client.contacts import TrustBook
from parley.client.content import MAX_RESEND, Content, ResendRequest, Text, content_decoder, encode_content
from parley.client.olm import ONE_TIME_KEYS_LOW, ONE_TIME_KEYS_TARGET, OlmMachine
from parley.client.profile import Profile
from parley.errors import DecryptFailed, Rejected
from parley.wire import DeviceInfo, Envelope, OutEnvelope, SendKind, SendRequest


class Channel:
    def __init__(
        self,
        profile: Profile,
        api: ServerApi,
        olm: OlmMachine,
        trust: TrustBook,
        device_id: str,
        handle: str,
        make_id: Callable[[], str],
    ) -> None:
        self.profile = profile
        self.api = api
        self.olm = olm
        self._codec: EnvelopeCodec = olm
        self.trust = trust
        self.device_id = device_id
        self.handle = handle
        self._make_id = make_id
        self._resend_asked: list[tuple[str, list[str]]] = []  # (requesting device, message ids)
        self._keys_used_at_check = 0

    async def replenish_keys(self) -> int:
        """Upload one-time keys (and a new fallback key) when the server runs low;
        return how many one-time keys were uploaded."""
        self._keys_used_at_check = self.olm.one_time_keys_used
        count = await self.api.key_count()
        if count.one_time_keys >= ONE_TIME_KEYS_LOW and count.fallback_key:
            return 0
        upload = self.olm.prekeys(max(0, ONE_TIME_KEYS_TARGET - count.one_time_keys), new_fallback=True)
        await self.api.upload_keys(upload)
        self.olm.published()
        return len(upload.one_time_keys)

    async def replenish_if_used(self, every: int = ONE_TIME_KEYS_LOW) -> None:
        """While connected: check the server's count after every few sessions started."""
        if self.olm.one_time_keys_used - self._keys_used_at_check >= every:
            await self.replenish_keys()

    async def prepare(self, devices: list[DeviceInfo]) -> None:
        """Start a session with every device that has none, from keys claimed for them."""
        need = [d for d in devices if self._codec.needs_session(d)]
        if not need:
            return
        claimed = {key.device_id: key for key in (await self.api.claim_keys([d.device_id for d in need])).keys}
        with self.profile.batch():
            for device in need:
                key = claimed.get(device.device_id)
                if key is None:
                    raise Rejected("no_keys", f"device {device.device_id} has no keys to start a session with")
                self._codec.start_session(device, key)

    async def seal(
        self, message_id: str, targets: list[DeviceInfo], plaintext: bytes, record: bool = True
    ) -> list[OutEnvelope]:
        """Seal ``plaintext`` for each target device, starting sessions as needed; with
        ``record``, remember the targets (the devices that may ask for it again)."""
        await self.prepare(targets)
        with self.profile.batch():  # the ratchet steps are on disk before the ciphertext leaves
            envelopes = [OutEnvelope(d.device_id, self._codec.seal(d, plaintext)) for d in targets]
            if record:
                self.profile.record_targets(message_id, [d.device_id for d in targets])
        return envelopes

    async def send_sealed(
        self,
        message_id: str,
        recipients: list[str],
        targets: list[DeviceInfo],
        plaintext: bytes,
        kind: SendKind,
        fallback_s: int | None = None,
    ) -> None:
        envelopes = await self.seal(message_id, targets, plaintext, record=kind == "message")
        request = SendRequest(
            message_id=message_id, recipients=recipients, envelopes=envelopes, kind=kind, fallback_s=fallback_s
        )
        await self.api.send(request)

    def open(self, envelope: Envelope) -> Content:
        known = self.trust.device(envelope.sender_device)
        if known is None:
            raise DecryptFailed("the sending device is not in the directory")
        handle, sender = known
        if handle != envelope.sender_handle:
            raise DecryptFailed("the sending device belongs to another handle")
        try:
            content = content_decoder.decode(self._codec.open(sender, envelope.body))
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise DecryptFailed("the decrypted content is malformed") from None
        if isinstance(content, Text) and envelope.kind == "message" and content.message_id != envelope.message_id:
            raise DecryptFailed("the ciphertext belongs to another message")
        return content

    def resend_asked(self, device_id: str, message_ids: list[str]) -> None:
        """A resend request arrived; it is answered by the next :meth:`heal`."""
        self._resend_asked.append((device_id, message_ids))

    async def heal(self) -> None:
        """Ask for every message that did not decrypt, over a new session with its
        sender's device; answer the resend requests that arrived."""
        wanted: dict[str, list[str]] = {}
        for placeholder in self.profile.in_state("undecryptable"):
            wanted.setdefault(placeholder.sender_device, []).append(placeholder.message_id)
        for device_id, message_ids in wanted.items():
            await self._ask_resend(device_id, message_ids[:MAX_RESEND])
        asked, self._resend_asked = self._resend_asked, []
        for device_id, message_ids in asked:
            await self._resend(device_id, message_ids)

    async def _ask_resend(self, device_id: str, message_ids: list[str]) -> None:
        known = self.trust.device(device_id)
        if known is not None:  # else the device is gone: nobody can resend; keep the placeholder
            handle, device = known
            with self.profile.batch():
                self._codec.reset(device)  # whatever session failed, start a new one
            request = encode_content(ResendRequest(message_ids=message_ids))
            with contextlib.suppress(Rejected):  # gone since it was looked up
                await self.send_sealed(self._make_id(), [handle], [device], request, "control")
        with self.profile.batch():
            for message_id in message_ids:
                self.profile.set_state(device_id, message_id, "resend_requested")

    async def _resend(self, device_id: str, message_ids: list[str]) -> None:
        known = self.trust.device(device_id)
        if known is None:
            return
        handle, device = known
        for message_id in message_ids:
            message = self.profile.get_message(self.device_id, message_id)
            # Only to a device the message was sealed for when it was sent: a device added
            # since (perhaps by whoever runs the server) cannot pull old messages.
            if message is None or not self.profile.was_target(message_id, device_id):
                continue
            content = Text(
                to=message.recipients, text=message.text, sent_at_ms=message.sent_at_ms, message_id=message_id
            )
            await self.send_sealed(self._make_id(), [handle], [device], encode_content(content), "control")
