"""End-to-end encryption through the client SDK against a real server process: sessions
that survive restarts, one-time key exhaustion, key changes, verification and holds,
healing by resend, replays and tampering."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
import vodozemac

from parley.client.content import ResendRequest, encode_content
from parley.client.device import Device, Received, Unreadable
from parley.client.profile import COULD_NOT_DECRYPT
from parley.client.sas import Shown, verify_by_sas
from parley.core import trust
from parley.errors import UsageError
from parley.wire import Envelope, Sealed, frame_encode, sealed_decoder
from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


def texts(events: list[object]) -> list[str]:
    return [e.message.text for e in events if isinstance(e, Received)]


async def test_bodies_are_sealed_and_sessions_survive_restarts(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    # Keys at rest: pickles encrypted under a private 32-byte key file.
    key_file = parley_home / "alice" / "pickle.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    pickled = alice.profile.require("olm_account")
    assert alice.olm.identity_key not in pickled and alice.olm.signing_key not in pickled
    with pytest.raises(vodozemac.PickleException):
        vodozemac.Account.from_pickle(pickled, bytes(32))
    await alice.send_text([BOB], "first secret")
    page = await bob.api.fetch()
    body = page.envelopes[0].body
    assert b"first secret" not in body and sealed_decoder.decode(body).type == 0  # a pre-key message
    assert texts(await bob.sync()) == ["first secret"]
    await bob.send_text([ALICE], "reply")
    assert texts(await alice.sync()) == ["reply"]
    await alice.close()
    await bob.close()
    # Both restart: the sessions come back from the (encrypted) profile, no new claim.
    alice, bob = Device.open("alice"), Device.open("bob")
    before = (await bob.api.key_count()).one_time_keys
    await alice.send_text([BOB], "after restart")
    (message,) = [e for e in (await bob.api.fetch()).envelopes if e.kind == "message"]
    assert sealed_decoder.decode(message.body).type == 1  # a normal message
    assert texts(await bob.sync()) == ["after restart"]
    assert (await bob.api.key_count()).one_time_keys == before
    await alice.close()
    await bob.close()


async def test_exhausted_one_time_keys_fall_back_then_replenish(server: ServerProcess, parley_home: Path) -> None:
    bob = await Device.register(server.url, BOB, "bob")
    alice = await Device.register(server.url, ALICE, "alice")
    held = (await bob.api.key_count()).one_time_keys
    for _ in range(held):  # someone drains Bob's one-time keys
        (key,) = (await alice.api.claim_keys([bob.device_id])).keys
        assert not key.fallback
    (fallback,) = (await alice.api.claim_keys([bob.device_id])).keys
    assert fallback.fallback
    await alice.send_text([BOB], "via the fallback key")
    assert texts(await bob.sync()) == ["via the fallback key"]
    assert (await bob.api.key_count()).one_time_keys > 0  # sync replenished them
    await alice.close()
    await bob.close()


async def test_new_device_of_a_contact_shows_a_notice(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    await alice.send_text([BOB], "hi")
    assert [m.direction for m in alice.profile.messages(f"tel:{BOB}")] == ["out"]  # first contact: no notice
    tablet = await Device.register(server.url, BOB, "bob-tablet")
    await alice.send_text([BOB], "hi again")
    notices = [m for m in alice.profile.messages(f"tel:{BOB}") if m.direction == "notice"]
    assert len(notices) == 1 and tablet.device_id in notices[0].text and "safety number" in notices[0].text
    assert texts(await tablet.sync()) == ["hi again"]
    # A new device on one's own account is news too: it gets every sent copy.
    laptop = await Device.register(server.url, ALICE, "alice-laptop")
    await alice.send_text([BOB], "from the phone")
    (own,) = [m for m in alice.profile.messages(f"tel:{ALICE}") if m.direction == "notice"]
    assert laptop.device_id in own.text and "your account" in own.text
    for device in (alice, bob, tablet, laptop):
        await device.close()


async def test_verified_contact_key_change_holds_until_verified_again(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    number, keys = await alice.safety_number(BOB)
    bob_number, _ = await bob.safety_number(ALICE)
    assert number == bob_number and len(trust.normalise_number(number)) == 60
    await alice.mark_verified(BOB, keys)
    assert alice.trust.status(f"tel:{BOB}") is trust.Status.VERIFIED
    tablet = await Device.register(server.url, BOB, "bob-tablet")
    held_id = await alice.send_text([BOB], "wait for it")
    assert alice.profile.outbox()[0].state == "held"
    assert await bob.sync() == []  # nothing left Alice's device
    new_number, new_keys = await alice.safety_number(BOB)
    assert new_number != number
    assert await alice.mark_verified(BOB, new_keys) == [held_id]
    assert texts(await bob.sync()) == ["wait for it"] and texts(await tablet.sync()) == ["wait for it"]
    # Holding can be turned off: then a key change only shows the notice.
    alice.profile.set_many({"hold_on_key_change": "off"})
    third = await Device.register(server.url, BOB, "bob-third")
    await alice.send_text([BOB], "not held")
    assert texts(await third.sync()) == ["not held"]
    for device in (alice, bob, tablet, third):
        await device.close()


async def test_lost_session_is_healed_by_a_resend(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    await alice.send_text([BOB], "one")
    assert texts(await bob.sync()) == ["one"]
    # Bob's sessions are lost (a restored backup): Alice's next message cannot be opened.
    bob.profile.db.execute("DELETE FROM olm_sessions")
    await bob.close()
    bob = Device.open("bob")
    lost_id = await alice.send_text([BOB], "two")
    events = await bob.sync()
    assert [type(e) for e in events] == [Unreadable]
    placeholder = bob.profile.get_message(alice.device_id, lost_id)
    assert placeholder is not None and placeholder.text == COULD_NOT_DECRYPT
    assert placeholder.state == "resend_requested"
    await alice.sync()  # Alice's device answers the request over the new session
    events = await bob.sync()
    assert texts(events) == ["two"]
    history = [(m.message_id, m.text) for m in bob.profile.messages() if m.direction == "in"]
    assert history[-1] == (lost_id, "two") and len(history) == 2  # in place of the placeholder
    await alice.send_text([BOB], "three")
    assert texts(await bob.sync()) == ["three"]
    await alice.close()
    await bob.close()


async def test_replays_show_once_and_tampering_is_rejected(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    await alice.send_text([BOB], "only once")
    (envelope,) = (await bob.api.fetch()).envelopes
    assert texts(await bob.accept([envelope])) == ["only once"]
    assert await bob.accept([envelope]) == []  # replayed: shown once
    sealed = sealed_decoder.decode(envelope.body)
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1

    def forged(message_id: str, body: bytes) -> Envelope:
        return msgspec.structs.replace(envelope, message_id=message_id, body=body)

    tampered = forged("tampered", frame_encode(Sealed(scheme="olm", type=sealed.type, data=bytes(flipped))))
    garbage = forged("garbage", b"\x00not msgpack at all")
    events = await bob.accept([tampered, garbage])
    assert [type(e) for e in events] == [Unreadable, Unreadable]
    assert [m.text for m in bob.profile.messages()] == ["only once", COULD_NOT_DECRYPT, COULD_NOT_DECRYPT]
    # The session was not harmed: the next real message opens.
    await alice.send_text([BOB], "still fine")
    assert "still fine" in texts(await bob.sync())
    await alice.close()
    await bob.close()


async def test_a_device_added_later_cannot_pull_old_messages(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    old_id = await alice.send_text([BOB], "before the tablet")
    assert texts(await bob.sync()) == ["before the tablet"]
    # A device that joins Bob's account later (his, or one the server's operator added)
    # asks Alice's device to "resend" the old message.
    tablet = await Device.register(server.url, BOB, "bob-tablet")
    (result,) = await tablet.lookup([ALICE])
    request = encode_content(ResendRequest(message_ids=[old_id]))
    await tablet.channel.send_sealed("pull-1", [ALICE], result.devices, request, "control")
    await alice.sync()
    assert await tablet.sync() == []  # refused: the tablet was never a target of it
    for device in (alice, bob, tablet):
        await device.close()


async def test_sas_emoji_comparison_verifies_both_sides(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    seen: dict[str, Shown] = {}

    def confirm_as(name: str) -> Callable[[Shown], Awaitable[bool]]:
        async def confirm(shown: Shown) -> bool:
            seen[name] = shown
            return True

        return confirm

    verified = await asyncio.gather(
        verify_by_sas(alice, BOB, confirm_as("alice"), timeout_s=20, poll_s=0.1),
        verify_by_sas(bob, ALICE, confirm_as("bob"), timeout_s=20, poll_s=0.1),
    )
    assert seen["alice"] == seen["bob"] and len(seen["alice"].emoji) == 7
    assert [k.device_id for k in verified[0]] == [bob.device_id]
    assert alice.trust.status(f"tel:{BOB}") is trust.Status.VERIFIED
    assert bob.trust.status(f"tel:{ALICE}") is trust.Status.VERIFIED

    async def says_no(shown: Shown) -> bool:
        return False

    refused = await asyncio.gather(
        verify_by_sas(alice, BOB, says_no, timeout_s=5, poll_s=0.1),
        verify_by_sas(bob, ALICE, says_no, timeout_s=5, poll_s=0.1),
        return_exceptions=True,
    )
    assert [type(r) for r in refused] == [UsageError, UsageError]
    await alice.close()
    await bob.close()
