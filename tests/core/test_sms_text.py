"""GSM-7/UCS-2 encoding and the concatenation split, without I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.core import sms_text


def test_short_gsm7_text_is_one_part_without_header() -> None:
    encoded = sms_text.encode("Hello Carol", 7)
    assert encoded.coding == "gsm7" and encoded.data_coding == 0
    assert [(p.text, p.udh) for p in encoded.parts] == [("Hello Carol", b"")]
    assert sms_text.gsm7_decode(encoded.parts[0].payload) == "Hello Carol"


def test_extension_characters_cost_two_septets() -> None:
    assert len(sms_text.encode("€" * 80, 1).parts) == 1  # 160 septets
    assert len(sms_text.encode("€" * 81, 1).parts) == 2


def test_160_fits_161_splits_into_153_septet_parts() -> None:
    assert len(sms_text.encode("a" * 160, 1).parts) == 1
    parts = sms_text.encode("a" * 161, 9).parts
    assert [len(p.text) for p in parts] == [153, 8]
    assert [p.udh for p in parts] == [bytes([5, 0, 3, 9, 2, 1]), bytes([5, 0, 3, 9, 2, 2])]


def test_non_gsm_text_goes_as_ucs2_70_then_67() -> None:
    assert sms_text.encode("привет", 1).coding == "ucs2"
    assert len(sms_text.encode("я" * 70, 1).parts) == 1
    assert [len(p.text) for p in sms_text.encode("я" * 71, 1).parts] == [67, 4]


def test_surrogate_pairs_and_escapes_are_never_split() -> None:
    parts = sms_text.encode("x" + "😀" * 40, 1).parts  # 81 UTF-16 units
    assert all(len(p.payload) % 2 == 0 for p in parts)
    assert "".join(p.text for p in parts) == "x" + "😀" * 40
    parts = sms_text.encode("a" * 152 + "€" + "a" * 10, 1).parts
    assert parts[0].text == "a" * 152 and parts[1].text == "€" + "a" * 10


def test_empty_and_over_ten_parts_are_errors() -> None:
    with pytest.raises(sms_text.SmsTextError, match="empty"):
        sms_text.encode("", 1)
    assert len(sms_text.encode("a" * 1530, 1).parts) == 10
    with pytest.raises(sms_text.SmsTextError, match="11 SMS parts"):
        sms_text.encode("a" * 1531, 1)


def test_udh_of_a_received_part_is_read_back() -> None:
    part = sms_text.encode("b" * 200, 42).parts[1]
    concat, payload = sms_text.split_udh(part.udh + part.payload)
    assert concat == sms_text.Concat(42, 2, 2)
    assert sms_text.decode_payload(payload, 0) == part.text
    assert sms_text.decode_payload("ж".encode("utf-16-be"), 8) == "ж"


@given(st.text(min_size=1, max_size=600))
def test_parts_always_join_back_to_the_text(text: str) -> None:
    try:
        encoded = sms_text.encode(text, 3)
    except sms_text.SmsTextError:
        return
    assert "".join(p.text for p in encoded.parts) == text
    for part in encoded.parts:
        if encoded.coding == "gsm7":  # the 6-byte header takes 7 septets
            assert len(part.payload) + (7 if part.udh else 0) <= 160
        else:
            assert len(part.payload) + len(part.udh) <= 140
