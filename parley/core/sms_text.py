"""SMS text: GSM-7 or UCS-2, and the split into concatenated parts, once for every gateway.

A text that fits the GSM 03.38 default alphabet (with its extension table) goes as GSM-7:
160 septets in one SMS, 153 per part when concatenated (the 6-byte concatenation header
takes 7 septets). Anything else goes as UCS-2 (UTF-16 code units): 70 in one SMS, 67 per
part. A part never ends between an escape and its character, or between the two halves of
a surrogate pair. At most :data:`MAX_PARTS` parts; a longer text is an error, not a silent
truncation.

Pure: the concatenation reference number is passed in. Gateways take the parts as they
need them: SMPP sends ``udh + payload`` (GSM-7 unpacked, one septet per octet, as SMPP's
default alphabet is carried), Kannel sends each part's text with its ``udh``, and the
simulator only reads the text back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

MAX_PARTS: Final = 10
SINGLE_GSM7: Final = 160
PART_GSM7: Final = 153
SINGLE_UCS2: Final = 70
PART_UCS2: Final = 67
ESCAPE: Final = 0x1B

# GSM 03.38 default alphabet, by septet value.
GSM7_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: these take an escape septet and their own.
GSM7_EXTENSION: Final = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_BASIC_CODE = {char: code for code, char in enumerate(GSM7_BASIC) if code != ESCAPE}
_EXTENSION_CHAR = {code: char for char, code in GSM7_EXTENSION.items()}

Coding = Literal["gsm7", "ucs2"]
# The SMPP data_coding value of each: 0 is the SMSC default alphabet (GSM-7), 8 is UCS-2.
DATA_CODING: Final[dict[Coding, int]] = {"gsm7": 0x00, "ucs2": 0x08}


class SmsTextError(ValueError):
    """A text that cannot go as SMS: empty, or longer than :data:`MAX_PARTS` parts."""


@dataclass(frozen=True)
class SmsPart:
    text: str  # this part's share of the text
    udh: bytes  # the concatenation header (b"" for a single SMS)
    payload: bytes  # GSM-7 unpacked septets, or UTF-16-BE


@dataclass(frozen=True)
class EncodedSms:
    coding: Coding
    parts: list[SmsPart]

    @property
    def data_coding(self) -> int:
        return DATA_CODING[self.coding]


def is_gsm7(text: str) -> bool:
    return all(char in _BASIC_CODE or char in GSM7_EXTENSION for char in text)


def gsm7_septets(text: str) -> bytes:
    """``text`` as GSM-7 septets, unpacked (one per octet)."""
    out = bytearray()
    for char in text:
        if char in GSM7_EXTENSION:
            out += bytes((ESCAPE, GSM7_EXTENSION[char]))
        else:
            out.append(_BASIC_CODE[char])
    return bytes(out)


def gsm7_decode(septets: bytes) -> str:
    """Unpacked GSM-7 septets back to text (unknown codes become "?")."""
    chars: list[str] = []
    escaped = False
    for value in septets:
        if escaped:
            chars.append(_EXTENSION_CHAR.get(value, "?"))
            escaped = False
        elif value == ESCAPE:
            escaped = True
        elif value < len(GSM7_BASIC):
            chars.append(GSM7_BASIC[value])
        else:
            chars.append("?")
    return "".join(chars)


def _units(text: str, coding: Coding) -> list[tuple[str, int]]:
    """Split ``text`` into indivisible units with their cost (septets or UTF-16 units)."""
    if coding == "gsm7":
        return [(char, 2 if char in GSM7_EXTENSION else 1) for char in text]
    return [(char, 2 if ord(char) > 0xFFFF else 1) for char in text]


def encode(text: str, reference: int, max_parts: int = MAX_PARTS) -> EncodedSms:
    """Encode ``text`` for SMS, split into concatenated parts if it needs more than one.

    ``reference`` (0-255) ties the parts of one message together on the handset.
    """
    if not text:
        raise SmsTextError("the text is empty")
    coding: Coding = "gsm7" if is_gsm7(text) else "ucs2"
    single, per_part = (SINGLE_GSM7, PART_GSM7) if coding == "gsm7" else (SINGLE_UCS2, PART_UCS2)
    units = _units(text, coding)
    if sum(cost for _, cost in units) <= single:
        return EncodedSms(coding, [SmsPart(text, b"", _payload(text, coding))])
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for char, cost in units:
        if used + cost > per_part:
            chunks.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += cost
    chunks.append("".join(current))
    if len(chunks) > max_parts:
        raise SmsTextError(f"the text needs {len(chunks)} SMS parts; at most {max_parts} are allowed")
    ref = reference & 0xFF
    total = len(chunks)
    parts = [
        SmsPart(chunk, bytes((0x05, 0x00, 0x03, ref, total, index)), _payload(chunk, coding))
        for index, chunk in enumerate(chunks, start=1)
    ]
    return EncodedSms(coding, parts)


def _payload(text: str, coding: Coding) -> bytes:
    return gsm7_septets(text) if coding == "gsm7" else text.encode("utf-16-be")


def decode_payload(payload: bytes, data_coding: int) -> str:
    """A received payload (without its UDH) as text, from its SMPP data_coding."""
    if data_coding & 0x0F == 0x08:
        return payload.decode("utf-16-be", errors="replace")
    if data_coding & 0x0F in (0x03, 0x04):  # Latin-1, or 8-bit data read as Latin-1
        return payload.decode("latin-1")
    return gsm7_decode(payload)


@dataclass(frozen=True)
class Concat:
    """What a received concatenation header says."""

    reference: int
    total: int
    index: int


def split_udh(message: bytes) -> tuple[Concat | None, bytes]:
    """Separate a received message with a UDH into its concatenation info and payload."""
    if not message:
        return None, message
    length = message[0]
    header, payload = message[1 : 1 + length], message[1 + length :]
    position = 0
    while position + 2 <= len(header):
        iei, size = header[position], header[position + 1]
        data = header[position + 2 : position + 2 + size]
        if iei == 0x00 and size == 3:
            return Concat(data[0], data[1], data[2]), payload
        if iei == 0x08 and size == 4:
            return Concat((data[0] << 8) | data[1], data[2], data[3]), payload
        position += 2 + size
    return None, payload
