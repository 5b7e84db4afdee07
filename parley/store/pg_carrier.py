"""The PostgreSQL store's carrier-path queries: fallback watches and the SMS outbox.

Split from :mod:`parley.store.postgres` to keep modules small, as the SQLite store's
:mod:`parley.store.sqlite_carrier` is. Each function takes a connection (or the pool) and
runs inside whatever transaction its caller opened. ``queue_sms`` locks the (sender
account, message, number) claim with a transaction-scoped advisory lock, so two nodes
asked at once queue the SMS once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from parley.core import fallback as fb

_WATCH_COLUMNS = "sender_account, message_id, recipient_account, recipient_handle, deadline_ms, state"
_SMS_COLUMNS = (
    "sms_id, sender_account, message_id, sender_number, to_number, text, state, created_at_ms,"
    " next_attempt_ms, attempts, carrier_ref, error"
)


def _watch(row: Any) -> fb.Fallback:
    sender_account, message_id, recipient_account, recipient_handle, deadline_ms, state = row
    return fb.Fallback(
        sender_account, message_id, recipient_account, recipient_handle, deadline_ms, fb.WatchState(state)
    )


def _sms(row: Any) -> fb.OutboxItem:
    sms_id, account, message_id, sender, to, text, state, created, next_at, attempts, ref, error = row
    return fb.OutboxItem(
        sms_id, account, message_id, sender, to, text, fb.SmsState(state), created, next_at, attempts, ref, error
    )


async def insert_watches(db: Any, watches: Sequence[fb.Fallback]) -> None:
    """Store a send's fallback watches (a watch whose key exists is kept as it is)."""
    if not watches:
        return
    await db.execute(
        f"INSERT INTO fallbacks ({_WATCH_COLUMNS})"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])"
        " ON CONFLICT DO NOTHING",
        [w.sender_account for w in watches],
        [w.message_id for w in watches],
        [w.recipient_account for w in watches],
        [w.recipient_handle for w in watches],
        [w.deadline_ms for w in watches],
        [w.state.value for w in watches],
    )


async def settle_fallbacks(db: Any, recipient_account: str, acked: Sequence[tuple[str, str]]) -> int:
    if not acked:
        return 0
    status: str = await db.execute(
        "DELETE FROM fallbacks f USING unnest($1::text[], $2::text[]) AS a(sender_account, message_id)"
        " WHERE f.sender_account = a.sender_account AND f.message_id = a.message_id"
        " AND f.recipient_account = $3",
        [sender for sender, _ in acked],
        [message_id for _, message_id in acked],
        recipient_account,
    )
    return int(status.rsplit(" ", 1)[1])


async def due_fallbacks(db: Any, now_ms: int, limit: int) -> list[fb.Fallback]:
    rows = await db.fetch(
        f"SELECT {_WATCH_COLUMNS} FROM fallbacks WHERE state = 'waiting' AND deadline_ms <= $1"
        " ORDER BY deadline_ms, message_id LIMIT $2",
        now_ms,
        limit,
    )
    return [_watch(row) for row in rows]


async def fallbacks_notified(db: Any, keys: Sequence[fb.FallbackKey]) -> None:
    if not keys:
        return
    await db.execute(
        "UPDATE fallbacks f SET state = 'due'"
        " FROM unnest($1::text[], $2::text[], $3::text[]) AS k(sender_account, message_id, recipient_account)"
        " WHERE f.sender_account = k.sender_account AND f.message_id = k.message_id"
        " AND f.recipient_account = k.recipient_account",
        [k.sender_account for k in keys],
        [k.message_id for k in keys],
        [k.recipient_account for k in keys],
    )


async def queue_sms(
    db: Any, item: fb.OutboxItem, fallback: fb.FallbackKey | None, now_ms: int
) -> tuple[fb.Claim, fb.OutboxItem]:
    # One claim at a time per (sender account, message, number), across every node.
    await db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"sms:{item.sender_account}:{item.message_id}:{item.to_number}",
    )
    row = await db.fetchrow(
        f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE sender_account = $1 AND message_id = $2 AND to_number = $3",
        item.sender_account,
        item.message_id,
        item.to_number,
    )
    watch = None
    if fallback is not None:
        found = await db.fetchrow(
            f"SELECT {_WATCH_COLUMNS} FROM fallbacks"
            " WHERE sender_account = $1 AND message_id = $2 AND recipient_account = $3 FOR UPDATE",
            fallback.sender_account,
            fallback.message_id,
            fallback.recipient_account,
        )
        watch = _watch(found) if found else None
    verdict = fb.claim(row is not None, fallback is not None, watch, now_ms)
    if verdict is fb.Claim.DUPLICATE:
        return verdict, _sms(row)
    if verdict is fb.Claim.QUEUED:
        await db.execute(
            f"INSERT INTO sms_outbox ({_SMS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            item.sms_id,
            item.sender_account,
            item.message_id,
            item.sender_number,
            item.to_number,
            item.text,
            item.state.value,
            item.created_at_ms,
            item.next_attempt_ms,
            item.attempts,
            item.carrier_ref,
            item.error,
        )
        if fallback is not None:
            await db.execute(
                "DELETE FROM fallbacks WHERE sender_account = $1 AND message_id = $2 AND recipient_account = $3",
                fallback.sender_account,
                fallback.message_id,
                fallback.recipient_account,
            )
    return verdict, item


async def sms_to_send(db: Any, now_ms: int, limit: int, lease_ms: int) -> list[fb.OutboxItem]:
    # One statement claims the items: SKIP LOCKED keeps two nodes off the same rows, and
    # the lease keeps them off until the claimer writes the outcome (or dies and it lapses).
    rows = await db.fetch(
        f"WITH due AS (SELECT sms_id, next_attempt_ms AS was FROM sms_outbox"
        " WHERE state = 'pending' AND next_attempt_ms <= $1"
        " ORDER BY next_attempt_ms, created_at_ms, sms_id LIMIT $2 FOR UPDATE SKIP LOCKED)"
        f" UPDATE sms_outbox SET next_attempt_ms = $3 FROM due WHERE sms_outbox.sms_id = due.sms_id"
        f" RETURNING {', '.join('sms_outbox.' + c.strip() for c in _SMS_COLUMNS.split(','))}, due.was",
        now_ms,
        limit,
        now_ms + lease_ms,
    )
    claimed = [replace(_sms(tuple(row)[:-1]), next_attempt_ms=row["was"]) for row in rows]
    return sorted(claimed, key=lambda o: (o.next_attempt_ms, o.created_at_ms, o.sms_id))


async def update_sms(db: Any, item: fb.OutboxItem) -> None:
    await db.execute(
        "UPDATE sms_outbox SET text = $1, state = $2, next_attempt_ms = $3, attempts = $4, carrier_ref = $5,"
        " error = $6 WHERE sms_id = $7",
        item.text,
        item.state.value,
        item.next_attempt_ms,
        item.attempts,
        item.carrier_ref,
        item.error,
        item.sms_id,
    )


async def find_sms(db: Any, sms_id: str, carrier_ref: str) -> fb.OutboxItem | None:
    if sms_id:
        row = await db.fetchrow(f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE sms_id = $1", sms_id)
    elif carrier_ref:
        row = await db.fetchrow(f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE carrier_ref = $1", carrier_ref)
    else:
        row = None
    return _sms(row) if row else None


async def expire(db: Any, before_ms: int) -> None:
    await db.execute("DELETE FROM fallbacks WHERE deadline_ms < $1", before_ms)
    await db.execute("DELETE FROM sms_outbox WHERE created_at_ms < $1 AND state != 'pending'", before_ms)
