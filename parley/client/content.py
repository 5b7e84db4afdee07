"""What a message says: the plaintext a sending device puts inside an envelope body.

The server never reads this; it carries the body as opaque bytes. The codec in
:mod:`parley.client.codec` turns content into a body for one target device and back.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from parley.wire import MAX_RECIPIENTS, Handle, Struct

MAX_TEXT_CHARS = 16_000


class Text(Struct, tag="text", tag_field="type", frozen=True):
    to: Annotated[list[Handle], msgspec.Meta(max_length=MAX_RECIPIENTS)]  # as the sender addressed it
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
    sent_at_ms: int


Content = Text
ContentKind = Literal["text"]

encode_content = msgspec.msgpack.Encoder().encode
content_decoder: msgspec.msgpack.Decoder[Content] = msgspec.msgpack.Decoder(Content)
