"""The client SDK against a real server process: retries, the crash-safe outbox,
exactly-once history, per-sender order, and private files."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from parley.client.device import Device, Event, Received
from parley.client.profile import StoredMessage
from parley.errors import Rejected
from parley.wire import MAX_DEVICES_PER_ACCOUNT, DeviceInfo, Envelope
from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


async def test_profile_files_are_private(server: ServerProcess, parley_home: Path) -> None:
    device = await Device.register(server.url, ALICE, "alice")
    await device.close()
    assert stat.S_IMODE(os.stat(parley_home / "alice").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(parley_home / "alice" / "state.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.data_dir / "parley.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.data_dir / "server.secret").st_mode) == 0o600


async def test_stale_device_list_is_refetched_and_retried(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob_phone = await Device.register(server.url, BOB, "bob-phone")
    real_targets = alice._targets
    calls = 0

    async def outdated_first(recipients: list[str]) -> list[DeviceInfo]:
        # The first lookup is from before Bob registered his tablet: stale by one device.
        nonlocal calls
        calls += 1
        targets = await real_targets(recipients)
        return [t for t in targets if t.device_id == bob_phone.device_id] if calls == 1 else targets

    bob_tablet = await Device.register(server.url, BOB, "bob-tablet")
    alice._targets = outdated_first  # type: ignore[method-assign]
    await alice.send_text([BOB], "to both of Bob's devices")
    assert calls == 2
    for device in (bob_phone, bob_tablet):
        events = await device.sync()
        assert [e.message.text for e in events if isinstance(e, Received)] == ["to both of Bob's devices"]
    for device in (alice, bob_phone, bob_tablet):
        await device.close()


async def test_outbox_left_by_a_crash_is_sent_once(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    # The process "crashed" after writing the outbox and before the server confirmed.
    bob_handle = f"tel:{BOB}"
    alice.profile.add_message(
        StoredMessage(alice.device_id, "crashed-1", bob_handle, "out", alice.handle, [bob_handle], "hi", 1, "sending")
    )
    assert await alice.flush_outbox() == ["crashed-1"]
    assert await alice.flush_outbox() == []  # confirmed now: nothing left to send
    # It had in fact reached the server before the crash: sending again stores nothing new.
    await alice._post(alice.profile.messages()[0])
    events = await bob.sync()
    assert [(e.message.message_id, e.message.text) for e in events if isinstance(e, Received)] == [("crashed-1", "hi")]
    assert [m.state for m in alice.profile.messages()] == ["sent"]
    await alice.close()
    await bob.close()


async def test_an_envelope_delivered_twice_is_shown_once(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    await alice.send_text([BOB], "once")
    page = await bob.api.fetch()
    # Stored, then the ack was lost (a crash): the server delivers the same envelope again.
    first = await bob.accept(page.envelopes)
    again = await bob.accept((await bob.api.fetch()).envelopes)
    assert len(first) == 1 and again == []
    assert [m.text for m in bob.profile.messages()] == ["once"]
    await alice.close()
    await bob.close()


async def test_order_is_kept_per_sender_over_the_websocket(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    received: list[str] = []
    stop = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Received):
            received.append(event.message.text)
            if len(received) == 60:
                stop.set()

    watching = asyncio.create_task(bob.watch(on_event, stop))
    for n in range(60):
        await alice.send_text([BOB], f"message {n}")
    await asyncio.wait_for(watching, 20)
    assert received == [f"message {n}" for n in range(60)]
    await alice.close()
    await bob.close()


async def test_an_account_has_a_bounded_number_of_devices(tmp_path: Path, parley_home: Path) -> None:
    # Without rate limits: three codes a minute per number would stop this test first.
    server = ServerProcess(tmp_path / "data", "--no-rate-limits")
    server.start()
    try:
        devices = [await Device.register(server.url, ALICE, f"alice-{n}") for n in range(MAX_DEVICES_PER_ACCOUNT)]
        with pytest.raises(Rejected) as refused:
            await Device.register(server.url, ALICE, "one-too-many")
        assert refused.value.code == "too_many_devices"
        for device in devices:
            await device.close()
    finally:
        server.stop()


def test_envelope_type_is_shared_with_the_server() -> None:
    # One definition of each wire type: the client imports the server's, not a copy.
    from parley.server import hub

    assert hub.Envelope is Envelope
