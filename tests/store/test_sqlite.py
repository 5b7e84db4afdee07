"""What only the SQLite store promises: a file that survives, is private, and group-commits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.core.codes import PendingCode
from parley.store.base import DeviceRecord, NewEnvelope
from parley.store.sqlite import SqliteStore

ALICE = "tel:+14155550100"
BOB = "tel:+14155550199"
CAROL = "tel:+14155550123"
T0 = 1_700_000_000_000


def device(device_id: str, created_at_ms: int = T0) -> DeviceRecord:
    return DeviceRecord(device_id, "", f"{device_id} name", "ab" * 32, created_at_ms)


def envelope(device_id: str, message_id: str) -> NewEnvelope:
    return NewEnvelope(device_id, message_id, "message", "alice", "alice-phone", ALICE, T0, b"ciphertext")


async def submit(store: SqliteStore, message_id: str, *targets: str) -> list[int]:
    result = await store.submit("alice-phone", message_id, [envelope(t, message_id) for t in targets], T0)
    assert not result.duplicate
    return [e.seq for e in result.envelopes]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "parley.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(path))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def with_devices(store: SqliteStore) -> None:
    await store.register_device(ALICE, "alice", device("alice-phone"), 10)
    await store.register_device(ALICE, "alice", device("alice-laptop", T0 + 1), 10)
    await store.register_device(BOB, "bob", device("bob-phone"), 10)


# --- durability -------------------------------------------------------------------------


async def test_everything_survives_close_and_reopen(path: Path) -> None:
    code = PendingCode(CAROL, "register", "h1", T0 + 600_000, 4)
    first = SqliteStore(str(path))
    await first.open()
    await with_devices(first)
    await first.put_code(code)
    acked = await submit(first, "m1", "bob-phone", "alice-laptop")
    kept = await submit(first, "m2", "bob-phone")
    await first.ack("bob-phone", acked[0])
    await first.close()

    second = SqliteStore(str(path))
    await second.open()
    try:
        assert await second.account_for_handle(ALICE) == "alice"
        assert [d.device_id for d in await second.devices_of("alice")] == ["alice-phone", "alice-laptop"]
        assert await second.get_code(CAROL, "register") == code
        page, more = await second.fetch("bob-phone", 0, 10)
        assert ([e.seq for e in page], [e.message_id for e in page], more) == (kept, ["m2"], False)
        assert await second.queued_count("alice-laptop") == 1
        repeat = await second.submit("alice-phone", "m1", [envelope("bob-phone", "m1")], T0)
        assert repeat.duplicate
        assert (await submit(second, "m3", "bob-phone"))[0] > max(acked + kept)
    finally:
        await second.close()


async def test_seqs_are_not_reused_after_reopening_with_empty_mailboxes(path: Path) -> None:
    first = SqliteStore(str(path))
    await first.open()
    await with_devices(first)
    last = (await submit(first, "m1", "bob-phone"))[0]
    await first.ack("bob-phone", last)
    await first.close()

    second = SqliteStore(str(path))
    await second.open()
    try:
        assert (await submit(second, "m2", "bob-phone"))[0] > last
    finally:
        await second.close()


async def test_a_database_from_a_newer_parley_is_refused(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version=99")
    connection.close()
    newer = SqliteStore(str(path))
    with pytest.raises(RuntimeError, match="newer"):
        await newer.open()
    await newer.close()


# --- permissions ------------------------------------------------------------------------


async def test_database_file_is_private_to_its_owner(store: SqliteStore, path: Path) -> None:
    assert mode(path) == 0o600


async def test_missing_data_folder_is_created_private(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "parley"
    nested = SqliteStore(str(folder / "parley.db"))
    await nested.open()
    await nested.close()
    assert mode(folder) == 0o700


async def test_wal_and_shm_files_are_private_from_the_first_open(store: SqliteStore, path: Path) -> None:
    await with_devices(store)  # the WAL now holds data
    companions = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    assert {p.name for p in companions} >= {"parley.db-wal", "parley.db-shm"}
    assert {p.name: mode(p) for p in companions} == {p.name: 0o600 for p in companions}


# --- group commit -----------------------------------------------------------------------


async def test_a_failing_call_rolls_back_alone_and_the_rest_of_its_batch_commits(store: SqliteStore) -> None:
    await with_devices(store)
    # Hold the writer thread so the next four calls queue up and run as one batch.
    entered, gate = threading.Event(), threading.Event()

    def hold(_: sqlite3.Connection) -> None:
        entered.set()
        gate.wait(10)

    holding = asyncio.ensure_future(store._writer.call(hold))
    assert await asyncio.to_thread(entered.wait, 10)
    submitting = asyncio.ensure_future(store.submit("alice-phone", "m1", [envelope("bob-phone", "m1")], T0))
    # A new handle with a taken device id: the account and handle rows go in, then the
    # device row fails, so the whole call must roll back.
    failing = asyncio.ensure_future(store.register_device(CAROL, "carol", device("bob-phone"), 10))
    coding = asyncio.ensure_future(store.put_code(PendingCode(CAROL, "register", "h1", T0, 5)))
    registering = asyncio.ensure_future(store.register_device(CAROL, "carol", device("carol-phone"), 10))
    await asyncio.sleep(0)  # each call queues its work before its first suspension
    assert store._writer._queue.qsize() == 4
    gate.set()
    await holding

    with pytest.raises(sqlite3.IntegrityError):
        await failing
    assert (await submitting).duplicate is False
    await coding
    registered = await registering
    assert registered.account_id == "carol"
    assert registered.created_account is True  # the failed call's account did not survive
    assert (await store.get_device("bob-phone")) == DeviceRecord("bob-phone", "bob", "bob-phone name", "ab" * 32, T0)
    assert await store.queued_count("bob-phone") == 1
    assert await store.get_code(CAROL, "register") is not None
    assert [d.device_id for d in await store.devices_of("carol")] == ["carol-phone"]


async def test_concurrent_submits_all_commit_with_distinct_seqs_in_call_order(store: SqliteStore) -> None:
    await with_devices(store)
    count = 500
    results = await asyncio.gather(
        *(
            store.submit(
                "alice-phone", f"m{i}", [envelope("bob-phone", f"m{i}"), envelope("alice-laptop", f"m{i}")], T0
            )
            for i in range(count)
        )
    )
    assert not any(result.duplicate for result in results)
    all_seqs = [e.seq for result in results for e in result.envelopes]
    assert len(set(all_seqs)) == 2 * count
    assert all_seqs == sorted(all_seqs)  # committed in the order the calls were made
    page, more = await store.fetch("bob-phone", 0, 2 * count)
    assert [e.message_id for e in page] == [f"m{i}" for i in range(count)]
    assert not more
    assert await store.queued_count("alice-laptop") == count


async def test_concurrent_repeats_of_one_message_commit_once(store: SqliteStore) -> None:
    await with_devices(store)
    results = await asyncio.gather(
        *(store.submit("alice-phone", "m1", [envelope("bob-phone", "m1")], T0) for _ in range(50))
    )
    assert [result.duplicate for result in results].count(False) == 1
    assert await store.queued_count("bob-phone") == 1
