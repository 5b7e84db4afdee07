"""The PostgreSQL store's end-to-end key queries (public halves only).

Each one-time key is handed out once even to callers on several nodes at once: a claim
deletes the oldest row it can lock, skipping rows another claim holds.
"""

from __future__ import annotations

from typing import Any

from parley.wire import ClaimedKey, KeyCount, SignedKey


class OverLimit(Exception):
    """Raised inside the transaction so that nothing of the call is stored."""


async def add_prekeys(
    db: Any, device_id: str, one_time: list[SignedKey], fallback: SignedKey | None, max_held: int
) -> int | None:
    # Serialise uploads for one device, so two at once cannot both pass the limit.
    found = await db.fetchval("SELECT 1 FROM devices WHERE device_id = $1 FOR NO KEY UPDATE", device_id)
    if found is None:
        return None
    if one_time:
        await db.execute(
            "INSERT INTO one_time_keys (device_id, key_id, key, signature)"
            " SELECT $1, k.key_id, k.key, k.sig FROM unnest($2::text[], $3::text[], $4::text[])"
            " WITH ORDINALITY AS k(key_id, key, sig, n)"
            " ORDER BY k.n ON CONFLICT (device_id, key_id) DO NOTHING",
            device_id,
            [k.key_id for k in one_time],
            [k.key for k in one_time],
            [k.signature for k in one_time],
        )
    held: int = await db.fetchval("SELECT count(*) FROM one_time_keys WHERE device_id = $1", device_id)
    if held > max_held:
        raise OverLimit
    if fallback is not None:
        await db.execute(
            "INSERT INTO fallback_keys VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE SET"
            " key_id = EXCLUDED.key_id, key = EXCLUDED.key, signature = EXCLUDED.signature",
            device_id,
            fallback.key_id,
            fallback.key,
            fallback.signature,
        )
    return held


async def claim_prekey(db: Any, device_id: str) -> ClaimedKey | None:
    row = await db.fetchrow(
        "DELETE FROM one_time_keys WHERE upload_order = (SELECT upload_order FROM one_time_keys"
        " WHERE device_id = $1 ORDER BY upload_order LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING key_id, key, signature",
        device_id,
    )
    if row is not None:
        return ClaimedKey(device_id, row[0], row[1], row[2])
    row = await db.fetchrow("SELECT key_id, key, signature FROM fallback_keys WHERE device_id = $1", device_id)
    if row is None:
        return None
    return ClaimedKey(device_id, row[0], row[1], row[2], fallback=True)


async def prekey_count(db: Any, device_id: str) -> KeyCount:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM one_time_keys WHERE device_id = $1),"
        " EXISTS (SELECT 1 FROM fallback_keys WHERE device_id = $1)",
        device_id,
    )
    return KeyCount(int(row[0]), bool(row[1]))
