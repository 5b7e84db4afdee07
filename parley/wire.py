"""The wire types: every body and frame that crosses the network, defined once.

Server and client both import these. They are frozen ``msgspec`` structs, so a body is
validated (types, sizes, required fields) in the same call that decodes it, where the
bytes arrive. HTTP bodies travel as JSON; WebSocket frames travel as MessagePack binary
frames, because the hot path carries opaque ciphertext and MessagePack carries bytes
without base64 and decodes several times faster. ``docs/protocol.md`` describes the
frames and the connection's states.

Times on the wire are integer milliseconds since the Unix epoch (``*_ms``); durations
are seconds (``*_s``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

import msgspec

# Size bounds. Every list and string that arrives has one; the decoders enforce them.
MAX_BODY_BYTES: Final = 64 * 1024  # one envelope's ciphertext
MAX_LOOKUP_HANDLES: Final = 100
MAX_DEVICES_PER_ACCOUNT: Final = 10
MAX_RECIPIENTS: Final = 32
MAX_ENVELOPES: Final = (MAX_RECIPIENTS + 1) * MAX_DEVICES_PER_ACCOUNT
MAX_HANDLE_CHARS: Final = 320  # the longest e-mail address RFC 5321 allows
MAX_ID_CHARS: Final = 64
MAX_DEVICE_NAME_CHARS: Final = 64
MAX_FETCH: Final = 1000
MAX_SMS_CHARS: Final = 1600  # over ten parts in any coding: sms_text says exactly
MAX_FALLBACK_S: Final = 7 * 86_400
MAX_KEYS_PER_UPLOAD: Final = 100  # one-time keys in one upload
MAX_KEYS_HELD: Final = 100  # one-time keys the server keeps for one device
MAX_CLAIMS: Final = MAX_ENVELOPES  # devices in one key claim
# The largest request or frame: every envelope of a send at full size, plus framing.
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024

Handle = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_HANDLE_CHARS)]
# Ids are chosen by clients (message ids) or by the server (account and device ids);
# either way they are short printable tokens, never free text.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[A-Za-z0-9_.:-]+$")]
Body = Annotated[bytes, msgspec.Meta(max_length=MAX_BODY_BYTES)]
# Public keys are 32 bytes (Curve25519 or Ed25519), signatures 64 bytes (Ed25519), both in
# unpadded base64 as vodozemac writes them. The lengths are checked where bytes arrive;
# that they decode and that signatures verify is checked by ``parley.core.keys``.
PublicKey = Annotated[str, msgspec.Meta(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9+/]+$")]
Signature = Annotated[str, msgspec.Meta(min_length=86, max_length=86, pattern=r"^[A-Za-z0-9+/]+$")]
InboxKey = Annotated[str, msgspec.Meta(max_length=43, pattern=r"^[A-Za-z0-9+/]*$")]  # "" if none
KeyId = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9+/=_-]+$")]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
T = TypeVar("T")


class ErrorCode:
    """The stable error codes a client may branch on."""

    BAD_REQUEST: Final = "bad_request"
    INVALID_HANDLE: Final = "invalid_handle"
    UNAUTHORIZED: Final = "unauthorized"
    NOT_FOUND: Final = "not_found"
    WRONG_CODE: Final = "wrong_code"
    CODE_EXPIRED: Final = "code_expired"
    TOO_MANY_ATTEMPTS: Final = "too_many_attempts"
    RATE_LIMITED: Final = "rate_limited"
    STALE_DEVICES: Final = "stale_devices"
    NOT_ON_PARLEY: Final = "not_on_parley"
    TOO_MANY_DEVICES: Final = "too_many_devices"
    TOO_LARGE: Final = "too_large"
    BAD_KEYS: Final = "bad_keys"  # a key that does not decode, or a signature that does not verify
    TOO_MANY_KEYS: Final = "too_many_keys"
    UNAVAILABLE: Final = "unavailable"
    # The carrier path (SMS).
    NOT_SMS_CAPABLE: Final = "not_sms_capable"  # the number cannot receive SMS
    ON_PARLEY: Final = "on_parley"  # send over Parley; SMS to it only after its window
    NOT_DUE: Final = "not_due"  # the fallback window is still open
    NO_FALLBACK: Final = "no_fallback"  # delivered over Parley already: no SMS needed


class WsClose:
    """WebSocket close codes (4000-4999 are the application's own)."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    PROTOCOL_ERROR: Final = 1002
    TOO_LARGE: Final = 1009
    UNAUTHORIZED: Final = 4001
    REPLACED: Final = 4002  # the same device connected again elsewhere
    BAD_FRAME: Final = 4003
    TOO_SLOW: Final = 4004  # the client stopped acking and the window stayed full


class Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=True):
    """Base of every wire type. Unknown fields are ignored so old peers keep working."""


