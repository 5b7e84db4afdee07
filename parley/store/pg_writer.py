"""Group commit for the PostgreSQL store: mailbox writes queued while one transaction
commits all go into the next one.

Why batch rather than let a connection pool run one transaction per send: every write
to a mailbox locks that device's counter row (``mailbox_heads``) until commit, so
per-send transactions to one busy device queue up behind each other's ``fsync``; a
batch bumps each counter once. One writer per node also keeps a sender's messages in
the order they were read, as the SQLite store does. ``docs/production.md`` has the
figures that decided it.

A batch is a handful of set-based statements whatever its size (see
:func:`parley.store.postgres.write_batch`). If a batch fails for a reason that is not a
lock conflict, each call in it is retried alone, so one bad call fails by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from parley.store.base import NewEnvelope

log = logging.getLogger("parley.store.postgres")

RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


@dataclass
class WriteCall:
    """One call waiting for a batch: a ``submit`` (``key`` set), an ``enqueue`` (``key``
    None), or an ``ack`` (``ack`` set: device id and up-to seq; no envelopes)."""

    key: tuple[str, str] | None  # (sender_device, message_id)
    envelopes: list[NewEnvelope]
    now_ms: int
    future: asyncio.Future[Any] = field(repr=False)
    ack: tuple[str, int] | None = None


BatchWriter = Callable[[Any, list[WriteCall]], Awaitable[list[Any]]]


class GroupCommitter:
    def __init__(self, pool: Any, write: BatchWriter, max_batch: int = 512) -> None:
        self._pool = pool
        self._write = write
        self._max_batch = max_batch
        self._queue: asyncio.Queue[WriteCall | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parley-pg-writer")

    async def call(
        self,
        key: tuple[str, str] | None,
        envelopes: list[NewEnvelope],
        now_ms: int,
        ack: tuple[str, int] | None = None,
    ) -> Any:
        if self._task is None or self._task.done():
            raise RuntimeError("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(WriteCall(key, envelopes, now_ms, future, ack))
        return await future

    async def stop(self) -> None:
        """Commit everything queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first] if first is not None else []
            stop = first is None
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[WriteCall]) -> None:
        try:
            results = await self._attempt(batch)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].future, error=error)
                return
            log.warning("a batch of %d writes failed (%r); retrying each alone", len(batch), error)
            for call in batch:
                await self._commit([call])
            return
        for call, result in zip(batch, results, strict=True):
            _settle(call.future, result=result)

    async def _attempt(self, batch: list[WriteCall]) -> list[Any]:
        for attempt in range(3):
            try:
                async with self._pool.acquire() as connection, connection.transaction():
                    return await self._write(connection, batch)
            except RETRYABLE:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")


def _settle(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
