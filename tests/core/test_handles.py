"""Handles: every spelling of one number or address normalises to one string."""

from __future__ import annotations

import pytest

from parley.core.handles import is_phone, normalise, normalise_phone, phone_of
from parley.errors import InvalidHandle, LocalError

SF = "tel:+14155550100"


@pytest.mark.parametrize(
    "raw",
    [
        "+14155550100",
        "+1 (415) 555-0100",
        "+1-415-555-0100",
        "+1 415.555.0100",
        "  +1 415 555 0100  ",
        "tel:+14155550100",
        "tel:+1-415-555-0100",
        "TEL:+1 415 555 0100",
        "Tel:+14155550100",
    ],
)
def test_phone_spellings_normalise_to_one_e164_handle(raw: str) -> None:
    assert normalise(raw) == SF


def test_international_numbers_keep_their_country_code() -> None:
    assert normalise("+44 20 7946 0958") == "tel:+442079460958"
    assert normalise("+49 30 901820") == "tel:+4930901820"


def test_national_number_needs_a_default_region() -> None:
    with pytest.raises(InvalidHandle):
        normalise("(415) 555-0100")
    assert normalise("(415) 555-0100", default_region="US") == SF
    assert normalise("020 7946 0958", default_region="GB") == "tel:+442079460958"


def test_default_region_does_not_override_an_explicit_country_code() -> None:
    assert normalise("+1 415 555 0100", default_region="GB") == SF


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "hello",
        "tel:",
        "+1415555010",  # one digit short
        "+1 415 555 01000",  # one digit long
        "+999 1234 5678",  # no such country code
        "tel:alice@example.com",
    ],
)
def test_invalid_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidHandle):
        normalise(raw)


def test_invalid_handle_is_a_local_error() -> None:
    with pytest.raises(LocalError):
        normalise("not a handle")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "mailto:alice@example.com"),
        ("Alice@Example.COM", "mailto:alice@example.com"),
        ("  alice@example.com ", "mailto:alice@example.com"),
        ("mailto:Bob@Example.org", "mailto:bob@example.org"),
        ("MAILTO:bob@example.org", "mailto:bob@example.org"),
        ("first.last+tag@mail.example.co.uk", "mailto:first.last+tag@mail.example.co.uk"),
    ],
)
def test_email_addresses_are_case_folded_under_mailto(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "alice@",
        "@example.com",
        "alice@example",  # no dot in the domain
        "al ice@example.com",
        "alice@exa_mple.com",
        "mailto:nobody",
        "mailto:",
        "mailto:+14155550100",
    ],
)
def test_invalid_email_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidHandle):
        normalise(raw)


@pytest.mark.parametrize("raw", ["+1 (415) 555-0100", "tel:+442079460958", "Alice@Example.com", "mailto:B@x.org"])
def test_normalising_a_normalised_handle_changes_nothing(raw: str) -> None:
    once = normalise(raw)
    assert normalise(once) == once


def test_normalise_phone_returns_bare_e164() -> None:
    assert normalise_phone("+1 (415) 555-0100") == "+14155550100"
    assert normalise_phone("415 555 0100", "US") == "+14155550100"
    with pytest.raises(InvalidHandle):
        normalise_phone("415 555 0100")


def test_is_phone_and_phone_of() -> None:
    assert is_phone(SF)
    assert not is_phone("mailto:alice@example.com")
    assert phone_of(SF) == "+14155550100"
    with pytest.raises(InvalidHandle):
        phone_of("mailto:alice@example.com")
