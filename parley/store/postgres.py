"""The PostgreSQL store: for several server nodes sharing one database.

asyncpg with a connection pool. Reads go straight to the pool; mailbox writes
(``submit``, ``enqueue``, ``ack``) go through one group-commit writer per node
(:mod:`parley.store.pg_writer`); everything else is a short transaction of its own.
Every method returns after PostgreSQL has committed (``synchronous_commit`` as the
server is configured: ``on`` by default, which is durable).

Seqs: each device has a counter row in ``mailbox_heads``. A transaction that writes to a
mailbox locks the counter rows it needs (in device id order, so two nodes never
deadlock), hands out the next seqs and commits before the lock is released. So within a
mailbox, seqs grow in commit order, without gaps, and are never reused; a global
sequence would not do this under concurrent transactions.

The schema is managed by Alembic (:mod:`parley.store.pg_migrate`); :meth:`open`
migrates it to the version this Parley needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from parley.core import fallback as fb
from parley.core.codes import PendingCode
from parley.core.leaving import Departure, Left, Overdue
from parley.core.receipts import AckedEnvelope
from parley.store import pg_carrier, pg_keys, pg_leaving, pg_migrate
from parley.store.base import DeviceRecord, NewEnvelope, Registration, Submitted
from parley.store.pg_writer import GroupCommitter, WriteCall
from parley.wire import ClaimedKey, Envelope, KeyCount, SignedKey

_DEVICE_COLUMNS = (
    "device_id, account_id, name, secret_hash, created_at_ms, identity_key, signing_key, inbox_key, lease_until_ms"
)
_ENVELOPE_COLUMNS = "seq, message_id, kind, sender_account, sender_device, sender_handle, sent_at_ms, body"


def asyncpg_url(url: str) -> str:
    """asyncpg takes ``postgresql://`` and ``postgres://``; accept SQLAlchemy's form too."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 10, max_batch: int = 512, migrate: bool = True) -> None:
        self.url = asyncpg_url(url)
        self._pool_size = pool_size
        self._max_batch = max_batch
        self._migrate = migrate
        self._pool: Any = None
        self._writer: GroupCommitter | None = None

    async def open(self) -> None:
        if self._migrate:
            await pg_migrate.upgrade(self.url)
        self._pool = await asyncpg.create_pool(self.url, min_size=2, max_size=self._pool_size)
        self._writer = GroupCommitter(self.url, write_batch, self._max_batch)
        await self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def server_secret(self) -> bytes:
        """The deployment's secret, shared by every node (made by the first migration)."""
        secret: bytes = await self._pool.fetchval("SELECT secret FROM server_secret WHERE id = 1")
        return secret

    @property
    def pending_writes(self) -> int:
        return self._writer.pending if self._writer is not None else 0

    # --- accounts, handles, devices ---

    async def account_for_handle(self, handle: str) -> str | None:
        value: str | None = await self._pool.fetchval("SELECT account_id FROM handles WHERE handle = $1", handle)
        return value

    async def handles_of(self, account_id: str) -> list[str]:
        rows = await self._pool.fetch("SELECT handle FROM handles WHERE account_id = $1 ORDER BY handle", account_id)
        return [row[0] for row in rows]

    async def register_device(
        self, handle: str, new_account_id: str, device: DeviceRecord, max_devices: int
    ) -> Registration:
        for attempt in range(3):
            try:
                async with self._pool.acquire() as db, db.transaction():
                    return await _register_device(db, handle, new_account_id, device, max_devices)
            except asyncpg.UniqueViolationError:
                # Another node created an account for this handle at the same moment;
                # the next attempt finds it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._pool.fetchrow(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = $1", device_id)
        return DeviceRecord(*row) if row else None

    async def devices_of(self, account_id: str) -> list[DeviceRecord]:
        rows = await self._pool.fetch(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account_id = $1 ORDER BY created_at_ms, device_id",
            account_id,
        )
        return [DeviceRecord(*row) for row in rows]

    async def remove_device(self, device_id: str) -> bool:
        async with self._pool.acquire() as db, db.transaction():
            # The counter row first: it waits for any batch writing to this mailbox, and
            # once it is gone no later batch can add to the mailbox.
            await db.execute("DELETE FROM mailbox_heads WHERE device_id = $1", device_id)
            await db.execute("DELETE FROM mailbox WHERE device_id = $1", device_id)
            status: str = await db.execute("DELETE FROM devices WHERE device_id = $1", device_id)
            return status != "DELETE 0"

    # --- end-to-end keys (see pg_keys) ---

    async def add_prekeys(
        self, device_id: str, one_time: list[SignedKey], fallback: SignedKey | None, max_held: int
    ) -> int | None:
        try:
            async with self._pool.acquire() as db, db.transaction():
                return await pg_keys.add_prekeys(db, device_id, one_time, fallback, max_held)
        except pg_keys.OverLimit:
            return None

    async def claim_prekey(self, device_id: str) -> ClaimedKey | None:
        return await pg_keys.claim_prekey(self._pool, device_id)

    async def prekey_count(self, device_id: str) -> KeyCount:
        return await pg_keys.prekey_count(self._pool, device_id)

    # --- verification codes ---

    async def put_code(self, code: PendingCode) -> None:
        await self._pool.execute(
            "INSERT INTO codes (handle, purpose, code_hash, expires_at_ms, attempts_left)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (handle, purpose) DO UPDATE SET"
            " code_hash = EXCLUDED.code_hash, expires_at_ms = EXCLUDED.expires_at_ms,"
            " attempts_left = EXCLUDED.attempts_left",
            code.handle,
            code.purpose,
            code.code_hash,
            code.expires_at_ms,
            code.attempts_left,
        )

    async def get_code(self, handle: str, purpose: str) -> PendingCode | None:
        row = await self._pool.fetchrow(
            "SELECT handle, purpose, code_hash, expires_at_ms, attempts_left FROM codes"
            " WHERE handle = $1 AND purpose = $2",
            handle,
            purpose,
        )
        return PendingCode(*row) if row else None

    async def delete_code(self, handle: str, purpose: str) -> None:
        await self._pool.execute("DELETE FROM codes WHERE handle = $1 AND purpose = $2", handle, purpose)

    # --- mailboxes ---

    async def submit(
        self,
        sender_device: str,
        message_id: str,
        envelopes: list[NewEnvelope],
        now_ms: int,
        fallbacks: Sequence[fb.Fallback] = (),
    ) -> Submitted:
        assert self._writer is not None, "store not open"
        result: Submitted = await self._writer.call((sender_device, message_id), envelopes, now_ms, None, fallbacks)
        return result

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[Envelope]:
        assert self._writer is not None, "store not open"
        result: list[Envelope] = await self._writer.call(None, envelopes, 0)
        return result

    async def fetch(self, device_id: str, after_seq: int, limit: int) -> tuple[list[Envelope], bool]:
        rows = await self._pool.fetch(
            f"SELECT {_ENVELOPE_COLUMNS} FROM mailbox WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            device_id,
            after_seq,
            limit + 1,
        )
        return [Envelope(*row) for row in rows[:limit]], len(rows) > limit

    async def ack(self, device_id: str, up_to: int) -> list[AckedEnvelope]:
        assert self._writer is not None, "store not open"
        result: list[AckedEnvelope] = await self._writer.call(None, [], 0, ack=(device_id, up_to))
        return result

    async def expire(self, before_ms: int) -> int:
        async with self._pool.acquire() as db, db.transaction():
            status: str = await db.execute("DELETE FROM mailbox WHERE sent_at_ms < $1", before_ms)
            await db.execute("DELETE FROM sent_ids WHERE created_at_ms < $1", before_ms)
            await pg_carrier.expire(db, before_ms)
        return int(status.rsplit(" ", 1)[1])

    async def queued_count(self, device_id: str) -> int:
        count: int = await self._pool.fetchval("SELECT count(*) FROM mailbox WHERE device_id = $1", device_id)
        return count

    # --- the carrier path: fallback watches and the SMS outbox (see pg_carrier) ---

    async def settle_fallbacks(self, recipient_account: str, acked: Sequence[tuple[str, str]]) -> int:
        async with self._pool.acquire() as db, db.transaction():
            await pg_leaving.settle_overdue(db, recipient_account, acked)
            return await pg_carrier.settle_fallbacks(db, recipient_account, acked)

    async def due_fallbacks(self, now_ms: int, limit: int) -> list[fb.Fallback]:
        return await pg_carrier.due_fallbacks(self._pool, now_ms, limit)

    async def fallbacks_notified(self, keys: Sequence[fb.FallbackKey]) -> None:
        await pg_carrier.fallbacks_notified(self._pool, keys)

    async def queue_sms(
        self, item: fb.OutboxItem, fallback: fb.FallbackKey | None, now_ms: int
    ) -> tuple[fb.Claim, fb.OutboxItem]:
        async with self._pool.acquire() as db, db.transaction():
            return await pg_carrier.queue_sms(db, item, fallback, now_ms)

    async def sms_to_send(self, now_ms: int, limit: int, lease_ms: int) -> list[fb.OutboxItem]:
        return await pg_carrier.sms_to_send(self._pool, now_ms, limit, lease_ms)

    async def update_sms(self, item: fb.OutboxItem) -> None:
        await pg_carrier.update_sms(self._pool, item)

    async def find_sms(self, sms_id: str = "", carrier_ref: str = "") -> fb.OutboxItem | None:
        return await pg_carrier.find_sms(self._pool, sms_id, carrier_ref)

    # --- leaving Parley (see pg_leaving) ---

    async def note_overdue(self, items: Sequence[Overdue]) -> None:
        await pg_leaving.note_overdue(self._pool, items)

    async def overdue(self, limit: int) -> list[Overdue]:
        return await pg_leaving.overdue(self._pool, limit)

    async def leave(self, handle: str, record: Left) -> Departure:
        async with self._pool.acquire() as db, db.transaction():
            return await pg_leaving.leave(db, handle, record)

    async def left_record(self, handle: str) -> Left | None:
        return await pg_leaving.left_record(self._pool, handle)

    async def set_proven(self, handle: str, at_ms: int) -> None:
        await pg_leaving.set_proven(self._pool, handle, at_ms)

    async def proofs_due(self, before_ms: int, limit: int) -> list[str]:
        return await pg_leaving.proofs_due(self._pool, before_ms, limit)

    async def renew_lease(self, device_id: str, until_ms: int) -> bool:
        return await pg_leaving.renew_lease(self._pool, device_id, until_ms)

    async def lapsed_devices(self, now_ms: int, limit: int) -> list[DeviceRecord]:
        return await pg_leaving.lapsed_devices(self._pool, now_ms, limit, _DEVICE_COLUMNS)


