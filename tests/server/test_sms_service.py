"""The SMS service in process, on a fake clock, over the simulator and a real SQLite store:
retry with backoff through an outage, nothing lost across a restart, one SMS however many
devices hand it over at once, inbound SMS sealed per device with no plaintext at rest."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import vodozemac

from parley.carrier.base import CarrierSms
from parley.carrier.simulator import CarrierSimulator
from parley.core import fallback as fb
from parley.core.ratelimit import Rate
from parley.errors import ApiError
from parley.server.directory import Directory
from parley.server.hub import Hub
from parley.server.keys import KeyDirectory
from parley.server.limits import Limiter
from parley.server.sms import SmsService
from parley.store.base import DeviceRecord, Store
from parley.store.sqlite import SqliteStore
from parley.wire import (
    OutEnvelope,
    SendRequest,
    SmsRequest,
    inbound_sms_decoder,
    sealed_sms_decoder,
    sms_status_decoder,
)

ALICE = "+14155550100"
BOB = "+14155550111"
CAROL = "+14155550122"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class World:
    store: Store
    clock: Clock
    simulator: CarrierSimulator
    directory: Directory
    hub: Hub
    service: SmsService
    devices: dict[str, DeviceRecord]
    keys: dict[str, vodozemac.Curve25519SecretKey]


_ids = itertools.count()


def make_id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


async def build(path: Path, clock: Clock, register: bool = True) -> World:
    store = SqliteStore(str(path))
    await store.open()
    simulator = CarrierSimulator(clock, lambda: make_id("sim"))
    limiter = Limiter(clock, enabled=False)
    directory = Directory(store, simulator, limiter, KeyDirectory(store, limiter), b"s" * 32, clock, make_id, "Parley")
    hub = Hub(store, directory, clock)
    service = SmsService(store, directory, hub, simulator, clock, make_id)
    await simulator.start(service)  # the loops are driven by hand: send_due(), sweep()
    devices: dict[str, DeviceRecord] = {}
    keys: dict[str, vodozemac.Curve25519SecretKey] = {}
    if register:
        for name, phone in [("alice-phone", ALICE), ("alice-laptop", ALICE), ("bob", BOB)]:
            key = vodozemac.Curve25519SecretKey()
            record = DeviceRecord(name, "", name, "h", clock(), inbox_key=key.public_key().to_base64())
            await store.register_device(f"tel:{phone}", f"acct-{phone}", record, 10)
            devices[name] = (await store.get_device(name)) or record
            keys[name] = key
    return World(store, clock, simulator, directory, hub, service, devices, keys)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    built = await build(tmp_path / "parley.db", Clock())
    yield built
    await built.store.close()


async def send_to_bob(world: World, message_id: str, window_s: int) -> None:
    envelopes = [OutEnvelope("bob", b"x"), OutEnvelope("alice-laptop", b"x")]
    request = SendRequest(message_id=message_id, recipients=[BOB], envelopes=envelopes, fallback_s=window_s)
    await world.hub.send(world.devices["alice-phone"], request)


def texts(world: World, number: str) -> list[str]:
    return [s.text for s in world.simulator.inbox(number) if "Parley code" not in s.text]


async def test_outage_retries_with_backoff_then_sends_once(world: World) -> None:
    direct = SmsRequest(message_id="m1", to=CAROL, text="Hi Carol", copies=[OutEnvelope("alice-laptop", b"copy")])
    world.simulator.outage = True
    accepted = await world.service.submit(world.devices["alice-phone"], direct)
    assert accepted.state == "pending"
    assert await world.service.send_due() == 1
    item = await world.store.find_sms(sms_id=accepted.sms_id)
    assert item is not None and (item.state, item.attempts, item.next_attempt_ms) == (
        fb.SmsState.PENDING, 1, world.clock.now + 1000,
    )  # fmt: skip
    assert await world.service.send_due() == 0  # not due yet
    world.clock.now += 1000
    assert await world.service.send_due() == 1
    world.simulator.outage = False
    world.clock.now += 2000
    assert await world.service.send_due() == 1
    await asyncio.sleep(0.05)  # the simulator's delivery report
    item = await world.store.find_sms(sms_id=accepted.sms_id)
    assert item is not None and (item.state, item.attempts, item.text) == (fb.SmsState.DELIVERED, 3, "")
    assert texts(world, CAROL) == ["Hi Carol"]
    # Every device of Alice's account saw the states, in order.
    mailbox, _ = await world.store.fetch("alice-laptop", 0, 100)
    states = [sms_status_decoder.decode(e.body).state for e in mailbox if e.kind == "sms_status"]
    assert states == ["pending", "sent", "delivered"]
    assert [e.body for e in mailbox if e.kind == "message"] == [b"copy"]


async def test_sms_submits_are_rate_limited_per_account(world: World) -> None:
    limited = SmsService(
        world.store,
        world.directory,
        world.hub,
        world.simulator,
        world.clock,
        make_id,
        Limiter(world.clock, {"sms:account": Rate(burst=2, per_second=0.001)}),
    )
    sender = world.devices["alice-phone"]
    for message_id in ("m1", "m2"):
        await limited.submit(sender, SmsRequest(message_id, CAROL, "x", [OutEnvelope("alice-laptop", b"")]))
    with pytest.raises(ApiError) as refused:
        await limited.submit(sender, SmsRequest("m3", CAROL, "x", [OutEnvelope("alice-laptop", b"")]))
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")


async def test_rejected_sms_fails_visibly(world: World) -> None:
    world.simulator.reject = True
    accepted = await world.service.submit(
        world.devices["alice-phone"], SmsRequest("m1", CAROL, "x", [OutEnvelope("alice-laptop", b"")])
    )
    await world.service.send_due()
    item = await world.store.find_sms(sms_id=accepted.sms_id)
    assert item is not None and item.state is fb.SmsState.FAILED and item.error


async def test_pending_sms_and_due_fallbacks_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = await build(tmp_path / "p.db", clock)
    first.simulator.outage = True
    await first.service.submit(
        first.devices["alice-phone"], SmsRequest("m1", CAROL, "kept", [OutEnvelope("alice-laptop", b"")])
    )
    await first.service.send_due()
    await send_to_bob(first, "m2", 2)
    await first.store.close()  # the server stops with an SMS pending and a window open
    clock.now += 10_000
    second = await build(tmp_path / "p.db", clock, register=False)
    try:
        assert await second.service.send_due() == 1
        assert texts(second, CAROL) == ["kept"]
        assert await second.service.sweep() == 1  # the window passed while it was down
        mailbox, _ = await second.store.fetch("alice-laptop", 0, 100)
        assert [e.message_id for e in mailbox if e.kind == "fallback"] == ["m2"]
    finally:
        await second.store.close()


async def test_fallback_sms_goes_once_however_many_devices_hand_it_over(world: World) -> None:
    await send_to_bob(world, "m1", 2)
    assert await world.service.sweep() == 0
    world.clock.now += 2000
    assert await world.service.sweep() == 1
    assert await world.service.sweep() == 0  # told once
    request = SmsRequest(message_id="m1", to=BOB, text="Bob?")
    handovers = [world.service.submit(world.devices[d], request) for d in ("alice-phone", "alice-laptop") * 3]
    results = await asyncio.gather(*handovers)
    assert sorted(r.duplicate for r in results) == [False] + [True] * 5
    assert len({r.sms_id for r in results}) == 1
    await world.service.send_due()
    await world.service.send_due()
    # Bob's device acks late: no second SMS, and no new watch from the ack.
    fetched, _ = await world.store.fetch("bob", 0, 10)
    await world.hub.ack(world.devices["bob"], fetched[-1].seq)
    world.clock.now += 60_000
    assert await world.service.sweep() == 0
    await world.service.send_due()
    assert texts(world, BOB) == ["Bob?"]


async def test_ack_within_the_window_means_no_sms(world: World) -> None:
    await send_to_bob(world, "m1", 2)
    fetched, _ = await world.store.fetch("bob", 0, 10)
    await world.hub.ack(world.devices["bob"], fetched[-1].seq)
    world.clock.now += 5000
    assert await world.service.sweep() == 0
    with pytest.raises(Exception, match="needs no SMS"):
        await world.service.submit(world.devices["alice-phone"], SmsRequest("m1", BOB, "Bob?"))


async def test_inbound_sms_is_sealed_to_each_device_and_never_stored_in_clear(world: World, tmp_path: Path) -> None:
    assert await world.service.inbound(CarrierSms("c1", CAROL, ALICE, "secret words", world.clock()))
    assert not await world.service.inbound(CarrierSms("c2", CAROL, "+14155550199", "to nobody", world.clock()))
    for name in ("alice-phone", "alice-laptop"):
        [envelope] = (await world.store.fetch(name, 0, 10))[0]
        assert (envelope.kind, envelope.sender_handle) == ("sms", f"tel:{CAROL}")
        sealed = sealed_sms_decoder.decode(envelope.body)
        inbox = vodozemac.PkDecryption.from_key(world.keys[name])
        opened = inbound_sms_decoder.decode(
            inbox.decrypt(vodozemac.Message(sealed.ciphertext, sealed.mac, sealed.ephemeral_key))
        )
        assert (opened.sender, opened.to, opened.text) == (CAROL, ALICE, "secret words")
    database = sqlite3.connect(tmp_path / "parley.db")
    try:
        dump = "\n".join(database.iterdump())
    finally:
        database.close()
    assert "secret words" not in dump
