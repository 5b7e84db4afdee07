"""The store contract for end-to-end keys, run against every Store implementation.

(The rest of the contract is in ``test_contract.py``; a new store must pass both.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.store.base import DeviceRecord, Store
from parley.wire import ClaimedKey, KeyCount, SignedKey
from tests.store.test_contract import STORE_FACTORIES  # one list of implementations


@pytest.fixture(params=list(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    implementation = STORE_FACTORIES[request.param](tmp_path, request)
    await implementation.open()
    try:
        yield implementation
    finally:
        await implementation.close()


def key(n: int) -> SignedKey:
    return SignedKey(key_id=f"k{n}", key=f"{n:043d}", signature=f"{n:086d}")


async def registered(store: Store, device_id: str = "d1") -> str:
    record = DeviceRecord(device_id, "", "phone", "ab" * 32, 1, identity_key="i" * 43, signing_key="s" * 43)
    outcome = await store.register_device("tel:+14155550100", "a1", record, 10)
    assert outcome.account_id is not None
    return device_id


async def test_one_time_keys_are_claimed_once_each_then_the_fallback(store: Store) -> None:
    device = await registered(store)
    assert await store.add_prekeys(device, [key(1), key(2)], key(99), max_held=10) == 2
    assert await store.prekey_count(device) == KeyCount(2, True)
    first = await store.claim_prekey(device)
    second = await store.claim_prekey(device)
    assert first == ClaimedKey(device, "k1", key(1).key, key(1).signature)  # oldest first
    assert second is not None and second.key_id == "k2" and not second.fallback
    for _ in range(2):  # the fallback key stays
        fallback = await store.claim_prekey(device)
        assert fallback == ClaimedKey(device, "k99", key(99).key, key(99).signature, fallback=True)
    assert await store.prekey_count(device) == KeyCount(0, True)


async def test_concurrent_claims_never_share_a_key(store: Store) -> None:
    device = await registered(store)
    await store.add_prekeys(device, [key(n) for n in range(20)], None, max_held=100)
    claimed = await asyncio.gather(*(store.claim_prekey(device) for _ in range(25)))
    ids = [c.key_id for c in claimed if c is not None]
    assert sorted(ids) == sorted(f"k{n}" for n in range(20))
    assert claimed.count(None) == 5  # no fallback key was ever uploaded


async def test_uploads_skip_known_ids_replace_the_fallback_and_respect_the_bound(store: Store) -> None:
    device = await registered(store)
    assert await store.add_prekeys(device, [key(1), key(2)], key(50), max_held=3) == 2
    assert await store.add_prekeys(device, [key(2), key(3)], key(51), max_held=3) == 3
    # Over the bound: nothing of this upload is stored, not even its fallback key.
    assert await store.add_prekeys(device, [key(4)], key(52), max_held=3) is None
    assert await store.prekey_count(device) == KeyCount(3, True)
    for _ in range(3):
        await store.claim_prekey(device)
    fallback = await store.claim_prekey(device)
    assert fallback is not None and fallback.key_id == "k51"


async def test_unknown_and_removed_devices_have_no_keys(store: Store) -> None:
    assert await store.add_prekeys("nobody", [key(1)], key(2), max_held=10) is None
    assert await store.claim_prekey("nobody") is None
    assert await store.prekey_count("nobody") == KeyCount(0, False)
    device = await registered(store)
    await store.add_prekeys(device, [key(1)], key(2), max_held=10)
    assert await store.remove_device(device)
    assert await store.claim_prekey(device) is None
    assert await store.prekey_count(device) == KeyCount(0, False)
