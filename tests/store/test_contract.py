"""The store contract: one suite, run against every Store implementation.

A new store is done when this file passes against it. Each rule in
``parley/store/base.py`` has tests here; so does every method of the protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from parley.core.codes import PendingCode
from parley.core.receipts import AckedEnvelope
from parley.store.base import DeviceRecord, NewEnvelope, Registration, Store, Submitted
from parley.store.memory import MemoryStore
from parley.store.postgres import PostgresStore
from parley.store.sqlite import SqliteStore
from parley.wire import Envelope, EnvelopeKind

# Every implementation, by name. A factory gets a private temporary folder, and the
# test's request to ask for fixtures it needs: PostgreSQL gets a fresh database of its own
# (``postgres_url`` skips, or fails in CI, when no server runs).
STORE_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Store]] = {
    "memory": lambda tmp_path, request: MemoryStore(),
    "sqlite": lambda tmp_path, request: SqliteStore(str(tmp_path / "parley.db")),
    "postgresql": lambda tmp_path, request: PostgresStore(request.getfixturevalue("postgres_url")),
}


@pytest.fixture(params=list(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    implementation = STORE_FACTORIES[request.param](tmp_path, request)
    await implementation.open()
    try:
        yield implementation
    finally:
        await implementation.close()


ALICE = "tel:+14155550100"
BOB = "tel:+14155550199"
T0 = 1_700_000_000_000


def device(device_id: str, created_at_ms: int = T0, **fields: str) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        account_id="",
        name=f"{device_id} name",
        secret_hash="ab" * 32,
        created_at_ms=created_at_ms,
        **fields,
    )


def envelope(
    device_id: str,
    message_id: str = "m1",
    *,
    sender_device: str = "alice-phone",
    kind: EnvelopeKind = "message",
    sent_at_ms: int = T0,
    body: bytes = b"ciphertext",
) -> NewEnvelope:
    return NewEnvelope(
        device_id=device_id,
        message_id=message_id,
        kind=kind,
        sender_account="alice",
        sender_device=sender_device,
        sender_handle=ALICE,
        sent_at_ms=sent_at_ms,
        body=body,
    )


async def register(store: Store, handle: str, account_id: str, *device_ids: str, max_devices: int = 10) -> None:
    for index, device_id in enumerate(device_ids):
        outcome = await store.register_device(handle, account_id, device(device_id, T0 + index), max_devices)
        assert outcome.account_id is not None


async def with_devices(store: Store) -> Store:
    """Alice with a phone and a laptop, Bob with a phone."""
    await register(store, ALICE, "alice", "alice-phone", "alice-laptop")
    await register(store, BOB, "bob", "bob-phone")
    return store


async def submit(
    store: Store, message_id: str, *targets: str, sender: str = "alice-phone", now_ms: int = T0
) -> Submitted:
    news = [envelope(target, message_id, sender_device=sender, sent_at_ms=now_ms) for target in targets]
    return await store.submit(sender, message_id, news, now_ms)


async def seqs(store: Store, device_id: str) -> list[int]:
    page, more = await store.fetch(device_id, 0, 10_000)
    assert not more
    return [e.seq for e in page]


# --- accounts, handles, devices ---------------------------------------------------------


async def test_first_device_for_a_handle_creates_its_account(store: Store) -> None:
    outcome = await store.register_device(ALICE, "alice", device("alice-phone"), 10)
    assert outcome == Registration(account_id="alice", created_account=True)
    assert await store.account_for_handle(ALICE) == "alice"
    assert await store.handles_of("alice") == [ALICE]


async def test_next_device_for_a_handle_joins_the_existing_account(store: Store) -> None:
    await store.register_device(ALICE, "alice", device("alice-phone"), 10)
    outcome = await store.register_device(ALICE, "unused-new-id", device("alice-laptop", T0 + 1), 10)
    assert outcome == Registration(account_id="alice", created_account=False)
    assert [d.device_id for d in await store.devices_of("alice")] == ["alice-phone", "alice-laptop"]
    assert await store.devices_of("unused-new-id") == []
    assert await store.handles_of("unused-new-id") == []


async def test_unknown_handle_and_account_have_nothing(store: Store) -> None:
    assert await store.account_for_handle(ALICE) is None
    assert await store.handles_of("nobody") == []
    assert await store.devices_of("nobody") == []


async def test_registered_device_is_stored_under_the_owning_account(store: Store) -> None:
    record = replace(device("alice-phone", identity_key="ik", signing_key="sk"), account_id="forged")
    await store.register_device(ALICE, "alice", record, 10)
    assert await store.get_device("alice-phone") == DeviceRecord(
        device_id="alice-phone",
        account_id="alice",
        name="alice-phone name",
        secret_hash="ab" * 32,
        created_at_ms=T0,
        identity_key="ik",
        signing_key="sk",
    )


async def test_unknown_device_is_none(store: Store) -> None:
    assert await store.get_device("nobody") is None


async def test_max_devices_is_enforced(store: Store) -> None:
    await register(store, ALICE, "alice", "alice-phone", "alice-laptop", max_devices=2)
    outcome = await store.register_device(ALICE, "alice-2", device("alice-tablet"), 2)
    assert outcome == Registration(account_id=None, created_account=False)
    assert await store.get_device("alice-tablet") is None
    assert len(await store.devices_of("alice")) == 2


async def test_removing_a_device_frees_a_slot(store: Store) -> None:
    await register(store, ALICE, "alice", "alice-phone", "alice-laptop", max_devices=2)
    assert await store.remove_device("alice-laptop")
    outcome = await store.register_device(ALICE, "alice-2", device("alice-tablet"), 2)
    assert outcome.account_id == "alice"


async def test_devices_of_lists_an_accounts_devices_oldest_first(store: Store) -> None:
    await store.register_device(ALICE, "alice", device("alice-c", T0 + 5), 10)
    await store.register_device(ALICE, "alice", device("alice-b", T0), 10)
    await store.register_device(ALICE, "alice", device("alice-a", T0 + 5), 10)
    await store.register_device(BOB, "bob", device("bob-phone", T0 + 1), 10)
    assert [d.device_id for d in await store.devices_of("alice")] == ["alice-b", "alice-a", "alice-c"]
    assert [d.device_id for d in await store.devices_of("bob")] == ["bob-phone"]


async def test_remove_device_removes_it_once(store: Store) -> None:
    await with_devices(store)
    assert await store.remove_device("alice-laptop") is True
    assert await store.remove_device("alice-laptop") is False
    assert await store.remove_device("nobody") is False
    assert await store.get_device("alice-laptop") is None
    assert [d.device_id for d in await store.devices_of("alice")] == ["alice-phone"]
    assert await store.account_for_handle(ALICE) == "alice"


async def test_remove_device_drops_its_mailbox_and_no_other(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "alice-laptop", "bob-phone")
    await store.remove_device("alice-laptop")
    assert await store.queued_count("alice-laptop") == 0
    assert await store.fetch("alice-laptop", 0, 100) == ([], False)
    assert await store.queued_count("bob-phone") == 1


# --- verification codes -----------------------------------------------------------------


def code(handle: str = ALICE, purpose: str = "register", code_hash: str = "h1", attempts: int = 5) -> PendingCode:
    return PendingCode(handle, purpose, code_hash, T0 + 600_000, attempts)


async def test_missing_code_is_none(store: Store) -> None:
    assert await store.get_code(ALICE, "register") is None


async def test_code_round_trips(store: Store) -> None:
    await store.put_code(code())
    assert await store.get_code(ALICE, "register") == code()


async def test_put_code_replaces_the_code_for_the_same_handle_and_purpose(store: Store) -> None:
    await store.put_code(code(code_hash="h1"))
    await store.put_code(code(code_hash="h2", attempts=4))
    assert await store.get_code(ALICE, "register") == code(code_hash="h2", attempts=4)


async def test_codes_are_kept_per_handle_and_purpose(store: Store) -> None:
    await store.put_code(code(ALICE, "register", "h1"))
    await store.put_code(code(ALICE, "deregister", "h2"))
    await store.put_code(code(BOB, "register", "h3"))
    assert (await store.get_code(ALICE, "register")) == code(ALICE, "register", "h1")
    assert (await store.get_code(ALICE, "deregister")) == code(ALICE, "deregister", "h2")
    assert (await store.get_code(BOB, "register")) == code(BOB, "register", "h3")


async def test_delete_code_removes_only_that_code(store: Store) -> None:
    await store.put_code(code(ALICE, "register"))
    await store.put_code(code(ALICE, "deregister"))
    await store.delete_code(ALICE, "register")
    assert await store.get_code(ALICE, "register") is None
    assert await store.get_code(ALICE, "deregister") is not None


async def test_deleting_a_missing_code_is_fine(store: Store) -> None:
    await store.delete_code(ALICE, "register")
    assert await store.get_code(ALICE, "register") is None


# --- submit -----------------------------------------------------------------------------


async def test_submit_stores_one_envelope_per_target_in_the_order_given(store: Store) -> None:
    await with_devices(store)
    news = [envelope("bob-phone", body=b"for bob"), envelope("alice-laptop", body=b"for laptop")]
    result = await store.submit("alice-phone", "m1", news, T0)
    assert result.duplicate is False
    assert result.device_ids == ["bob-phone", "alice-laptop"]
    for new, stored in zip(news, result.envelopes, strict=True):
        assert stored.seq > 0
        assert stored == Envelope(
            seq=stored.seq,
            message_id=new.message_id,
            kind=new.kind,
            sender_account=new.sender_account,
            sender_device=new.sender_device,
            sender_handle=new.sender_handle,
            sent_at_ms=new.sent_at_ms,
            body=new.body,
        )
    assert await store.fetch("bob-phone", 0, 10) == ([result.envelopes[0]], False)
    assert await store.fetch("alice-laptop", 0, 10) == ([result.envelopes[1]], False)


async def test_submit_is_idempotent_per_sender_device_and_message_id(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone")
    again = await store.submit("alice-phone", "m1", [envelope("bob-phone"), envelope("alice-laptop")], T0 + 5)
    assert again == Submitted(duplicate=True, envelopes=[], device_ids=[])
    assert await store.queued_count("bob-phone") == 1
    assert await store.queued_count("alice-laptop") == 0


async def test_same_message_id_from_another_sender_device_is_not_a_duplicate(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone", sender="alice-phone")
    other = await submit(store, "m1", "bob-phone", sender="alice-laptop")
    assert other.duplicate is False
    assert await store.queued_count("bob-phone") == 2


async def test_submit_to_a_removed_device_stores_nothing_for_it(store: Store) -> None:
    await with_devices(store)
    await store.remove_device("alice-laptop")
    result = await submit(store, "m1", "alice-laptop", "bob-phone")
    assert result.duplicate is False
    assert result.envelopes[0].seq == 0
    assert result.envelopes[1].seq > 0
    assert result.device_ids == ["alice-laptop", "bob-phone"]
    assert await store.queued_count("alice-laptop") == 0
    assert await store.queued_count("bob-phone") == 1


# --- seq --------------------------------------------------------------------------------


async def test_seq_grows_in_commit_order_within_a_mailbox(store: Store) -> None:
    await with_devices(store)
    first = await submit(store, "m1", "bob-phone", "alice-laptop")
    receipt = await store.enqueue([envelope("bob-phone", "r1", kind="delivered")])
    second = await submit(store, "m2", "bob-phone")
    bob = [first.envelopes[0].seq, receipt[0].seq, second.envelopes[0].seq]
    assert bob == sorted(set(bob))
    assert await seqs(store, "bob-phone") == bob


async def test_seq_is_never_reused_after_the_mailbox_empties(store: Store) -> None:
    await with_devices(store)
    for index in range(3):
        await submit(store, f"m{index}", "bob-phone")
    before = await seqs(store, "bob-phone")
    await store.ack("bob-phone", before[-1])
    assert await store.queued_count("bob-phone") == 0
    for index in range(3, 6):
        await submit(store, f"m{index}", "bob-phone")
    after = await seqs(store, "bob-phone")
    assert len(after) == 3
    assert after == sorted(after)
    assert after[0] > before[-1]


async def test_fetch_after_the_last_acked_seq_finds_only_new_envelopes(store: Store) -> None:
    await with_devices(store)
    old = await submit(store, "m1", "bob-phone")
    await store.ack("bob-phone", old.envelopes[0].seq)
    new = await submit(store, "m2", "bob-phone")
    page, more = await store.fetch("bob-phone", old.envelopes[0].seq, 10)
    assert page == new.envelopes
    assert not more


# --- fetch ------------------------------------------------------------------------------


async def test_fetch_pages_through_a_mailbox_in_seq_order(store: Store) -> None:
    await with_devices(store)
    for index in range(5):
        await submit(store, f"m{index}", "bob-phone")
    everything = await seqs(store, "bob-phone")

    page, more = await store.fetch("bob-phone", 0, 2)
    assert ([e.seq for e in page], more) == (everything[:2], True)
    page, more = await store.fetch("bob-phone", page[-1].seq, 2)
    assert ([e.seq for e in page], more) == (everything[2:4], True)
    page, more = await store.fetch("bob-phone", page[-1].seq, 2)
    assert ([e.seq for e in page], more) == (everything[4:], False)
    assert await store.fetch("bob-phone", page[-1].seq, 2) == ([], False)


async def test_fetch_of_exactly_the_limit_has_no_more(store: Store) -> None:
    await with_devices(store)
    for index in range(3):
        await submit(store, f"m{index}", "bob-phone")
    page, more = await store.fetch("bob-phone", 0, 3)
    assert len(page) == 3
    assert more is False


async def test_fetch_does_not_remove(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone")
    first = await store.fetch("bob-phone", 0, 10)
    assert await store.fetch("bob-phone", 0, 10) == first
    assert await store.queued_count("bob-phone") == 1


async def test_fetch_reads_only_that_devices_mailbox(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone")
    await submit(store, "m2", "alice-laptop")
    page, _ = await store.fetch("bob-phone", 0, 10)
    assert [e.message_id for e in page] == ["m1"]
    assert await store.fetch("nobody", 0, 10) == ([], False)


# --- ack --------------------------------------------------------------------------------


async def test_ack_removes_everything_up_to_seq_and_returns_what_it_removed(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone")
    await store.enqueue([envelope("bob-phone", "m1", kind="delivered")])
    await submit(store, "m3", "bob-phone")
    bob = await seqs(store, "bob-phone")

    removed = await store.ack("bob-phone", bob[1])
    assert sorted(removed, key=lambda a: a.kind) == [
        AckedEnvelope(message_id="m1", kind="delivered", sender_account="alice"),
        AckedEnvelope(message_id="m1", kind="message", sender_account="alice"),
    ]
    assert await seqs(store, "bob-phone") == bob[2:]
    assert await store.queued_count("bob-phone") == 1


async def test_ack_returns_removed_envelopes_in_seq_order(store: Store) -> None:
    await with_devices(store)
    for index in range(5):
        await submit(store, f"m{index}", "bob-phone")
    removed = await store.ack("bob-phone", max(await seqs(store, "bob-phone")))
    assert [a.message_id for a in removed] == ["m0", "m1", "m2", "m3", "m4"]


async def test_repeated_ack_removes_nothing(store: Store) -> None:
    await with_devices(store)
    sent = await submit(store, "m1", "bob-phone")
    await store.ack("bob-phone", sent.envelopes[0].seq)
    assert await store.ack("bob-phone", sent.envelopes[0].seq) == []


async def test_ack_touches_only_that_devices_mailbox(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone", "alice-laptop")
    await store.ack("bob-phone", 10**12)
    assert await store.queued_count("bob-phone") == 0
    assert await store.queued_count("alice-laptop") == 1
    assert await store.ack("nobody", 10**12) == []


# --- enqueue ----------------------------------------------------------------------------


async def test_enqueue_has_no_idempotency_key(store: Store) -> None:
    await with_devices(store)
    first = await store.enqueue([envelope("alice-phone", "m1", kind="delivered")])
    second = await store.enqueue([envelope("alice-phone", "m1", kind="delivered")])
    assert first[0].seq < second[0].seq
    assert await store.queued_count("alice-phone") == 2


async def test_enqueue_to_a_removed_or_unknown_device_gives_seq_0_and_stores_nothing(store: Store) -> None:
    await with_devices(store)
    await store.remove_device("alice-laptop")
    stored = await store.enqueue(
        [
            envelope("alice-laptop", kind="delivered"),
            envelope("nobody", kind="delivered"),
            envelope("alice-phone", kind="delivered"),
        ]
    )
    assert [e.seq for e in stored[:2]] == [0, 0]
    assert stored[2].seq > 0
    assert await store.queued_count("alice-laptop") == 0
    assert await store.queued_count("nobody") == 0
    assert await store.queued_count("alice-phone") == 1


# --- expire -----------------------------------------------------------------------------


async def test_expire_drops_envelopes_sent_before_the_cutoff(store: Store) -> None:
    await with_devices(store)
    await submit(store, "old", "bob-phone", now_ms=T0)
    await submit(store, "edge", "bob-phone", now_ms=T0 + 1000)
    await submit(store, "new", "bob-phone", "alice-laptop", now_ms=T0 + 2000)
    assert await store.expire(T0 + 1000) == 1
    page, _ = await store.fetch("bob-phone", 0, 10)
    assert [e.message_id for e in page] == ["edge", "new"]
    assert await store.queued_count("alice-laptop") == 1
    assert await store.expire(T0 + 1000) == 0


async def test_expire_forgets_old_idempotency_keys_so_the_id_is_accepted_again(store: Store) -> None:
    await with_devices(store)
    await submit(store, "m1", "bob-phone", now_ms=T0)
    await submit(store, "m2", "bob-phone", now_ms=T0 + 5000)
    await store.expire(T0 + 1000)
    assert (await submit(store, "m1", "bob-phone", now_ms=T0 + 6000)).duplicate is False
    assert (await submit(store, "m2", "bob-phone", now_ms=T0 + 6000)).duplicate is True


# --- queued_count -----------------------------------------------------------------------


async def test_queued_count_follows_submits_and_acks(store: Store) -> None:
    await with_devices(store)
    assert await store.queued_count("bob-phone") == 0
    for index in range(4):
        await submit(store, f"m{index}", "bob-phone")
    assert await store.queued_count("bob-phone") == 4
    await store.ack("bob-phone", (await seqs(store, "bob-phone"))[1])
    assert await store.queued_count("bob-phone") == 2
    assert await store.queued_count("nobody") == 0


# --- operations -------------------------------------------------------------------------


async def test_an_open_store_answers_ping_and_has_nothing_pending_when_idle(store: Store) -> None:
    await store.ping()
    await with_devices(store)
    await submit(store, "m1", "bob-phone")
    assert store.pending_writes == 0
