"""The embedded default store: one SQLite file in the server's data folder.

WAL with ``synchronous=FULL``: a call returns only after its transaction is on disk, so
"committed" survives a power cut. Writes go through one writer thread that commits
concurrent calls together (see :mod:`parley.store.sqlite_worker`); reads go through a
second connection on a reader thread, which WAL lets run beside the writer.

One server process owns the file. Several nodes need the PostgreSQL store.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import replace

from parley.core import fallback as fb
from parley.core.codes import PendingCode
from parley.core.leaving import Departure, Left, Overdue
from parley.core.receipts import AckedEnvelope
from parley.store import sqlite_carrier as carrier_sql
from parley.store import sqlite_leaving as leaving_sql
from parley.store.base import DeviceRecord, NewEnvelope, Registration, Submitted
from parley.store.sqlite_worker import SqliteWorker
from parley.wire import ClaimedKey, Envelope, KeyCount, SignedKey

SCHEMA_VERSION = 4

# Migrations by target version; the store applies the missing ones at open.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE handles (
        handle TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(account_id)
    );
    CREATE INDEX handles_by_account ON handles(account_id);
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(account_id),
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        identity_key TEXT NOT NULL DEFAULT '',
        signing_key TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX devices_by_account ON devices(account_id);
    CREATE TABLE codes (
        handle TEXT NOT NULL,
        purpose TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        attempts_left INTEGER NOT NULL,
        PRIMARY KEY (handle, purpose)
    ) WITHOUT ROWID;
    CREATE TABLE sent_ids (
        sender_device TEXT NOT NULL,
        message_id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender_device, message_id)
    ) WITHOUT ROWID;
    -- AUTOINCREMENT: a seq is never reused, even after a mailbox empties.
    CREATE TABLE mailbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        sender_account TEXT NOT NULL,
        sender_device TEXT NOT NULL,
        sender_handle TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX mailbox_by_device ON mailbox(device_id, seq);
    """,
    2: carrier_sql.CARRIER_MIGRATION,
    3: """
    -- Public halves of end-to-end keys. A one-time key row is deleted when it is claimed;
    -- rowid order is upload order, so the oldest is handed out first.
    CREATE TABLE one_time_keys (
        device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
        key_id TEXT NOT NULL,
        key TEXT NOT NULL,
        signature TEXT NOT NULL,
        UNIQUE (device_id, key_id)
    );
    CREATE INDEX one_time_keys_by_device ON one_time_keys(device_id);
    CREATE TABLE fallback_keys (
        device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
        key_id TEXT NOT NULL,
        key TEXT NOT NULL,
        signature TEXT NOT NULL
    );
    """,
    4: leaving_sql.LEAVING_MIGRATION,
}

_ENVELOPE_COLUMNS = "seq, message_id, kind, sender_account, sender_device, sender_handle, sent_at_ms, body"
_INSERT_ENVELOPE = (
    "INSERT INTO mailbox (device_id, message_id, kind, sender_account, sender_device, sender_handle,"
    " sent_at_ms, body) SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS"
    " (SELECT 1 FROM devices WHERE device_id = ?) RETURNING seq"
)


def _configure(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")


def _migrate(connection: sqlite3.Connection) -> None:
    _configure(connection)
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema {version} is newer than this Parley ({SCHEMA_VERSION})")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[target].split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version={target}")
        connection.execute("COMMIT")


def _device(row: tuple[str, str, str, str, int, str, str, str, int]) -> DeviceRecord:
    return DeviceRecord(*row)