# --- errors -----------------------------------------------------------------------------


class ErrorInfo(Struct, frozen=True):
    code: str
    message: str
    missing: list[str] | None = None  # stale_devices: devices the send left out
    extra: list[str] | None = None  # stale_devices: devices that are not current
    retry_after_s: float | None = None  # rate_limited


class ErrorBody(Struct, frozen=True):
    error: ErrorInfo


# --- server -----------------------------------------------------------------------------


class ServerInfo(Struct, frozen=True):
    version: str
    carrier: str  # "sim" when the built-in carrier simulator carries SMS
    server_time_ms: int
    max_body_bytes: int = MAX_BODY_BYTES
    max_lookup_handles: int = MAX_LOOKUP_HANDLES
    max_devices_per_account: int = MAX_DEVICES_PER_ACCOUNT
    left_key: str = ""  # Ed25519 key (base64) that signs "left" records; clients pin it


# --- registration -----------------------------------------------------------------------


class CodeRequest(Struct, frozen=True):
    handle: Handle


class CodeSent(Struct, frozen=True):
    handle: str  # normalised
    channel: Literal["sms", "email"]
    expires_in_s: int


class SignedKey(Struct, frozen=True):
    """A one-time or fallback Curve25519 key, signed by its device's Ed25519 key."""

    key_id: KeyId
    key: PublicKey
    signature: Signature


class RegisterRequest(Struct, frozen=True):
    """A new device: the code that proves the handle, and the device's public keys.

    ``signature`` is the device's Ed25519 signature over its identity key (see
    ``parley.core.keys``): the server stores nothing unless every signature verifies.
    """

    handle: Handle
    code: Code
    device_name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DEVICE_NAME_CHARS)]
    identity_key: PublicKey  # Curve25519: what senders encrypt to
    signing_key: PublicKey  # Ed25519: signs the identity key and every one-time key
    signature: Signature
    one_time_keys: Annotated[list[SignedKey], msgspec.Meta(max_length=MAX_KEYS_PER_UPLOAD)] = []
    fallback_key: SignedKey | None = None
    # --- carrier path: the device's Curve25519 key that inbound SMS is sealed to ---
    inbox_key: InboxKey = ""


class Registered(Struct, frozen=True):
    account_id: str
    device_id: str
    handle: str
    credential: str  # "<device_id>.<secret>"; the server keeps only a hash of the secret


class DeviceInfo(Struct, frozen=True):
    device_id: str
    name: str
    created_at_ms: int
    identity_key: str = ""
    signing_key: str = ""


class DeviceList(Struct, frozen=True):
    account_id: str
    handles: list[str]
    devices: list[DeviceInfo]
    # The asking device's registration lease (0: none). Only the device itself sees it:
    # lookups never tell others how recently a device was active.
    lease_expires_ms: int = 0


# --- keys ---------------------------------------------------------------------------


class KeyUpload(Struct, frozen=True):
    """More one-time keys, and optionally a new fallback key (it replaces the old one)."""

    one_time_keys: Annotated[list[SignedKey], msgspec.Meta(max_length=MAX_KEYS_PER_UPLOAD)] = []
    fallback_key: SignedKey | None = None


class KeyCount(Struct, frozen=True):
    one_time_keys: int  # unclaimed one-time keys the server holds for this device
    fallback_key: bool


class ClaimRequest(Struct, frozen=True):
    device_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_CLAIMS)]


class ClaimedKey(Struct, frozen=True):
    """A key to start an Olm session with: a one-time key (handed out once) or, when
    those ran out, the device's fallback key (``fallback`` is true)."""

    device_id: str
    key_id: str
    key: str
    signature: str
    fallback: bool = False


class ClaimResponse(Struct, frozen=True):
    keys: list[ClaimedKey]  # one per device that has a key left, in the order asked


# --- directory --------------------------------------------------------------------------


