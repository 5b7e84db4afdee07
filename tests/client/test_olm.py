"""The Olm codec on its own (no server): claimed keys must be signed by their device,
bodies that do not open raise DecryptFailed, and state lives only in the profile."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import vodozemac

from parley.client.olm import OlmMachine
from parley.client.profile import Profile
from parley.errors import DecryptFailed, ProtocolError
from parley.wire import ClaimedKey, DeviceInfo, Sealed, frame_encode, sealed_decoder


def clock() -> int:
    return time.time_ns() // 1_000_000


def machine(name: str) -> tuple[Profile, OlmMachine, DeviceInfo]:
    profile = Profile.create(name)
    olm = OlmMachine.create(profile, clock)
    return profile, olm, DeviceInfo(name, name, 0, identity_key=olm.identity_key, signing_key=olm.signing_key)


def claim(olm: OlmMachine, device_id: str, n: int = 0) -> ClaimedKey:
    key = olm.prekeys(5, new_fallback=True).one_time_keys[n]
    olm.published()
    return ClaimedKey(device_id, key.key_id, key.key, key.signature)


def test_a_key_the_device_did_not_sign_is_refused(parley_home: Path) -> None:
    _, alice, _ = machine("alice")
    _, bob, bob_info = machine("bob")
    good = claim(bob, "bob")
    forged_key = vodozemac.Curve25519SecretKey().public_key().to_base64()
    with pytest.raises(ProtocolError):
        alice.start_session(bob_info, msgspec.structs.replace(good, key=forged_key))
    with pytest.raises(ProtocolError):  # a one-time key's signature does not pass as a fallback's
        alice.start_session(bob_info, msgspec.structs.replace(good, fallback=True))
    assert alice.needs_session(bob_info)
    alice.start_session(bob_info, good)
    assert not alice.needs_session(bob_info)


def test_bodies_open_once_and_bad_ones_raise(parley_home: Path) -> None:
    alice_profile, alice, alice_info = machine("alice")
    bob_profile, bob, bob_info = machine("bob")
    alice.start_session(bob_info, claim(bob, "bob"))
    body = alice.seal(bob_info, b"hello")
    assert b"hello" not in body
    assert bob.open(alice_info, body) == b"hello"
    sealed = sealed_decoder.decode(body)
    bad_bodies = [
        b"",
        b"\xc1",
        frame_encode(Sealed(scheme="olm", type=7, data=sealed.data)),
        frame_encode(Sealed(scheme="olm", type=1, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))),
        frame_encode(Sealed(scheme="olm", type=0, data=b"\x03" + b"\x00" * 40)),
        body,  # the same ciphertext again: its one-time key is used up
    ]
    for bad in bad_bodies:
        with pytest.raises(DecryptFailed):
            bob.open(alice_info, bad)
    # A stranger's device has no session: its body does not open either.
    _, _, mallory_info = machine("mallory")
    with pytest.raises(DecryptFailed):
        bob.open(mallory_info, alice.seal(bob_info, b"to bob"))
    assert bob.open(alice_info, alice.seal(bob_info, b"still works")) == b"still works"
    # A reset starts a new session for sealing; the old one still opens what was sent on it.
    in_flight = alice.seal(bob_info, b"sent before the reset")
    alice.reset(bob_info)
    assert alice.needs_session(bob_info)
    alice.start_session(bob_info, claim(bob, "bob", 1))
    assert bob.open(alice_info, alice.seal(bob_info, b"new session")) == b"new session"
    assert bob.open(alice_info, in_flight) == b"sent before the reset"
    alice_profile.close()
    bob_profile.close()