_DEVICE_COLUMNS = (
    "device_id, account_id, name, secret_hash, created_at_ms, identity_key, signing_key, inbox_key, lease_until_ms"
)


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = SqliteWorker(path, name="parley-sqlite-writer", transactional=True)
        self._reader = SqliteWorker(path, name="parley-sqlite-reader", transactional=False)

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))  # noqa: ASYNC240  once, at start
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Create the file private before SQLite opens it: its -wal and -shm files copy
        # the database file's mode, and the WAL holds committed data until a checkpoint.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._writer.start(_migrate)
        self._reader.start(_configure)

    async def close(self) -> None:
        self._reader.stop()
        self._writer.stop()

    async def ping(self) -> None:
        await self._reader.call(_ping)

    @property
    def pending_writes(self) -> int:
        return self._writer.pending

    # --- accounts, handles, devices ---

    async def account_for_handle(self, handle: str) -> str | None:
        return await self._reader.call(_account_for_handle, handle)

    async def handles_of(self, account_id: str) -> list[str]:
        return await self._reader.call(_handles_of, account_id)

    async def register_device(
        self, handle: str, new_account_id: str, device: DeviceRecord, max_devices: int
    ) -> Registration:
        return await self._writer.call(_register_device, handle, new_account_id, device, max_devices)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        return await self._reader.call(_get_device, device_id)

    async def devices_of(self, account_id: str) -> list[DeviceRecord]:
        return await self._reader.call(_devices_of, account_id)

    async def remove_device(self, device_id: str) -> bool:
        return await self._writer.call(_remove_device, device_id)

    # --- end-to-end keys ---

    async def add_prekeys(
        self, device_id: str, one_time: list[SignedKey], fallback: SignedKey | None, max_held: int
    ) -> int | None:
        try:
            return await self._writer.call(_add_prekeys, device_id, one_time, fallback, max_held)
        except _OverLimit:
            return None

    async def claim_prekey(self, device_id: str) -> ClaimedKey | None:
        return await self._writer.call(_claim_prekey, device_id)

    async def prekey_count(self, device_id: str) -> KeyCount:
        return await self._reader.call(_prekey_count, device_id)

    # --- codes ---

    async def put_code(self, code: PendingCode) -> None:
        await self._writer.call(_put_code, code)

    async def get_code(self, handle: str, purpose: str) -> PendingCode | None:
        return await self._reader.call(_get_code, handle, purpose)

    async def delete_code(self, handle: str, purpose: str) -> None:
        await self._writer.call(_delete_code, handle, purpose)

    # --- mailboxes ---

    async def submit(
        self,
        sender_device: str,
        message_id: str,
        envelopes: list[NewEnvelope],
        now_ms: int,
        fallbacks: Sequence[fb.Fallback] = (),
    ) -> Submitted:
        return await self._writer.call(_submit, sender_device, message_id, envelopes, now_ms, fallbacks)

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[Envelope]:
        return await self._writer.call(_enqueue, envelopes)

    async def fetch(self, device_id: str, after_seq: int, limit: int) -> tuple[list[Envelope], bool]:
        return await self._reader.call(_fetch, device_id, after_seq, limit)

    async def ack(self, device_id: str, up_to: int) -> list[AckedEnvelope]:
        return await self._writer.call(_ack, device_id, up_to)

    async def expire(self, before_ms: int) -> int:
        return await self._writer.call(_expire, before_ms)

    async def queued_count(self, device_id: str) -> int:
        return await self._reader.call(_queued_count, device_id)

    # --- the carrier path ---

    async def settle_fallbacks(self, recipient_account: str, acked: Sequence[tuple[str, str]]) -> int:
        return await self._writer.call(carrier_sql.settle_fallbacks, recipient_account, list(acked))

    async def due_fallbacks(self, now_ms: int, limit: int) -> list[fb.Fallback]:
        return await self._reader.call(carrier_sql.due_fallbacks, now_ms, limit)

    async def fallbacks_notified(self, keys: Sequence[fb.FallbackKey]) -> None:
        await self._writer.call(carrier_sql.fallbacks_notified, list(keys))

    async def queue_sms(
        self, item: fb.OutboxItem, fallback: fb.FallbackKey | None, now_ms: int
    ) -> tuple[fb.Claim, fb.OutboxItem]:
        return await self._writer.call(carrier_sql.queue_sms, item, fallback, now_ms)

    async def sms_to_send(self, now_ms: int, limit: int, lease_ms: int) -> list[fb.OutboxItem]:
        return await self._writer.call(carrier_sql.sms_to_send, now_ms, limit, lease_ms)

    async def update_sms(self, item: fb.OutboxItem) -> None:
        await self._writer.call(carrier_sql.update_sms, item)

    async def find_sms(self, sms_id: str = "", carrier_ref: str = "") -> fb.OutboxItem | None:
        return await self._reader.call(carrier_sql.find_sms, sms_id, carrier_ref)

    # --- leaving Parley (queries in sqlite_leaving.py) ---
    async def note_overdue(self, items: Sequence[Overdue]) -> None:
        await self._writer.call(leaving_sql.note_overdue, list(items))

    async def overdue(self, limit: int) -> list[Overdue]:
        return await self._reader.call(leaving_sql.overdue, limit)

    async def leave(self, handle: str, record: Left) -> Departure:
        return await self._writer.call(leaving_sql.leave, handle, record)

    async def left_record(self, handle: str) -> Left | None:
        return await self._reader.call(leaving_sql.left_record, handle)

    async def set_proven(self, handle: str, at_ms: int) -> None:
        await self._writer.call(leaving_sql.set_proven, handle, at_ms)

    async def proofs_due(self, before_ms: int, limit: int) -> list[str]:
        return await self._reader.call(leaving_sql.proofs_due, before_ms, limit)

    async def renew_lease(self, device_id: str, until_ms: int) -> bool:
        return await self._writer.call(leaving_sql.renew_lease, device_id, until_ms)

    async def lapsed_devices(self, now_ms: int, limit: int) -> list[DeviceRecord]:
        return await self._reader.call(leaving_sql.lapsed_devices, now_ms, limit, _DEVICE_COLUMNS)