async def _register_device(
    db: Any, handle: str, new_account_id: str, device: DeviceRecord, max_devices: int
) -> Registration:
    await db.execute("DELETE FROM left_handles WHERE handle = $1", handle)
    account_id: str | None = await db.fetchval("SELECT account_id FROM handles WHERE handle = $1", handle)
    created = account_id is None
    if account_id is None:
        account_id = new_account_id
        await db.execute("INSERT INTO accounts VALUES ($1, $2)", account_id, device.created_at_ms)
        await db.execute("INSERT INTO handles (handle, account_id) VALUES ($1, $2)", handle, account_id)
    await db.execute("UPDATE handles SET proven_at_ms = $2 WHERE handle = $1", handle, device.created_at_ms)
    # Lock the account so two nodes registering at once cannot both pass the count.
    await db.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", account_id)
    count = await db.fetchval("SELECT count(*) FROM devices WHERE account_id = $1", account_id)
    if count >= max_devices:
        return Registration(None, created)
    record = replace(device, account_id=account_id)
    await db.execute(
        f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        record.device_id,
        record.account_id,
        record.name,
        record.secret_hash,
        record.created_at_ms,
        record.identity_key,
        record.signing_key,
        record.inbox_key,
        record.lease_until_ms,
    )
    await db.execute("INSERT INTO mailbox_heads (device_id) VALUES ($1)", record.device_id)
    return Registration(account_id, created)


