"""Key changes, verification status and safety numbers (no I/O)."""

from __future__ import annotations

from parley.core import trust
from parley.core.trust import DeviceKeys, Status

PHONE = DeviceKeys("d1", "I1" * 21 + "x", "S1" * 21 + "x")
TABLET = DeviceKeys("d2", "I2" * 21 + "x", "S2" * 21 + "x")
IMPOSTOR = DeviceKeys("d1", "I9" * 21 + "x", "S9" * 21 + "x")  # same id, other keys


def test_compare_follows_the_table() -> None:
    assert not trust.compare([], [PHONE]).is_change  # first contact: trust on first use
    assert trust.compare([PHONE], [PHONE, TABLET]).added == ["d2"]
    assert trust.compare([PHONE], [IMPOSTOR]).added == ["d1"]
    removed = trust.compare([PHONE, TABLET], [PHONE])
    assert not removed.is_change and removed.removed == ["d2"]


def test_status_and_holding() -> None:
    assert trust.status(None, [PHONE]) is Status.UNVERIFIED
    assert trust.status([PHONE.identity_key], [PHONE]) is Status.VERIFIED
    assert trust.status([PHONE.identity_key, TABLET.identity_key], [PHONE]) is Status.VERIFIED  # one left
    assert trust.status([PHONE.identity_key], [PHONE, TABLET]) is Status.CHANGED
    assert trust.must_hold(Status.CHANGED, True) and not trust.must_hold(Status.CHANGED, False)
    assert not trust.must_hold(Status.UNVERIFIED, True)


def test_safety_number_is_symmetric_and_covers_every_key() -> None:
    alice = ("tel:+14155550100", [DeviceKeys("a1", "A" * 43, "B" * 43)])
    bob = ("tel:+14155550111", [PHONE])
    number = trust.safety_number(alice, bob)
    assert number == trust.safety_number(bob, alice)
    assert len(number.split()) == 12 and len(trust.normalise_number(number)) == 60
    assert trust.safety_number(alice, ("tel:+14155550111", [PHONE, TABLET])) != number
    assert trust.safety_number(alice, ("tel:+14155550111", [IMPOSTOR])) != number
    # Device order does not matter; only the keys do.
    both = trust.safety_number(alice, ("tel:+14155550111", [PHONE, TABLET]))
    assert both == trust.safety_number(alice, ("tel:+14155550111", [TABLET, PHONE]))
