"""Group commit for the PostgreSQL store: mailbox writes queued while one transaction
commits all go into the next one.

Why batch rather than let a connection pool run one transaction per send: every write
to a mailbox locks that device's counter row (``mailbox_heads``) until commit, so
per-send transactions to one busy device queue up behind each other's ``fsync``; a
batch bumps each counter once. One writer per node also keeps a sender's messages in
the order they were read, as the SQLite store does. ``bench/store_commit.py`` measured
it (see docs/architecture.md).

The writer runs on a thread of its own, with its own event loop and connection, like the
SQLite writer thread: a batch is several round trips to PostgreSQL, and on the server's
loop, busy with thousands of connections, each would wait its turn behind them (measured:
230 ms a batch there, 40 ms here). Results go back to the caller's loop in one
``call_soon_threadsafe`` per batch.

A batch is a handful of set-based statements whatever its size (see
:func:`parley.store.postgres.write_batch`). If a batch fails for a reason that is not a
lock conflict, each call in it is retried alone, so one bad call fails by itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from parley.core.fallback import Fallback
from parley.store.base import NewEnvelope

log = logging.getLogger("parley.store.postgres")

RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
START_TIMEOUT_S = 30.0


@dataclass
class WriteCall:
    """One call waiting for a batch: a ``submit`` (``key`` set), an ``enqueue`` (``key``
    None), or an ``ack`` (``ack`` set: device id and up-to seq; no envelopes)."""

    key: tuple[str, str] | None  # (sender_device, message_id)
    envelopes: list[NewEnvelope]
    now_ms: int
    future: asyncio.Future[Any] = field(repr=False)
    ack: tuple[str, int] | None = None
    fallbacks: Sequence[Fallback] = ()  # a submit's fallback watches


BatchWriter = Callable[[Any, list[WriteCall]], Awaitable[list[Any]]]
_STOP = None


class GroupCommitter:
    def __init__(self, url: str, write: BatchWriter, max_batch: int = 512) -> None:
        self._url = url
        self._write = write
        self._max_batch = max_batch
        self._pending: collections.deque[WriteCall | None] = collections.deque()
        self._thread: threading.Thread | None = None
        self._caller: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the writer thread's
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._connection: Any = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._caller = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="parley-pg-writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait, START_TIMEOUT_S)
        if self._startup_error is not None:
            raise self._startup_error
        if not self._ready.is_set():
            raise TimeoutError("the PostgreSQL writer did not connect in time")

    async def call(
        self,
        key: tuple[str, str] | None,
        envelopes: list[NewEnvelope],
        now_ms: int,
        ack: tuple[str, int] | None = None,
        fallbacks: Sequence[Fallback] = (),
    ) -> Any:
        loop, wake = self._loop, self._wake
        if self._thread is None or loop is None or wake is None:
            raise RuntimeError("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(WriteCall(key, envelopes, now_ms, future, ack, fallbacks))
        loop.call_soon_threadsafe(wake.set)
        return await future

    async def stop(self) -> None:
        """Commit everything queued, then stop."""
        thread, loop, wake = self._thread, self._loop, self._wake
        if thread is None:
            return
        self._pending.append(_STOP)
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                loop.call_soon_threadsafe(wake.set)
        await asyncio.to_thread(thread.join)
        self._thread = None

    # --- on the writer thread ---

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            self._connection = await asyncpg.connect(self._url)
        except BaseException as error:  # handed to start(), which raises it
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    batch: list[WriteCall] = []
                    stop = False
                    while self._pending and len(batch) < self._max_batch:
                        item = self._pending.popleft()
                        if item is None:
                            stop = True
                            break
                        batch.append(item)
                    if batch:
                        await self._commit(batch)
                    if stop:
                        return
        finally:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _commit(self, batch: list[WriteCall]) -> None:
        try:
            results = await self._attempt(batch)
        except Exception as error:
            if len(batch) == 1:
                self._settle([(batch[0].future, False, error)])
                return
            log.warning("a batch of %d writes failed (%r); retrying each alone", len(batch), error)
            for call in batch:
                await self._commit([call])
            return
        self._settle([(call.future, True, result) for call, result in zip(batch, results, strict=True)])

    async def _attempt(self, batch: list[WriteCall]) -> list[Any]:
        for attempt in range(3):
            try:
                if self._connection.is_closed():
                    self._connection = await asyncpg.connect(self._url)
                async with self._connection.transaction():
                    return await self._write(self._connection, batch)
            except RETRYABLE:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _settle(self, results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        assert self._caller is not None
        self._caller.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