# The functions below run on a worker thread, each inside the worker's transaction.


def _ping(db: sqlite3.Connection) -> None:
    db.execute("SELECT 1").fetchone()


def _account_for_handle(db: sqlite3.Connection, handle: str) -> str | None:
    row = db.execute("SELECT account_id FROM handles WHERE handle = ?", (handle,)).fetchone()
    return row[0] if row else None


def _handles_of(db: sqlite3.Connection, account_id: str) -> list[str]:
    rows = db.execute("SELECT handle FROM handles WHERE account_id = ? ORDER BY handle", (account_id,))
    return [row[0] for row in rows]


def _register_device(
    db: sqlite3.Connection, handle: str, new_account_id: str, device: DeviceRecord, max_devices: int
) -> Registration:
    db.execute("DELETE FROM left_handles WHERE handle = ?", (handle,))
    account_id = _account_for_handle(db, handle)
    created = account_id is None
    if account_id is None:
        account_id = new_account_id
        db.execute("INSERT INTO accounts VALUES (?, ?)", (account_id, device.created_at_ms))
        db.execute("INSERT INTO handles (handle, account_id) VALUES (?, ?)", (handle, account_id))
    db.execute("UPDATE handles SET proven_at_ms = ? WHERE handle = ?", (device.created_at_ms, handle))
    (count,) = db.execute("SELECT count(*) FROM devices WHERE account_id = ?", (account_id,)).fetchone()
    if count >= max_devices:
        return Registration(None, created)
    record = replace(device, account_id=account_id)
    db.execute(
        f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.device_id,
            record.account_id,
            record.name,
            record.secret_hash,
            record.created_at_ms,
            record.identity_key,
            record.signing_key,
            record.inbox_key,
            record.lease_until_ms,
        ),
    )
    return Registration(account_id, created)


def _get_device(db: sqlite3.Connection, device_id: str) -> DeviceRecord | None:
    row = db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return _device(row) if row else None


def _devices_of(db: sqlite3.Connection, account_id: str) -> list[DeviceRecord]:
    rows = db.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account_id = ? ORDER BY created_at_ms, device_id",
        (account_id,),
    )
    return [_device(row) for row in rows]


def _remove_device(db: sqlite3.Connection, device_id: str) -> bool:
    db.execute("DELETE FROM mailbox WHERE device_id = ?", (device_id,))
    db.execute("DELETE FROM one_time_keys WHERE device_id = ?", (device_id,))
    db.execute("DELETE FROM fallback_keys WHERE device_id = ?", (device_id,))
    return db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)).rowcount > 0


def _add_prekeys(
    db: sqlite3.Connection, device_id: str, one_time: list[SignedKey], fallback: SignedKey | None, max_held: int
) -> int | None:
    if db.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)).fetchone() is None:
        return None
    db.executemany(
        "INSERT OR IGNORE INTO one_time_keys VALUES (?, ?, ?, ?)",
        [(device_id, key.key_id, key.key, key.signature) for key in one_time],
    )
    (held,) = db.execute("SELECT count(*) FROM one_time_keys WHERE device_id = ?", (device_id,)).fetchone()
    if held > max_held:
        raise _OverLimit  # rolls back this call's savepoint: nothing is stored
    if fallback is not None:
        db.execute(
            "INSERT OR REPLACE INTO fallback_keys VALUES (?, ?, ?, ?)",
            (device_id, fallback.key_id, fallback.key, fallback.signature),
        )
    return int(held)


class _OverLimit(Exception):
    pass


