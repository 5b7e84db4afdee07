"""Read receipts and read sync through the client SDK against a real server process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parley.client.device import Device, Event, ReadElsewhere, StateChanged
from parley.client.receipts import setting_key
from parley.wire import sealed_decoder
from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


def states(device: Device) -> list[str]:
    return [m.state for m in device.profile.messages() if m.direction == "out"]


async def test_read_on_one_device_clears_the_others_and_tells_the_sender(
    server: ServerProcess, parley_home: Path
) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob_phone = await Device.register(server.url, BOB, "bob-phone")
    bob_laptop = await Device.register(server.url, BOB, "bob-laptop")
    first = await alice.send_text([BOB], "one")
    second = await alice.send_text([BOB], "two")
    await bob_phone.sync()
    await bob_laptop.sync()
    assert [m.text for m in bob_laptop.profile.unread()] == ["one", "two"]
    assert states(alice) == ["sent", "sent"]
    await alice.sync()
    assert states(alice) == ["delivered", "delivered"]

    # The read travels as control envelopes: the server sees no "read", makes no receipt.
    assert await bob_phone.mark_read(ALICE) == [first, second]
    assert bob_phone.profile.unread() == []
    queued = (await alice.api.fetch()).envelopes
    assert [e.kind for e in queued] == ["control"] and sealed_decoder.decode(queued[0].body).scheme == "olm"
    events = await alice.sync()
    assert [e for e in events if isinstance(e, StateChanged)] == [
        StateChanged(first, "read"),
        StateChanged(second, "read"),
    ]
    assert states(alice) == ["read", "read"]
    events = await bob_laptop.sync()
    assert [e for e in events if isinstance(e, ReadElsewhere)] == [ReadElsewhere([first, second])]
    assert bob_laptop.profile.unread() == []
    # Reading again sends nothing; a late "delivered" never moves "read" back.
    assert await bob_laptop.mark_read(ALICE) == []
    assert (await alice.api.fetch()).envelopes == []
    assert alice.profile.advance_state([first], "delivered") == []
    for device in (alice, bob_phone, bob_laptop):
        await device.close()


async def test_no_read_receipt_when_the_reader_turned_them_off(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob_phone = await Device.register(server.url, BOB, "bob-phone")
    bob_laptop = await Device.register(server.url, BOB, "bob-laptop")
    bob_phone.profile.set_many({setting_key(): "off"})
    await alice.send_text([BOB], "private")
    await bob_phone.sync()
    await bob_laptop.sync()
    await alice.sync()
    await bob_phone.mark_read(ALICE)
    assert (await alice.api.fetch()).envelopes == []  # nothing at all reaches Alice
    assert states(alice) == ["delivered"]
    assert bob_laptop.profile.unread() != []
    await bob_laptop.sync()
    assert bob_laptop.profile.unread() == []  # Bob's own devices still stay in step
    # A per-conversation override turns them on for Alice alone.
    bob_phone.profile.set_many({setting_key(f"tel:{ALICE}"): "on"})
    await alice.send_text([BOB], "again")
    await bob_phone.sync()
    await bob_phone.mark_read(ALICE)
    await alice.sync()
    assert states(alice) == ["delivered", "read"]
    for device in (alice, bob_phone, bob_laptop):
        await device.close()


async def test_watch_shows_read_live_and_a_read_lost_to_a_crash_is_sent_later(
    server: ServerProcess, parley_home: Path
) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    seen: list[Event] = []
    stop = asyncio.Event()

    def on_event(event: Event) -> None:
        seen.append(event)
        if isinstance(event, StateChanged) and event.state == "read":
            stop.set()

    message_id = await alice.send_text([BOB], "are you there?")
    await bob.sync()
    watching = asyncio.create_task(alice.watch(on_event, stop, heartbeat_s=1))
    # Bob reads, but "crashes" before telling anyone: the mark stays unsynced.
    bob.profile.mark_read([message_id], bob.now(), synced=False)
    assert len(bob.profile.unsynced_reads()) == 1
    await bob.sync()  # the next sync (or connect, or doctor) sends it
    await asyncio.wait_for(watching, 20)
    assert StateChanged(message_id, "read") in seen
    assert bob.profile.unsynced_reads() == []
    await alice.close()
    await bob.close()


async def test_typing_reaches_connected_devices_only_is_never_stored_and_expires(
    server: ServerProcess, parley_home: Path
) -> None:
    from parley.client.device import Typing
    from parley.client.presence import MAX_TTL_MS

    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    bob_tablet = await Device.register(server.url, BOB, "bob-tablet")
    # Sessions first: a typing indicator never spends a one-time key to start one.
    assert await alice.typing(BOB) == 0
    await alice.send_text([BOB], "hi")
    await bob.sync()
    await bob_tablet.sync()
    seen: list[Event] = []
    stop = asyncio.Event()
    watching = asyncio.create_task(bob.watch(seen.append, stop, heartbeat_s=1))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if await alice.typing(BOB):  # once Bob's phone is connected; the tablet is not
            break
    for _ in range(200):
        if any(isinstance(e, Typing) for e in seen):
            break
        await asyncio.sleep(0.05)
    (typing,) = [e for e in seen if isinstance(e, Typing)]
    assert typing.sender_handle == f"tel:{ALICE}" and typing.conversation == f"tel:{ALICE}"
    assert 0 < typing.until_ms - bob.now() <= MAX_TTL_MS  # it lapses by itself
    stop.set()
    await asyncio.wait_for(watching, 10)
    # Nothing was stored for anyone: not for the watching phone, not for the offline tablet.
    assert (await bob.api.fetch()).envelopes == [] and (await bob_tablet.api.fetch()).envelopes == []
    assert [m.text for m in bob_tablet.profile.messages()] == ["hi"]
    for device in (alice, bob, bob_tablet):
        await device.close()
