"""Handles: the addresses people are reached at, parsed and normalised once.

A handle is ``tel:+<E.164>`` or ``mailto:<address>``. Everything that stores or compares
handles uses the normalised form, so "+1 (415) 555-0100" and "tel:+14155550100" are the
same person.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

from parley.errors import InvalidHandle

TEL = "tel:"
MAILTO = "mailto:"

# Deliberately loose: the real test of an address is that a code sent to it arrives.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")


# Parsing a number with phonenumbers costs about 100 µs, and every send names its
# recipients: remember recent answers (the function is pure; errors are not cached).
@functools.lru_cache(maxsize=65_536)
def normalise(raw: str, default_region: str | None = None) -> str:
    """Return the normalised handle for ``raw``, or raise :class:`InvalidHandle`.

    Phone numbers need a leading ``+`` unless ``default_region`` (e.g. ``"US"``) says
    which country a national number belongs to.
    """
    text = raw.strip()
    if not text:
        raise InvalidHandle("empty handle")
    lower = text.lower()
    if lower.startswith(MAILTO) or ("@" in text and not lower.startswith(TEL)):
        address = text[len(MAILTO) :] if lower.startswith(MAILTO) else text
        if not _EMAIL.match(address):
            raise InvalidHandle(f"not a valid e-mail address: {address!r}")
        return MAILTO + address.lower()
    number = text[len(TEL) :] if lower.startswith(TEL) else text
    return TEL + normalise_phone(number, default_region)


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """Return ``raw`` as E.164 (``+14155550100``), or raise :class:`InvalidHandle`."""
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidHandle(f"not a phone number: {raw!r} ({error})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidHandle(f"not a valid phone number: {raw!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_phone(handle: str) -> bool:
    return handle.startswith(TEL)


def phone_of(handle: str) -> str:
    """The E.164 number of a normalised ``tel:`` handle."""
    if not handle.startswith(TEL):
        raise InvalidHandle(f"not a phone handle: {handle!r}")
    return handle[len(TEL) :]