class LookupRequest(Struct, frozen=True):
    handles: Annotated[list[Handle], msgspec.Meta(min_length=1, max_length=MAX_LOOKUP_HANDLES)]


class LeftRecord(Struct, frozen=True):
    """The handle left Parley at ``left_at_ms``: signed by the server's Ed25519 key over
    ``parley.core.leaving.signed_bytes``. Clients verify it and stop trying Parley."""

    handle: Handle
    left_at_ms: int
    reason: Annotated[str, msgspec.Meta(max_length=32)]
    signature: Signature
    moved_to: Annotated[str, msgspec.Meta(max_length=MAX_HANDLE_CHARS)] = ""


class LookupResult(Struct, frozen=True):
    query: str  # as asked
    handle: str  # normalised ("" when invalid)
    on_parley: bool
    devices: list[DeviceInfo] = []
    ttl_s: int = 0  # how long the answer may be cached
    error: str | None = None  # why the query is not a valid handle
    left: LeftRecord | None = None  # the handle left Parley (then ``on_parley`` is false)


class LookupResponse(Struct, frozen=True):
    results: list[LookupResult]


# --- delivery ---------------------------------------------------------------------------


class OutEnvelope(Struct, frozen=True):
    device_id: Id
    body: Body


class SendRequest(Struct, frozen=True):
    """One message: one envelope per target device, under a client-chosen id.

    The targets are every device of every recipient plus the sender's own other devices.
    Posting the same ``message_id`` again from the same device stores nothing new.
    ``fallback_s``: if no device of a recipient reached by phone number acks within this
    many seconds, the sender's devices are told to send it as SMS (default 30; 0: never).
    """

    message_id: Id
    recipients: Annotated[list[Handle], msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS)]
    envelopes: Annotated[list[OutEnvelope], msgspec.Meta(max_length=MAX_ENVELOPES)]
    fallback_s: Annotated[int, msgspec.Meta(ge=0, le=MAX_FALLBACK_S)] | None = None
    # "control": device-to-device traffic (a resend request, a resent message) that goes
    # to the named devices only; each must be a current device of a recipient or of the
    # sender's account. It makes no "delivered" receipt.
    kind: SendKind = "message"


class SignalRequest(Struct, frozen=True):
    """Ephemeral device-to-device traffic (a typing indicator): relayed at once to those
    of the named devices that are connected, as ``ephemeral`` frames; never stored, never
    acked, gone for a device that is not connected. The devices it may name are those a
    ``control`` send may name. The bodies are sealed like any other."""

    message_id: Id  # names this signal (nothing is kept under it)
    recipients: Annotated[list[Handle], msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS)]
    envelopes: Annotated[list[OutEnvelope], msgspec.Meta(min_length=1, max_length=MAX_ENVELOPES)]


class SignalRelayed(Struct, frozen=True):
    relayed: int  # how many of the named devices were connected (or, with several nodes, handed on)


class SendAccepted(Struct, frozen=True):
    message_id: str
    duplicate: bool = False  # this id was already accepted; nothing new was stored


# "fallback", "sms_status" and "sms" are the carrier path's (see below).
# "ephemeral": a relayed signal (seq 0: never stored, never acked).
EnvelopeKind = Literal["message", "delivered", "control", "fallback", "sms_status", "sms", "ephemeral"]
SendKind = Literal["message", "control"]


class Envelope(Struct, frozen=True):
    """What a device receives: one entry of its mailbox.

    ``seq`` grows with every envelope the server stores, so a device acks "everything up
    to seq N" and resumes after it. ``kind`` is ``"message"`` for a body written by the
    sending device (opaque to the server: a MessagePack :class:`Sealed`), ``"control"``
    for device-to-device traffic (also sealed), and ``"delivered"`` for a receipt the
    server writes when a recipient device acks (``body`` is a MessagePack
    :class:`DeliveryReceipt`). The carrier path adds ``"fallback"`` (:class:`FallbackDue`),
    ``"sms_status"`` (:class:`SmsStatus`) and ``"sms"`` (a :class:`SealedSms`).
    """

    seq: int
    message_id: str
    kind: EnvelopeKind
    sender_account: str
    sender_device: str
    sender_handle: str
    sent_at_ms: int
    body: bytes


