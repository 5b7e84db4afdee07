"""The device's side of the carrier path, apart from the rest of the device.

* :func:`sms_route`: does a message go by SMS now (the routing table of
  ``parley.core.fallback``), or can it not go at all?
* :class:`SmsHandover`: hands a message to the server's SMS outbox, either straight away
  (with copies for this account's other devices) or as the fallback the server asked
  for; the server queues it once, whichever devices hand it over.
* :func:`accept_carrier`: the carrier path's envelopes as they arrive (fallback notices,
  SMS status, inbound SMS).
* :func:`new_inbox_key` and :func:`open_sealed_sms`: the key pair inbound SMS are sealed
  to, and opening one (vodozemac ``PkDecryption``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import vodozemac

from parley.client.api import ServerApi
from parley.client.events import Event, Received, StateChanged, Unreadable
from parley.client.profile import Profile, StoredMessage, conversation_key
from parley.core import fallback, handles, sms_text
from parley.errors import Rejected, StaleDevices, UsageError
from parley.wire import (
    DeviceInfo,
    Envelope,
    InboundSms,
    LookupResult,
    OutEnvelope,
    SmsRequest,
    fallback_decoder,
    inbound_sms_decoder,
    sealed_sms_decoder,
    sms_status_decoder,
)

ATTEMPTS = 3


def sms_route(results: list[LookupResult], text: str) -> bool:
    """True if a message to these lookup results goes by SMS now; raise if it cannot go."""
    off = [r for r in results if not r.on_parley]
    if not off:
        return False
    for result in off:
        phone = handles.is_phone(result.handle)
        capable = phone and fallback.sms_capable(handles.phone_of(result.handle))
        route = fallback.route(False, phone, capable)
        if route is fallback.Route.UNREACHABLE:
            raise UsageError(f"{result.handle or result.query} is not on Parley and is not a phone number")
        if route is fallback.Route.NOT_SMS_CAPABLE:
            raise UsageError(f"{result.handle} is not on Parley and cannot receive SMS")
    if len(results) > 1:
        raise UsageError("a group with people who are not on Parley cannot be sent to yet; send to them alone")
    try:
        sms_text.encode(text, 0)
    except sms_text.SmsTextError as error:
        raise UsageError(f"too long for SMS: {error}") from None
    return True


class SmsHandover:
    def __init__(
        self,
        api: ServerApi,
        profile: Profile,
        other_devices: Callable[[], Awaitable[list[DeviceInfo]]],
        seal_copies: Callable[[list[DeviceInfo], StoredMessage], Awaitable[list[OutEnvelope]]],
    ) -> None:
        self._api = api
        self._profile = profile
        self._other_devices = other_devices
        self._seal_copies = seal_copies

    async def post(self, message: StoredMessage, to: str, copies: bool) -> str | None:
        """Hand ``message`` to the server's SMS outbox; return its state now
        ("sms_pending", ...), or None if the server says no SMS is due."""
        envelopes: list[OutEnvelope] = []
        for _ in range(ATTEMPTS):
            if copies:
                envelopes = await self._seal_copies(await self._other_devices(), message)
            request = SmsRequest(
                message_id=message.message_id, to=to, text=message.text, copies=envelopes, handover=not copies
            )
            try:
                accepted = await self._api.send_sms(request)
            except StaleDevices:
                continue  # a device of ours came or went: look again
            except Rejected as error:
                if error.code in ("no_fallback", "not_due"):
                    return None
                raise
            state = "sms_" + accepted.state
            self._profile.advance_state([message.message_id], state)
            return state
        raise Rejected("stale_devices", "this account's devices kept changing; try again")

    async def flush(self) -> list[tuple[str, str]]:
        """Hand over every message whose fallback window passed (the server said so);
        return (message id, its state now) for each."""
        handed = []
        for message in self._profile.sms_due():
            state = None
            for to in message.recipients:
                if handles.is_phone(to):
                    state = await self.post(message, to, copies=False) or state
            if state is None:
                state = "delivered"  # delivered over Parley after all: no SMS
                self._profile.set_out_state(message.message_id, state)
            handed.append((message.message_id, state))
        return handed


def accept_carrier(profile: Profile, envelope: Envelope) -> list[Event]:
    """The carrier path's envelopes: fallback notices, SMS status, inbound SMS."""
    try:
        if envelope.kind == "fallback":
            due = fallback_decoder.decode(envelope.body)
            moved = profile.advance_state([due.message_id], "sms_due")
            return [StateChanged(message_id, "sms_due") for message_id in moved]
        if envelope.kind == "sms_status":
            status = sms_status_decoder.decode(envelope.body)
            moved = profile.advance_state([status.message_id], "sms_" + status.state)
            return [StateChanged(message_id, "sms_" + status.state) for message_id in moved]
        sms = open_sealed_sms(profile.get("inbox_secret"), envelope.body)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
        return [Unreadable(envelope.sender_handle, envelope.message_id, str(error))]
    sender = handles.TEL + sms.sender
    message = StoredMessage(
        sender_device=envelope.sender_device,
        message_id=envelope.message_id,
        conversation=conversation_key({sender}),
        direction="in",
        sender_handle=sender,
        recipients=[profile.require("handle")],
        text=sms.text,
        sent_at_ms=sms.received_at_ms,
        state="received_sms",
    )
    return [Received(message)] if profile.add_message(message) else []


def new_inbox_key() -> tuple[str, str]:
    """A fresh Curve25519 key pair for inbound SMS: (public, secret), unpadded base64."""
    secret = vodozemac.Curve25519SecretKey()
    return secret.public_key().to_base64(), secret.to_base64()


def open_sealed_sms(secret: str | None, body: bytes) -> InboundSms:
    """Open an ``sms`` envelope's body with this device's inbox secret, or raise ValueError."""
    if secret is None:
        raise ValueError("this device has no inbox key (registered before SMS support)")
    try:
        sealed = sealed_sms_decoder.decode(body)
        inbox = vodozemac.PkDecryption.from_key(vodozemac.Curve25519SecretKey.from_base64(secret))
        plaintext = inbox.decrypt(vodozemac.Message(sealed.ciphertext, sealed.mac, sealed.ephemeral_key))
        return inbound_sms_decoder.decode(bytes(plaintext))
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"a malformed sealed SMS: {error}") from None
    except Exception as error:  # vodozemac's errors share no base class
        raise ValueError(f"cannot open a sealed SMS: {type(error).__name__}") from None
