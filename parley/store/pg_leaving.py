"""The PostgreSQL store's queries for leaving Parley: overdue notes, "left" records,
leases and proofs. Split from :mod:`parley.store.postgres` to keep modules small, as
:mod:`parley.store.sqlite_leaving` is. Each function takes a connection (or the pool) and
runs inside whatever transaction its caller opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parley.core.leaving import Departure, Left, Overdue, Queued
from parley.store.base import DeviceRecord

_OVERDUE_COLUMNS = "recipient_account, sender_account, message_id, since_ms"


async def note_overdue(db: Any, items: Sequence[Overdue]) -> None:
    if not items:
        return
    await db.execute(
        f"INSERT INTO overdue ({_OVERDUE_COLUMNS})"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ON CONFLICT DO NOTHING",
        [n.recipient_account for n in items],
        [n.sender_account for n in items],
        [n.message_id for n in items],
        [n.since_ms for n in items],
    )


async def overdue(db: Any, limit: int) -> list[Overdue]:
    rows = await db.fetch(f"SELECT {_OVERDUE_COLUMNS} FROM overdue ORDER BY since_ms, message_id LIMIT $1", limit)
    return [Overdue(*row) for row in rows]


async def settle_overdue(db: Any, recipient_account: str, acked: Sequence[tuple[str, str]]) -> None:
    await db.execute(
        "DELETE FROM overdue o USING unnest($2::text[], $3::text[]) AS a(sender_account, message_id)"
        " WHERE o.recipient_account = $1 AND o.sender_account = a.sender_account AND o.message_id = a.message_id",
        recipient_account,
        [sender for sender, _ in acked],
        [message_id for _, message_id in acked],
    )


async def leave(db: Any, handle: str, record: Left) -> Departure:
    await db.execute(
        "INSERT INTO left_handles VALUES ($1, $2, $3, $4, $5) ON CONFLICT (handle) DO UPDATE SET"
        " left_at_ms = excluded.left_at_ms, reason = excluded.reason, moved_to = excluded.moved_to,"
        " signature = excluded.signature",
        handle,
        record.left_at_ms,
        record.reason,
        record.moved_to,
        record.signature,
    )
    account_id: str | None = await db.fetchval("DELETE FROM handles WHERE handle = $1 RETURNING account_id", handle)
    if account_id is None:
        return Departure(None, [], [])
    await db.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", account_id)
    devices = [
        row[0]
        for row in await db.fetch(
            "SELECT device_id FROM devices WHERE account_id = $1 ORDER BY created_at_ms, device_id", account_id
        )
    ]
    backlog: list[Queued] = []
    for device_id in devices:
        # The counter row first: it waits for any batch writing to this mailbox, and once
        # it is gone no later batch can add to the mailbox (as in remove_device).
        await db.execute("DELETE FROM mailbox_heads WHERE device_id = $1", device_id)
        rows = await db.fetch(
            "DELETE FROM mailbox WHERE device_id = $1 RETURNING seq, sender_account, message_id, kind", device_id
        )
        backlog.extend(Queued(r[1], r[2], r[3]) for r in sorted(rows, key=lambda r: r[0]))
        await db.execute("DELETE FROM devices WHERE device_id = $1", device_id)
    await db.execute("DELETE FROM fallbacks WHERE recipient_account = $1", account_id)
    await db.execute("DELETE FROM overdue WHERE recipient_account = $1", account_id)
    return Departure(account_id, devices, backlog)


async def left_record(db: Any, handle: str) -> Left | None:
    row = await db.fetchrow(
        "SELECT handle, left_at_ms, reason, moved_to, signature FROM left_handles WHERE handle = $1", handle
    )
    return Left(*row) if row else None


async def set_proven(db: Any, handle: str, at_ms: int) -> None:
    await db.execute("UPDATE handles SET proven_at_ms = $2 WHERE handle = $1", handle, at_ms)


async def proofs_due(db: Any, before_ms: int, limit: int) -> list[str]:
    rows = await db.fetch(
        "SELECT handle FROM handles WHERE handle LIKE 'tel:%' AND proven_at_ms < $1 ORDER BY proven_at_ms, handle"
        " LIMIT $2",
        before_ms,
        limit,
    )
    return [row[0] for row in rows]


async def renew_lease(db: Any, device_id: str, until_ms: int) -> bool:
    status: str = await db.execute("UPDATE devices SET lease_until_ms = $2 WHERE device_id = $1", device_id, until_ms)
    return status != "UPDATE 0"


async def lapsed_devices(db: Any, now_ms: int, limit: int, columns: str) -> list[DeviceRecord]:
    rows = await db.fetch(
        f"SELECT {columns} FROM devices WHERE lease_until_ms > 0 AND lease_until_ms <= $1"
        " ORDER BY lease_until_ms, device_id LIMIT $2",
        now_ms,
        limit,
    )
    return [DeviceRecord(*row) for row in rows]
