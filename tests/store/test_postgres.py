"""What only the PostgreSQL store has to get right: migrations, and several nodes (two
store instances on one database) writing to the same mailboxes at once. The interface's
own rules are checked by the contract suite (tests/store/test_contract.py), which runs
against this store too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from parley.store import pg_migrate
from parley.store.base import DeviceRecord, NewEnvelope
from parley.store.postgres import PostgresStore


def device(device_id: str, at: int = 1) -> DeviceRecord:
    return DeviceRecord(device_id, "", device_id, "hash", at)


def envelope(device_id: str, message_id: str, sender: str = "dS") -> NewEnvelope:
    return NewEnvelope(device_id, message_id, "message", "aS", sender, "tel:+1", 1_000, b"body")


@contextlib.asynccontextmanager
async def opened(url: str, **options: int) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_migrate_creates_the_schema_once_and_reports_the_version(postgres_url: str) -> None:
    assert await pg_migrate.current(postgres_url) is None
    assert await pg_migrate.upgrade(postgres_url) == (None, pg_migrate.head())
    assert await pg_migrate.upgrade(postgres_url) == (pg_migrate.head(), pg_migrate.head())


async def test_several_nodes_migrating_at_once_do_it_once(postgres_url: str) -> None:
    results = await asyncio.gather(*(pg_migrate.upgrade(postgres_url) for _ in range(4)))
    assert sorted(before or "" for before, _ in results) == ["", *[pg_migrate.head()] * 3]


async def test_a_newer_schema_than_this_parley_is_refused(postgres_url: str) -> None:
    await pg_migrate.upgrade(postgres_url)
    connection = await asyncpg.connect(postgres_url)
    await connection.execute("UPDATE alembic_version SET version_num = '9999'")
    await connection.close()
    with pytest.raises(RuntimeError, match="newer than this Parley"):
        await pg_migrate.upgrade(postgres_url)


async def test_two_nodes_writing_one_mailbox_keep_seqs_contiguous_in_commit_order(postgres_url: str) -> None:
    async with opened(postgres_url) as node1, opened(postgres_url) as node2:
        await node1.register_device("tel:+1", "a1", device("dR"), 10)
        await node1.register_device("tel:+2", "a2", device("dS"), 10)

        async def send(node: PostgresStore, name: str, count: int) -> list[int]:
            seqs = []
            for i in range(count):
                done = await asyncio.gather(
                    *(node.submit("dS", f"{name}-{i}-{j}", [envelope("dR", f"{name}-{i}-{j}")], 1) for j in range(8))
                )
                seqs += [s.envelopes[0].seq for s in done]
            return seqs

        seqs1, seqs2 = await asyncio.gather(send(node1, "n1", 20), send(node2, "n2", 20))
        assert sorted(seqs1 + seqs2) == list(range(1, 321))
        page, more = await node2.fetch("dR", 0, 1000)
        assert [e.seq for e in page] == list(range(1, 321)) and not more
        # A node's own sends keep their order (one writer per node).
        assert seqs1 == sorted(seqs1) and seqs2 == sorted(seqs2)


async def test_the_same_message_submitted_on_two_nodes_at_once_is_stored_once(postgres_url: str) -> None:
    async with opened(postgres_url) as node1, opened(postgres_url) as node2:
        await node1.register_device("tel:+1", "a1", device("dR"), 10)
        results = await asyncio.gather(
            *(node.submit("dS", "m1", [envelope("dR", "m1")], 1) for node in (node1, node2, node1, node2))
        )
        assert sorted(r.duplicate for r in results) == [False, True, True, True]
        assert await node1.queued_count("dR") == 1


async def test_registering_one_handle_on_two_nodes_at_once_makes_one_account(postgres_url: str) -> None:
    async with opened(postgres_url) as node1, opened(postgres_url) as node2:
        results = await asyncio.gather(
            *(
                node.register_device("tel:+1", f"a{i}", device(f"d{i}", i), 3)
                for i, node in enumerate([node1, node2] * 3)
            )
        )
        accounts = {r.account_id for r in results if r.account_id}
        assert len(accounts) == 1
        assert sum(1 for r in results if r.account_id) == 3  # the device limit held
        assert len(await node1.devices_of(accounts.pop())) == 3


async def test_removing_a_device_while_another_node_writes_to_it_leaves_nothing_behind(postgres_url: str) -> None:
    async with opened(postgres_url) as node1, opened(postgres_url) as node2:
        await node1.register_device("tel:+1", "a1", device("dR"), 10)
        sends = [node1.submit("dS", f"m{i}", [envelope("dR", f"m{i}")], 1) for i in range(50)]
        removed = node2.remove_device("dR")
        await asyncio.gather(*sends, removed)
        await asyncio.gather(*(node1.submit("dS", f"late{i}", [envelope("dR", f"late{i}")], 1) for i in range(5)))
        assert await node1.queued_count("dR") == 0
        assert await node2.fetch("dR", 0, 100) == ([], False)


async def test_a_failing_call_in_a_batch_fails_alone(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        await store.register_device("tel:+1", "a1", device("dR"), 10)
        good = [store.submit("dS", f"m{i}", [envelope("dR", f"m{i}")], 1) for i in range(5)]
        bad = store.submit("dS", "bad", [envelope("dR", "bad\x00")], 1)  # PostgreSQL refuses NUL in text
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert all(not isinstance(r, BaseException) for r in results[:5])
        assert isinstance(results[5], Exception)
        assert await store.queued_count("dR") == 5


async def test_close_commits_what_was_queued(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    await store.register_device("tel:+1", "a1", device("dR"), 10)
    sends = [asyncio.ensure_future(store.submit("dS", f"m{i}", [envelope("dR", f"m{i}")], 1)) for i in range(20)]
    await asyncio.sleep(0)
    await store.close()
    assert all(not s.exception() for s in sends)
    async with opened(postgres_url) as again:
        assert await again.queued_count("dR") == 20


async def test_acks_batched_together_each_get_what_they_removed(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        await store.register_device("tel:+1", "a1", device("dR"), 10)
        await store.register_device("tel:+2", "a2", device("dQ"), 10)
        for i in range(6):
            await store.submit("dS", f"m{i}", [envelope("dR", f"m{i}"), envelope("dQ", f"m{i}")], 1)
        first, second, other, again = await asyncio.gather(
            store.ack("dR", 3), store.ack("dR", 5), store.ack("dQ", 6), store.ack("dR", 2)
        )
        assert [a.message_id for a in first] == ["m0", "m1", "m2"]
        assert [a.message_id for a in second] == ["m3", "m4"]
        assert [a.message_id for a in other] == [f"m{i}" for i in range(6)]
        assert again == []
        assert await store.queued_count("dR") == 1
