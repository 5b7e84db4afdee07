"""The store methods of leaving Parley: one suite, run against every store implementation
(``STORE_FACTORIES``; a new store is done when it passes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from parley.core import fallback as fb
from parley.core.leaving import Left, Overdue, Queued
from parley.store.base import DeviceRecord, NewEnvelope, Store
from tests.store.test_contract import STORE_FACTORIES

BOB = "tel:+14155550111"
T0 = 1_700_000_000_000


@pytest.fixture(params=list(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    implementation = STORE_FACTORIES[request.param](tmp_path, request)
    await implementation.open()
    try:
        yield implementation
    finally:
        await implementation.close()


def device(device_id: str) -> DeviceRecord:
    return DeviceRecord(device_id, "", device_id, "ab" * 32, T0)


def message(device_id: str, message_id: str, sender: str = "alice", kind: str = "message") -> NewEnvelope:
    return NewEnvelope(device_id, message_id, kind, sender, f"{sender}-d", "tel:+1", T0, b"x")  # type: ignore[arg-type]


def left(handle: str = BOB, at: int = T0, moved_to: str = "") -> Left:
    return Left(handle, at, "deregistered", moved_to, "s" * 86)


async def bob_with_two_devices(store: Store) -> str:
    first = await store.register_device(BOB, "bob", device("b1"), 10)
    await store.register_device(BOB, "unused", device("b2"), 10)
    assert first.account_id == "bob"
    return "bob"


async def test_overdue_notes_are_kept_once_and_settled_by_ack(store: Store) -> None:
    note = Overdue("bob", "alice", "m1", T0)
    await store.note_overdue([note, Overdue("bob", "alice", "m1", T0 + 5), Overdue("bob", "dave", "m2", T0 + 1)])
    assert await store.overdue(10) == [note, Overdue("bob", "dave", "m2", T0 + 1)]
    assert await store.overdue(1) == [note]
    await store.settle_fallbacks("bob", [("alice", "m1")])
    assert await store.overdue(10) == [Overdue("bob", "dave", "m2", T0 + 1)]
    await store.settle_fallbacks("carol", [("dave", "m2")])  # another account's ack: no change
    assert len(await store.overdue(10)) == 1


async def test_leave_unlinks_returns_backlog_and_releases_the_handle(store: Store) -> None:
    account = await bob_with_two_devices(store)
    await store.enqueue([message("b1", "m1"), message("b2", "m1"), message("b1", "m2", "dave")])
    await store.enqueue([message("b1", "r1", kind="delivered")])
    await store.submit("alice-d", "m3", [message("b2", "m3")], T0, [fb.Fallback("alice", "m3", account, BOB, T0)])
    await store.note_overdue([Overdue(account, "alice", "m3", T0)])
    departure = await store.leave(BOB, left())
    assert departure.account_id == account
    assert departure.device_ids == ["b1", "b2"]
    assert sorted(departure.backlog, key=lambda q: (q.message_id, q.kind)) == sorted(
        [
            Queued("alice", "m1", "message"),
            Queued("alice", "m1", "message"),
            Queued("dave", "m2", "message"),
            Queued("alice", "r1", "delivered"),
            Queued("alice", "m3", "message"),
        ],
        key=lambda q: (q.message_id, q.kind),
    )
    assert await store.devices_of(account) == []
    assert await store.get_device("b1") is None
    assert await store.account_for_handle(BOB) is None
    assert await store.fetch("b1", 0, 10) == ([], False)
    assert await store.due_fallbacks(T0 + 10, 10) == []
    assert await store.overdue(10) == []
    assert await store.left_record(BOB) == left()


async def test_leave_of_an_unowned_handle_only_stores_the_record(store: Store) -> None:
    departure = await store.leave(BOB, left(moved_to="tel:+14155550199"))
    assert (departure.account_id, departure.device_ids, departure.backlog) == (None, [], [])
    assert await store.left_record(BOB) == left(moved_to="tel:+14155550199")
    await store.leave(BOB, left(at=T0 + 1))  # replaces
    assert await store.left_record(BOB) == left(at=T0 + 1)


async def test_registering_again_makes_a_fresh_account_and_drops_the_left_record(store: Store) -> None:
    await bob_with_two_devices(store)
    await store.leave(BOB, left())
    again = await store.register_device(BOB, "new-owner", device("n1"), 10)
    assert (again.account_id, again.created_account) == ("new-owner", True)
    assert await store.left_record(BOB) is None
    assert [d.device_id for d in await store.devices_of("new-owner")] == ["n1"]
    assert await store.fetch("n1", 0, 10) == ([], False)


async def test_leases_lapse_unless_renewed(store: Store) -> None:
    for name, until in [("b1", T0 + 10), ("b2", T0 + 20), ("b3", 0)]:
        await store.register_device(BOB, "bob", replace(device(name), lease_until_ms=until), 10)
    assert (await store.get_device("b1")).lease_until_ms == T0 + 10  # type: ignore[union-attr]
    assert await store.lapsed_devices(T0 + 9, 10) == []
    assert [d.device_id for d in await store.lapsed_devices(T0 + 20, 10)] == ["b1", "b2"]  # 0: no lease
    assert [d.device_id for d in await store.lapsed_devices(T0 + 20, 1)] == ["b1"]
    assert await store.renew_lease("b1", T0 + 100)
    assert [d.device_id for d in await store.lapsed_devices(T0 + 20, 10)] == ["b2"]
    assert not await store.renew_lease("nobody", T0)


async def test_registration_proves_a_handle_and_proofs_fall_due(store: Store) -> None:
    await store.register_device(BOB, "bob", replace(device("b1"), created_at_ms=T0), 10)
    await store.register_device("tel:+14155550122", "carol", replace(device("c1"), created_at_ms=T0 + 5), 10)
    await store.register_device("mailto:dave@example.com", "dave", device("d1"), 10)
    assert await store.proofs_due(T0, 10) == []
    assert await store.proofs_due(T0 + 1, 10) == [BOB]
    assert await store.proofs_due(T0 + 10, 10) == [BOB, "tel:+14155550122"]  # e-mail handles never
    assert await store.proofs_due(T0 + 10, 1) == [BOB]
    await store.set_proven(BOB, T0 + 20)
    assert await store.proofs_due(T0 + 10, 10) == ["tel:+14155550122"]
    await store.leave("tel:+14155550122", left("tel:+14155550122"))
    assert await store.proofs_due(T0 + 100, 10) == [BOB]  # a released handle is not proven
    await store.register_device(BOB, "unused", replace(device("b2"), created_at_ms=T0 + 200), 10)
    assert await store.proofs_due(T0 + 100, 10) == []  # another registration proves it again
