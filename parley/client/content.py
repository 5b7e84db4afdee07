"""What a device puts inside an envelope body, before it is sealed for one device.

The server never reads this: it carries only :class:`parley.wire.Sealed` bodies. Every
personal thing travels here, end to end. A ``Text`` names its own ``message_id``, which
must equal the envelope's (or, in a resend, the id of the message it replaces), so a
server cannot move a ciphertext under another id.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from parley.wire import MAX_RECIPIENTS, Handle, Id, Struct

MAX_TEXT_CHARS = 16_000
MAX_RESEND = 100


class Text(Struct, tag="text", tag_field="type", frozen=True):
    to: Annotated[list[Handle], msgspec.Meta(max_length=MAX_RECIPIENTS)]  # as the sender addressed it
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
    sent_at_ms: int
    message_id: Id


class ResendRequest(Struct, tag="resend", tag_field="type", frozen=True):
    """Control: "I could not decrypt these messages of yours; send them to me again"."""

    message_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_RESEND)]


Content = Text | ResendRequest

encode_content = msgspec.msgpack.Encoder().encode
content_decoder: msgspec.msgpack.Decoder[Content] = msgspec.msgpack.Decoder(Content)
