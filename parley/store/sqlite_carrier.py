"""The SQLite store's carrier-path tables and queries: fallback watches and the SMS outbox.

Split from :mod:`parley.store.sqlite` to keep modules small; the functions run on its
worker threads, each inside the worker's transaction, like the ones there.
"""

from __future__ import annotations

import sqlite3

from parley.core import fallback as fb

# Schema version 2: the inbox key inbound SMS are sealed to, fallback watches, SMS outbox.
CARRIER_MIGRATION = """
    ALTER TABLE devices ADD COLUMN inbox_key TEXT NOT NULL DEFAULT '';
    CREATE TABLE fallbacks (
        sender_account TEXT NOT NULL,
        message_id TEXT NOT NULL,
        recipient_account TEXT NOT NULL,
        recipient_handle TEXT NOT NULL,
        deadline_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (sender_account, message_id, recipient_account)
    ) WITHOUT ROWID;
    CREATE INDEX fallbacks_by_deadline ON fallbacks(state, deadline_ms);
    CREATE TABLE sms_outbox (
        sms_id TEXT PRIMARY KEY,
        sender_account TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sender_number TEXT NOT NULL,
        to_number TEXT NOT NULL,
        text TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        carrier_ref TEXT NOT NULL,
        error TEXT NOT NULL,
        UNIQUE (sender_account, message_id, to_number)
    );
    CREATE INDEX sms_outbox_due ON sms_outbox(state, next_attempt_ms);
    CREATE INDEX sms_outbox_by_ref ON sms_outbox(carrier_ref);
    """

_WATCH_COLUMNS = "sender_account, message_id, recipient_account, recipient_handle, deadline_ms, state"
_SMS_COLUMNS = (
    "sms_id, sender_account, message_id, sender_number, to_number, text, state, created_at_ms,"
    " next_attempt_ms, attempts, carrier_ref, error"
)


def _watch(row: tuple[str, str, str, str, int, str]) -> fb.Fallback:
    sender_account, message_id, recipient_account, recipient_handle, deadline_ms, state = row
    return fb.Fallback(
        sender_account, message_id, recipient_account, recipient_handle, deadline_ms, fb.WatchState(state)
    )


def _sms(row: tuple[str, str, str, str, str, str, str, int, int, int, str, str]) -> fb.OutboxItem:
    sms_id, account, message_id, sender, to, text, state, created, next_at, attempts, ref, error = row
    return fb.OutboxItem(
        sms_id, account, message_id, sender, to, text, fb.SmsState(state), created, next_at, attempts, ref, error
    )


def _sms_values(item: fb.OutboxItem) -> tuple[object, ...]:
    return (
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


def settle_fallbacks(db: sqlite3.Connection, recipient_account: str, acked: list[tuple[str, str]]) -> int:
    dropped = 0
    for sender_account, message_id in acked:
        dropped += db.execute(
            "DELETE FROM fallbacks WHERE sender_account = ? AND message_id = ? AND recipient_account = ?",
            (sender_account, message_id, recipient_account),
        ).rowcount
        db.execute(
            "DELETE FROM overdue WHERE recipient_account = ? AND sender_account = ? AND message_id = ?",
            (recipient_account, sender_account, message_id),
        )
    return dropped


def due_fallbacks(db: sqlite3.Connection, now_ms: int, limit: int) -> list[fb.Fallback]:
    rows = db.execute(
        f"SELECT {_WATCH_COLUMNS} FROM fallbacks WHERE state = 'waiting' AND deadline_ms <= ?"
        " ORDER BY deadline_ms, message_id LIMIT ?",
        (now_ms, limit),
    )
    return [_watch(row) for row in rows]


def fallbacks_notified(db: sqlite3.Connection, keys: list[fb.FallbackKey]) -> None:
    db.executemany(
        "UPDATE fallbacks SET state = 'due' WHERE sender_account = ? AND message_id = ? AND recipient_account = ?",
        [(k.sender_account, k.message_id, k.recipient_account) for k in keys],
    )


def queue_sms(
    db: sqlite3.Connection, item: fb.OutboxItem, fallback: fb.FallbackKey | None, now_ms: int
) -> tuple[fb.Claim, fb.OutboxItem]:
    row = db.execute(
        f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE sender_account = ? AND message_id = ? AND to_number = ?",
        (item.sender_account, item.message_id, item.to_number),
    ).fetchone()
    watch = None
    if fallback is not None:
        found = db.execute(
            f"SELECT {_WATCH_COLUMNS} FROM fallbacks"
            " WHERE sender_account = ? AND message_id = ? AND recipient_account = ?",
            (fallback.sender_account, fallback.message_id, fallback.recipient_account),
        ).fetchone()
        watch = _watch(found) if found else None
    verdict = fb.claim(row is not None, fallback is not None, watch, now_ms)
    if verdict is fb.Claim.DUPLICATE:
        return verdict, _sms(row)
    if verdict is fb.Claim.QUEUED:
        db.execute(f"INSERT INTO sms_outbox ({_SMS_COLUMNS}) VALUES ({', '.join('?' * 12)})", _sms_values(item))
        if fallback is not None:
            db.execute(
                "DELETE FROM fallbacks WHERE sender_account = ? AND message_id = ? AND recipient_account = ?",
                (fallback.sender_account, fallback.message_id, fallback.recipient_account),
            )
    return verdict, item


def sms_to_send(db: sqlite3.Connection, now_ms: int, limit: int, lease_ms: int) -> list[fb.OutboxItem]:
    rows = db.execute(
        f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE state = 'pending' AND next_attempt_ms <= ?"
        " ORDER BY next_attempt_ms, created_at_ms, sms_id LIMIT ?",
        (now_ms, limit),
    ).fetchall()
    claimed = [_sms(row) for row in rows]
    db.executemany(
        "UPDATE sms_outbox SET next_attempt_ms = ? WHERE sms_id = ?", [(now_ms + lease_ms, i.sms_id) for i in claimed]
    )
    return claimed


def update_sms(db: sqlite3.Connection, item: fb.OutboxItem) -> None:
    db.execute(
        "UPDATE sms_outbox SET text = ?, state = ?, next_attempt_ms = ?, attempts = ?, carrier_ref = ?, error = ?"
        " WHERE sms_id = ?",
        (item.text, item.state.value, item.next_attempt_ms, item.attempts, item.carrier_ref, item.error, item.sms_id),
    )


def find_sms(db: sqlite3.Connection, sms_id: str, carrier_ref: str) -> fb.OutboxItem | None:
    if sms_id:
        row = db.execute(f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE sms_id = ?", (sms_id,)).fetchone()
    elif carrier_ref:
        row = db.execute(f"SELECT {_SMS_COLUMNS} FROM sms_outbox WHERE carrier_ref = ?", (carrier_ref,)).fetchone()
    else:
        row = None
    return _sms(row) if row else None
