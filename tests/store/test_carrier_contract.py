"""The carrier path's store methods: one suite, run against every store implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from parley.core import fallback as fb
from parley.store.base import DeviceRecord, NewEnvelope, Store
from parley.store.sqlite import SqliteStore
from tests.store.test_contract import STORE_FACTORIES


@pytest.fixture(params=list(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    implementation = STORE_FACTORIES[request.param](tmp_path, request)
    await implementation.open()
    try:
        yield implementation
    finally:
        await implementation.close()


def watch(message_id: str = "m1", deadline: int = 1000, recipient: str = "bob") -> fb.Fallback:
    return fb.Fallback("alice", message_id, recipient, "tel:+14155550111", deadline)


def item(sms_id: str = "s1", message_id: str = "m1", to: str = "+14155550111", **changes: object) -> fb.OutboxItem:
    base = fb.OutboxItem(sms_id, "alice", message_id, "+14155550100", to, "hello", fb.SmsState.PENDING, 100, 100)
    return replace(base, **changes)  # type: ignore[arg-type]


def envelope(message_id: str = "m1") -> NewEnvelope:
    return NewEnvelope("dB", message_id, "message", "alice", "dA", "tel:+14155550100", 100, b"x")


async def test_inbox_key_is_kept(store: Store) -> None:
    device = DeviceRecord("dB", "", "phone", "h", 1, inbox_key="KEY")
    await store.register_device("tel:+14155550111", "bob", device, 10)
    got = await store.get_device("dB")
    assert got is not None and got.inbox_key == "KEY"


async def test_submit_stores_watches_once_and_not_on_duplicate(store: Store) -> None:
    await store.submit("dA", "m1", [envelope()], 100, [watch(deadline=1000)])
    await store.submit("dA", "m1", [envelope()], 100, [watch(deadline=9999)])
    assert await store.due_fallbacks(999, 10) == []
    assert await store.due_fallbacks(1000, 10) == [watch(deadline=1000)]


async def test_settle_drops_watches_of_the_acking_account_only(store: Store) -> None:
    await store.submit("dA", "m1", [], 100, [watch(), watch(recipient="carol")])
    assert await store.settle_fallbacks("bob", [("alice", "m1"), ("alice", "other")]) == 1
    assert [w.recipient_account for w in await store.due_fallbacks(5000, 10)] == ["carol"]


async def test_notified_watches_are_no_longer_due_but_can_be_claimed(store: Store) -> None:
    await store.submit("dA", "m1", [], 100, [watch()])
    await store.fallbacks_notified([watch().key])
    assert await store.due_fallbacks(5000, 10) == []
    claim, stored = await store.queue_sms(item(), watch().key, 5000)
    assert claim is fb.Claim.QUEUED and stored == item()


async def test_queue_sms_follows_the_claim_table(store: Store) -> None:
    await store.submit("dA", "m1", [], 100, [watch(deadline=1000)])
    assert (await store.queue_sms(item(), watch().key, 999))[0] is fb.Claim.NOT_DUE
    assert (await store.queue_sms(item(), watch().key, 1000))[0] is fb.Claim.QUEUED
    claim, existing = await store.queue_sms(item(sms_id="s2"), watch().key, 1001)
    assert claim is fb.Claim.DUPLICATE and existing.sms_id == "s1"
    # The watch went with the claim: another number of the same message has nothing.
    other = fb.FallbackKey("alice", "m1", "bob")
    assert (await store.queue_sms(item(sms_id="s3", to="+14155550122"), other, 2000))[0] is fb.Claim.NO_FALLBACK
    # Direct SMS (no watch involved): queued once.
    assert (await store.queue_sms(item(sms_id="s4", message_id="m2"), None, 0))[0] is fb.Claim.QUEUED
    assert (await store.queue_sms(item(sms_id="s5", message_id="m2"), None, 0))[0] is fb.Claim.DUPLICATE


async def test_concurrent_claims_queue_exactly_one(store: Store) -> None:
    await store.submit("dA", "m1", [], 100, [watch()])
    results = await asyncio.gather(*(store.queue_sms(item(sms_id=f"s{i}"), watch().key, 5000) for i in range(8)))
    assert sorted(claim.value for claim, _ in results) == ["duplicate"] * 7 + ["queued"]
    assert len(await store.sms_to_send(5000, 100, 0)) == 1


async def test_outbox_due_update_and_find(store: Store) -> None:
    await store.queue_sms(item(next_attempt_ms=500), None, 0)
    await store.queue_sms(item(sms_id="s2", message_id="m2", next_attempt_ms=100), None, 0)
    assert [i.sms_id for i in await store.sms_to_send(499, 10, 0)] == ["s2"]
    assert [i.sms_id for i in await store.sms_to_send(500, 10, 0)] == ["s2", "s1"]
    sent = fb.after_attempt(item(next_attempt_ms=500), fb.Attempt.ACCEPTED, 600, carrier_ref="ref-1")
    await store.update_sms(sent)
    assert await store.find_sms(sms_id="s1") == sent
    assert await store.find_sms(carrier_ref="ref-1") == sent
    assert await store.find_sms(carrier_ref="nope") is None
    assert await store.find_sms() is None
    assert [i.sms_id for i in await store.sms_to_send(10_000, 10, 0)] == ["s2"]
    stored = await store.find_sms(sms_id="s1")
    assert stored is not None and stored.text == ""  # no plaintext once the gateway has it


async def test_a_claim_leases_its_items_so_no_one_else_sends_them(store: Store) -> None:
    for n in range(4):
        await store.queue_sms(item(sms_id=f"s{n}", message_id=f"m{n}", next_attempt_ms=100), None, 0)
    first, second = await asyncio.gather(store.sms_to_send(200, 2, 60_000), store.sms_to_send(200, 10, 60_000))
    assert sorted(i.sms_id for i in first + second) == ["s0", "s1", "s2", "s3"]  # each once
    assert await store.sms_to_send(200, 10, 60_000) == []  # all leased
    # The claimer died without writing an outcome: after the lease, the items come back.
    assert len(await store.sms_to_send(60_200, 10, 60_000)) == 4


async def test_expire_keeps_pending_sms_and_drops_old_final_ones(store: Store) -> None:
    await store.queue_sms(item(), None, 0)
    await store.queue_sms(item(sms_id="s2", message_id="m2"), None, 0)
    await store.update_sms(fb.after_attempt(item(sms_id="s2", message_id="m2"), fb.Attempt.REJECTED, 1))
    await store.submit("dA", "m3", [], 100, [watch(message_id="m3", deadline=50)])
    await store.expire(1000)
    assert await store.find_sms(sms_id="s1") is not None
    assert await store.find_sms(sms_id="s2") is None
    assert await store.due_fallbacks(10_000, 10) == []


async def test_outbox_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    first = SqliteStore(path)
    await first.open()
    await first.queue_sms(item(), None, 0)
    await first.submit("dA", "m9", [], 100, [watch(message_id="m9")])
    await first.close()
    second = SqliteStore(path)
    await second.open()
    try:
        assert [i.sms_id for i in await second.sms_to_send(100, 10, 0)] == ["s1"]
        assert [w.message_id for w in await second.due_fallbacks(5000, 10)] == ["m9"]
    finally:
        await second.close()
