"""The SQLite store's tables and queries for leaving Parley: overdue notes (the liveness
rule's evidence) and signed "left" records.

Split from :mod:`parley.store.sqlite` to keep modules small; the functions run on its
worker threads, each inside the worker's transaction, like the ones there.
"""

from __future__ import annotations

import sqlite3

from parley.core.leaving import Departure, Left, Overdue, Queued
from parley.store.base import DeviceRecord

# Schema version 4: leaving Parley. Devices registered before it get a 14-day lease
# from their registration.
LEAVING_MIGRATION = """
    ALTER TABLE devices ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE devices SET lease_until_ms = created_at_ms + 1209600000;
    CREATE INDEX devices_by_lease ON devices(lease_until_ms);
    ALTER TABLE handles ADD COLUMN proven_at_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE handles SET proven_at_ms =
        (SELECT created_at_ms FROM accounts WHERE accounts.account_id = handles.account_id);
    CREATE INDEX handles_by_proof ON handles(proven_at_ms);
    CREATE TABLE overdue (
        recipient_account TEXT NOT NULL,
        sender_account TEXT NOT NULL,
        message_id TEXT NOT NULL,
        since_ms INTEGER NOT NULL,
        PRIMARY KEY (recipient_account, sender_account, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX overdue_by_since ON overdue(since_ms);
    CREATE TABLE left_handles (
        handle TEXT PRIMARY KEY,
        left_at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        moved_to TEXT NOT NULL,
        signature TEXT NOT NULL
    ) WITHOUT ROWID;
    """

_OVERDUE_COLUMNS = "recipient_account, sender_account, message_id, since_ms"


def note_overdue(db: sqlite3.Connection, items: list[Overdue]) -> None:
    db.executemany(
        f"INSERT OR IGNORE INTO overdue ({_OVERDUE_COLUMNS}) VALUES (?, ?, ?, ?)",
        [(n.recipient_account, n.sender_account, n.message_id, n.since_ms) for n in items],
    )


def overdue(db: sqlite3.Connection, limit: int) -> list[Overdue]:
    rows = db.execute(f"SELECT {_OVERDUE_COLUMNS} FROM overdue ORDER BY since_ms, message_id LIMIT ?", (limit,))
    return [Overdue(*row) for row in rows]


def leave(db: sqlite3.Connection, handle: str, record: Left) -> Departure:
    db.execute(
        "INSERT OR REPLACE INTO left_handles VALUES (?, ?, ?, ?, ?)",
        (handle, record.left_at_ms, record.reason, record.moved_to, record.signature),
    )
    row = db.execute("SELECT account_id FROM handles WHERE handle = ?", (handle,)).fetchone()
    if row is None:
        return Departure(None, [], [])
    (account_id,) = row
    db.execute("DELETE FROM handles WHERE handle = ?", (handle,))
    devices = [
        r[0]
        for r in db.execute(
            "SELECT device_id FROM devices WHERE account_id = ? ORDER BY created_at_ms, device_id", (account_id,)
        )
    ]
    backlog: list[Queued] = []
    for device_id in devices:
        rows = db.execute(
            "SELECT sender_account, message_id, kind FROM mailbox WHERE device_id = ? ORDER BY seq", (device_id,)
        )
        backlog.extend(Queued(*r) for r in rows)
        db.execute("DELETE FROM mailbox WHERE device_id = ?", (device_id,))
        db.execute("DELETE FROM one_time_keys WHERE device_id = ?", (device_id,))
        db.execute("DELETE FROM fallback_keys WHERE device_id = ?", (device_id,))
        db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
    db.execute("DELETE FROM fallbacks WHERE recipient_account = ?", (account_id,))
    db.execute("DELETE FROM overdue WHERE recipient_account = ?", (account_id,))
    return Departure(account_id, devices, backlog)


def left_record(db: sqlite3.Connection, handle: str) -> Left | None:
    row = db.execute(
        "SELECT handle, left_at_ms, reason, moved_to, signature FROM left_handles WHERE handle = ?", (handle,)
    ).fetchone()
    return Left(*row) if row else None


def renew_lease(db: sqlite3.Connection, device_id: str, until_ms: int) -> bool:
    return db.execute("UPDATE devices SET lease_until_ms = ? WHERE device_id = ?", (until_ms, device_id)).rowcount > 0


def lapsed_devices(db: sqlite3.Connection, now_ms: int, limit: int, columns: str) -> list[DeviceRecord]:
    rows = db.execute(
        f"SELECT {columns} FROM devices WHERE lease_until_ms > 0 AND lease_until_ms <= ?"
        " ORDER BY lease_until_ms, device_id LIMIT ?",
        (now_ms, limit),
    )
    return [DeviceRecord(*row) for row in rows]


def set_proven(db: sqlite3.Connection, handle: str, at_ms: int) -> None:
    db.execute("UPDATE handles SET proven_at_ms = ? WHERE handle = ?", (at_ms, handle))


def proofs_due(db: sqlite3.Connection, before_ms: int, limit: int) -> list[str]:
    rows = db.execute(
        "SELECT handle FROM handles WHERE handle LIKE 'tel:%' AND proven_at_ms < ?"
        " ORDER BY proven_at_ms, handle LIMIT ?",
        (before_ms, limit),
    )
    return [row[0] for row in rows]