def _claim_prekey(db: sqlite3.Connection, device_id: str) -> ClaimedKey | None:
    row = db.execute(
        "DELETE FROM one_time_keys WHERE rowid = (SELECT min(rowid) FROM one_time_keys WHERE device_id = ?)"
        " RETURNING key_id, key, signature",
        (device_id,),
    ).fetchone()
    if row is not None:
        return ClaimedKey(device_id, *row)
    row = db.execute("SELECT key_id, key, signature FROM fallback_keys WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        return None
    key_id, key, signature = row
    return ClaimedKey(device_id, key_id, key, signature, fallback=True)


def _prekey_count(db: sqlite3.Connection, device_id: str) -> KeyCount:
    (held,) = db.execute("SELECT count(*) FROM one_time_keys WHERE device_id = ?", (device_id,)).fetchone()
    fallback = db.execute("SELECT 1 FROM fallback_keys WHERE device_id = ?", (device_id,)).fetchone()
    return KeyCount(int(held), fallback is not None)


def _put_code(db: sqlite3.Connection, code: PendingCode) -> None:
    db.execute(
        "INSERT OR REPLACE INTO codes VALUES (?, ?, ?, ?, ?)",
        (code.handle, code.purpose, code.code_hash, code.expires_at_ms, code.attempts_left),
    )


def _get_code(db: sqlite3.Connection, handle: str, purpose: str) -> PendingCode | None:
    row = db.execute(
        "SELECT handle, purpose, code_hash, expires_at_ms, attempts_left FROM codes WHERE handle = ? AND purpose = ?",
        (handle, purpose),
    ).fetchone()
    return PendingCode(*row) if row else None


def _delete_code(db: sqlite3.Connection, handle: str, purpose: str) -> None:
    db.execute("DELETE FROM codes WHERE handle = ? AND purpose = ?", (handle, purpose))


def _submit(
    db: sqlite3.Connection,
    sender_device: str,
    message_id: str,
    envelopes: list[NewEnvelope],
    now_ms: int,
    fallbacks: Sequence[fb.Fallback],
) -> Submitted:
    inserted = db.execute(
        "INSERT OR IGNORE INTO sent_ids VALUES (?, ?, ?)", (sender_device, message_id, now_ms)
    ).rowcount
    if not inserted:
        return Submitted(True, [], [])
    db.executemany(
        "INSERT OR IGNORE INTO fallbacks VALUES (?, ?, ?, ?, ?, ?)",
        [
            (w.sender_account, w.message_id, w.recipient_account, w.recipient_handle, w.deadline_ms, w.state.value)
            for w in fallbacks
        ],
    )
    stored = _enqueue(db, envelopes)
    return Submitted(False, stored, [new.device_id for new in envelopes])


def _enqueue(db: sqlite3.Connection, envelopes: list[NewEnvelope]) -> list[Envelope]:
    stored = []
    for new in envelopes:
        row = db.execute(
            _INSERT_ENVELOPE,
            (
                new.device_id,
                new.message_id,
                new.kind,
                new.sender_account,
                new.sender_device,
                new.sender_handle,
                new.sent_at_ms,
                new.body,
                new.device_id,
            ),
        ).fetchone()
        # A device removed since the send was planned gets nothing; seq 0 marks that.
        seq = row[0] if row else 0
        stored.append(
            Envelope(
                seq=seq,
                message_id=new.message_id,
                kind=new.kind,
                sender_account=new.sender_account,
                sender_device=new.sender_device,
                sender_handle=new.sender_handle,
                sent_at_ms=new.sent_at_ms,
                body=new.body,
            )
        )
    return stored


def _fetch(db: sqlite3.Connection, device_id: str, after_seq: int, limit: int) -> tuple[list[Envelope], bool]:
    rows = db.execute(
        f"SELECT {_ENVELOPE_COLUMNS} FROM mailbox WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (device_id, after_seq, limit + 1),
    ).fetchall()
    page = [Envelope(*row) for row in rows[:limit]]
    return page, len(rows) > limit


def _ack(db: sqlite3.Connection, device_id: str, up_to: int) -> list[AckedEnvelope]:
    rows = db.execute(
        "DELETE FROM mailbox WHERE device_id = ? AND seq <= ? RETURNING seq, message_id, kind, sender_account",
        (device_id, up_to),
    ).fetchall()
    rows.sort()  # RETURNING order is unspecified; the interface promises seq order
    return [AckedEnvelope(message_id, kind, sender) for _, message_id, kind, sender in rows]


def _expire(db: sqlite3.Connection, before_ms: int) -> int:
    dropped = db.execute("DELETE FROM mailbox WHERE sent_at_ms < ?", (before_ms,)).rowcount
    db.execute("DELETE FROM sent_ids WHERE created_at_ms < ?", (before_ms,))
    db.execute("DELETE FROM fallbacks WHERE deadline_ms < ?", (before_ms,))
    db.execute("DELETE FROM sms_outbox WHERE created_at_ms < ? AND state != 'pending'", (before_ms,))
    return dropped


def _queued_count(db: sqlite3.Connection, device_id: str) -> int:
    (count,) = db.execute("SELECT count(*) FROM mailbox WHERE device_id = ?", (device_id,)).fetchone()
    return int(count)
