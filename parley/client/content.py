"""What a device puts inside an envelope body, before it is sealed for one device.

The server never reads this: it carries only :class:`parley.wire.Sealed` bodies. Every
personal thing travels here, end to end. A ``Text`` names its own ``message_id``, which
must equal the envelope's (or, in a resend, the id of the message it replaces), so a
server cannot move a ciphertext under another id.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from parley.wire import MAX_RECIPIENTS, Handle, Id, PublicKey, Struct

MAX_TEXT_CHARS = 16_000
MAX_RESEND = 100
MAX_READ = 500


class Text(Struct, tag="text", tag_field="type", frozen=True):
    to: Annotated[list[Handle], msgspec.Meta(max_length=MAX_RECIPIENTS)]  # as the sender addressed it
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
    sent_at_ms: int
    message_id: Id


class ResendRequest(Struct, tag="resend", tag_field="type", frozen=True):
    """Control: "I could not decrypt these messages of yours; send them to me again"."""

    message_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_RESEND)]


class SasStart(Struct, tag="sas.start", tag_field="type", frozen=True):
    """Control: the first step of a short-authentication-string comparison."""

    txn: Id
    public_key: PublicKey  # this side's ephemeral Curve25519 key for vodozemac's SAS


class SasMac(Struct, tag="sas.mac", tag_field="type", frozen=True):
    """Control: after the person confirmed the emoji match, a MAC (under the SAS secret)
    of the device keys this side sees for its own account."""

    txn: Id
    keys_mac: Annotated[str, msgspec.Meta(max_length=128)]


class Read(Struct, tag="read", tag_field="type", frozen=True):
    """Control: the person read these messages (at ``read_at_ms``). To the senders'
    devices it is a read receipt; to the reader's own other devices it clears their
    unread state. A ``control`` envelope, so the server writes no "delivered" receipt
    and starts no SMS fallback for it, and learns only that a control envelope passed."""

    message_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_READ)]
    read_at_ms: int


class TypingNow(Struct, tag="typing", tag_field="type", frozen=True):
    """Ephemeral: the sender is typing to ``to`` (``active``) or stopped. Relayed, never
    stored; it lapses by itself after ``ttl_ms`` (bounded by the receiver)."""

    to: Annotated[list[Handle], msgspec.Meta(max_length=MAX_RECIPIENTS)]
    active: bool
    ttl_ms: Annotated[int, msgspec.Meta(ge=0)]


Content = Text | ResendRequest | SasStart | SasMac | Read | TypingNow
Verification = SasStart | SasMac

encode_content = msgspec.msgpack.Encoder().encode
content_decoder: msgspec.msgpack.Decoder[Content] = msgspec.msgpack.Decoder(Content)