class Sealed(Struct, frozen=True):
    """An end-to-end encrypted body, as one device writes it for another.

    The server never decodes it. ``scheme`` names the cipher: ``"olm"`` (a pairwise Olm
    session; ``type`` 0 is a pre-key message that starts a session, 1 a normal one). A
    later ``"megolm"`` scheme for groups names its session in ``session_id``.
    """

    scheme: Literal["olm"]
    type: int
    data: bytes
    session_id: str = ""


class DeliveryReceipt(Struct, frozen=True):
    device_id: str  # the recipient device that acked
    message_ids: list[str]
    at_ms: int


class FetchResponse(Struct, frozen=True):
    envelopes: list[Envelope]
    more: bool  # the page was full: fetch again after the last seq


class AckRequest(Struct, frozen=True):
    up_to: Seq


class AckResponse(Struct, frozen=True):
    removed: int


# --- the carrier path: SMS out, fallback, SMS in ----------------------------------------

SmsText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SMS_CHARS)]
SmsState = Literal["pending", "sent", "delivered", "failed"]


class SmsRequest(Struct, frozen=True):
    """Send ``text`` by SMS from the sender's number, as message ``message_id``.

    To a number not on Parley: straight away, with ``copies`` (envelopes for the sender's
    other devices, as in a send). To a number on Parley: only as the fallback of message
    ``message_id`` once its window has passed (the sender's devices are told). Either way
    once: a repeat answers ``duplicate``.
    """

    message_id: Id
    to: Handle
    text: Annotated[str, msgspec.Meta(max_length=MAX_SMS_CHARS)]
    copies: Annotated[list[OutEnvelope], msgspec.Meta(max_length=MAX_DEVICES_PER_ACCOUNT)] = []
    # A fallback hand-over of a message that went over Parley (its copies did too): when
    # the recipient has left Parley meanwhile, it goes as a direct SMS without copies.
    handover: bool = False


class SmsAccepted(Struct, frozen=True):
    message_id: str
    sms_id: str
    state: SmsState
    duplicate: bool = False


class FallbackDue(Struct, frozen=True):
    """Body of a ``fallback`` envelope: no device of ``recipients`` acked in the window."""

    message_id: str
    recipients: list[str]


class SmsStatus(Struct, frozen=True):
    """Body of an ``sms_status`` envelope: an SMS this account sent moved on."""

    message_id: str
    to: str
    state: SmsState
    at_ms: int
    error: str = ""


class SealedSms(Struct, frozen=True):
    """Body of an ``sms`` envelope: an :class:`InboundSms`, sealed to the device's
    ``inbox_key`` on arrival (vodozemac ``PkEncryption``), so no plaintext is at rest."""

    ephemeral_key: bytes
    mac: bytes
    ciphertext: bytes


class InboundSms(Struct, frozen=True):
    sender: str  # E.164
    to: str  # E.164: this account's number
    text: str
    received_at_ms: int


# --- the carrier simulator (only when the server runs it) --------------------------------


class SimulatedSms(Struct, frozen=True):
    sms_id: str
    sender: str
    to: str
    text: str
    at_ms: int


class HandsetInbox(Struct, frozen=True):
    number: str
    messages: list[SimulatedSms]


class SimEvent(Struct, frozen=True):
    """Simulator: the carrier reports an event for a number (``parley sms event|move``)."""

    kind: Literal["port-out", "sim-change", "recycle", "move"]
    number: Handle


class CarrierEventReport(Struct, frozen=True):
    """A carrier event reported by a gateway deployment (Kannel/SMPP) to the
    authenticated callback. ``event_id`` is unique per event: a replay changes nothing."""

    event_id: Id
    kind: Literal["port-out", "sim-change", "recycle"]
    number: Handle
    at_ms: int


class DeregisterCode(Struct, frozen=True):
    """Ask for a deregistration code, sent by SMS to ``phone``."""

    phone: Handle


class DeregisterRequest(Struct, frozen=True):
    """Confirm a deregistration with the code; optionally say where the person moved."""

    phone: Handle
    code: Code
    moved_to: Annotated[str, msgspec.Meta(max_length=MAX_HANDLE_CHARS)] = ""


class Deregistered(Struct, frozen=True):
    handle: str
    devices_unlinked: int
    left: LeftRecord


class HandsetSend(Struct, frozen=True):
    """An SMS-only handset sends a text (``parley sms send``)."""

    sender: Handle
    to: Handle
    text: SmsText