async def _ack_batch(db: Any, acks: list[WriteCall]) -> dict[int, list[AckedEnvelope]]:
    """Delete every acked envelope at once; give each ack call what it removed."""
    rows = await db.fetch(
        "WITH gone AS (DELETE FROM mailbox m USING unnest($1::text[], $2::bigint[]) AS a(device_id, up_to)"
        " WHERE m.device_id = a.device_id AND m.seq <= a.up_to"
        " RETURNING m.device_id, m.seq, m.message_id, m.kind, m.sender_account)"
        " SELECT * FROM gone ORDER BY device_id, seq",
        [call.ack[0] for call in acks if call.ack],
        [call.ack[1] for call in acks if call.ack],
    )
    removed: dict[int, list[AckedEnvelope]] = {id(call): [] for call in acks}
    for device_id, seq, message_id, kind, sender_account in rows:
        # The first ack (in call order) of this device that covers the seq removed it.
        owner = next(c for c in acks if c.ack is not None and c.ack[0] == device_id and seq <= c.ack[1])
        removed[id(owner)].append(AckedEnvelope(message_id, kind, sender_account))
    return removed


async def write_batch(db: Any, batch: list[WriteCall]) -> list[Any]:
    """Commit a batch of submits, enqueues and acks in a few set-based statements.

    1. Acks: one DELETE for all of them (they touch only envelopes already committed).
    2. Idempotency keys, sorted (so concurrent batches take their locks in one order):
       a key already stored, or repeated earlier in this batch, makes its call a duplicate.
    3. Lock the counter rows of every target mailbox, in device id order.
    4. Hand out seqs in call order; a device that is gone gets seq 0 and nothing stored.
    5. Store the counters and the envelopes in one statement.
    """
    original_batch = batch
    acks = [call for call in batch if call.ack is not None]
    acked = await _ack_batch(db, acks) if acks else {}
    batch = [call for call in batch if call.ack is None]
    keys = sorted({call.key: call.now_ms for call in batch if call.key is not None}.items())
    accepted: set[tuple[str, str]] = set()
    if keys:
        rows = await db.fetch(
            "INSERT INTO sent_ids (sender_device, message_id, created_at_ms)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING"
            " RETURNING sender_device, message_id",
            [key[0] for key, _ in keys],
            [key[1] for key, _ in keys],
            [now for _, now in keys],
        )
        accepted = {(row[0], row[1]) for row in rows}
    writing: list[WriteCall | None] = []
    for call in batch:
        if call.key is None:
            writing.append(call)
        elif call.key in accepted:
            accepted.discard(call.key)  # a repeat later in this batch is a duplicate
            writing.append(call)
        else:
            writing.append(None)
    targets = sorted({new.device_id for call in writing if call for new in call.envelopes})
    heads: dict[str, int] = {}
    if targets:
        rows = await db.fetch(
            "SELECT device_id, last_seq FROM mailbox_heads WHERE device_id = ANY($1::text[])"
            " ORDER BY device_id FOR UPDATE",
            targets,
        )
        heads = {row[0]: row[1] for row in rows}
    results: list[Any] = []
    stored: list[tuple[str, Envelope]] = []
    for accepted_call, original in zip(writing, batch, strict=True):
        if accepted_call is None:
            results.append(Submitted(True, [], []))
            continue
        envelopes = []
        for new in accepted_call.envelopes:
            seq = 0
            if new.device_id in heads:
                heads[new.device_id] += 1
                seq = heads[new.device_id]
            envelope = Envelope(
                seq,
                new.message_id,
                new.kind,
                new.sender_account,
                new.sender_device,
                new.sender_handle,
                new.sent_at_ms,
                new.body,
            )
            envelopes.append(envelope)
            if seq:
                stored.append((new.device_id, envelope))
        if original.key is None:
            results.append(envelopes)
        else:
            results.append(Submitted(False, envelopes, [new.device_id for new in accepted_call.envelopes]))
    if stored:
        await db.execute(
            "WITH bumped AS (UPDATE mailbox_heads SET last_seq = h.last_seq"
            " FROM unnest($1::text[], $2::bigint[]) AS h(device_id, last_seq)"
            " WHERE mailbox_heads.device_id = h.device_id)"
            " INSERT INTO mailbox (device_id, seq, message_id, kind, sender_account, sender_device,"
            " sender_handle, sent_at_ms, body)"
            " SELECT * FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[],"
            " $9::text[], $10::bigint[], $11::bytea[])",
            list(heads),
            list(heads.values()),
            [device for device, _ in stored],
            [e.seq for _, e in stored],
            [e.message_id for _, e in stored],
            [e.kind for _, e in stored],
            [e.sender_account for _, e in stored],
            [e.sender_device for _, e in stored],
            [e.sender_handle for _, e in stored],
            [e.sent_at_ms for _, e in stored],
            [e.body for _, e in stored],
        )
    await pg_carrier.insert_watches(db, [w for call in writing if call for w in call.fallbacks])
    if not acked:
        return results
    writes = iter(results)
    return [acked[id(call)] if call.ack is not None else next(writes) for call in original_batch]