# --- WebSocket frames -------------------------------------------------------------------
# A tagged union each way: {"type": "send", ...}. See docs/protocol.md for the states.


class Send(SendRequest, tag="send", tag_field="type", frozen=True):
    """Client → server: post a message (the same fields as ``POST /v1/messages``)."""


class Ack(Struct, tag="ack", tag_field="type", frozen=True):
    """Client → server: every envelope with ``seq <= up_to`` is safely stored."""

    up_to: Seq


class Ping(Struct, tag="ping", tag_field="type", frozen=True):
    """Client → server: an application-level heartbeat; answered with ``pong``."""

    client_time_ms: int = 0


class Signal(SignalRequest, tag="signal", tag_field="type", frozen=True):
    """Client → server: relay an ephemeral signal (as ``POST /v1/signals``); no answer."""


class Hello(Struct, tag="hello", tag_field="type", frozen=True):
    """Server → client, first frame: who you are and the server's clock."""

    device_id: str
    account_id: str
    server_time_ms: int


class Deliver(Struct, tag="deliver", tag_field="type", frozen=True):
    """Server → client: envelopes in seq order, never one the device already acked."""

    envelopes: list[Envelope]


class Sent(Struct, tag="sent", tag_field="type", frozen=True):
    """Server → client: the send with this id is committed to every target mailbox."""

    message_id: str
    duplicate: bool = False


class Refused(Struct, tag="refused", tag_field="type", frozen=True):
    """Server → client: the send with this id was not stored, and why."""

    message_id: str
    error: ErrorInfo


class Pong(Struct, tag="pong", tag_field="type", frozen=True):
    client_time_ms: int
    server_time_ms: int


class Ephemeral(Struct, tag="ephemeral", tag_field="type", frozen=True):
    """Server → client: relayed signals (``kind`` "ephemeral", ``seq`` 0); do not ack."""

    envelopes: list[Envelope]


ClientFrame = Send | Ack | Ping | Signal
ServerFrame = Hello | Deliver | Sent | Refused | Pong | Ephemeral


# --- between server nodes, over the broker ------------------------------------------------
# Only with several nodes (``--broker``). The store is the truth: these carry what lets a
# node push at once, and losing one delays a push, never loses an envelope.


class NodeDeliver(Struct, tag="deliver", tag_field="type", frozen=True):
    """To the node holding ``device_id``: these envelopes were committed to its mailbox.

    ``envelopes`` is empty when they were too large to carry: read the mailbox instead."""

    device_id: str
    envelopes: list[Envelope] = []


class NodeKick(Struct, tag="kick", tag_field="type", frozen=True):
    """Close ``device_id``'s connection on every node but ``keep_node`` (it reconnected
    there, or was unlinked when ``keep_node`` is empty)."""

    device_id: str
    keep_node: str = ""


class NodeForget(Struct, tag="forget", tag_field="type", frozen=True):
    """An account's devices or handles changed: drop what the directory cache holds."""

    account_id: str
    handle: str = ""
    from_node: str = ""


NodeFrame = NodeDeliver | NodeKick | NodeForget


# Shared encoders and decoders: building them once is much cheaper than per call.
json_encode = msgspec.json.Encoder().encode
frame_encode = msgspec.msgpack.Encoder().encode
client_frame_decoder: msgspec.msgpack.Decoder[ClientFrame] = msgspec.msgpack.Decoder(ClientFrame)
server_frame_decoder: msgspec.msgpack.Decoder[ServerFrame] = msgspec.msgpack.Decoder(ServerFrame)
receipt_decoder = msgspec.msgpack.Decoder(DeliveryReceipt)
fallback_decoder = msgspec.msgpack.Decoder(FallbackDue)
sms_status_decoder = msgspec.msgpack.Decoder(SmsStatus)
sealed_sms_decoder = msgspec.msgpack.Decoder(SealedSms)
inbound_sms_decoder = msgspec.msgpack.Decoder(InboundSms)
sealed_decoder = msgspec.msgpack.Decoder(Sealed)
node_frame_decoder: msgspec.msgpack.Decoder[NodeFrame] = msgspec.msgpack.Decoder(NodeFrame)


def json_decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    """A JSON decoder that validates into ``kind``."""
    return msgspec.json.Decoder(kind)
