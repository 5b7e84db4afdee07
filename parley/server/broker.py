"""Several server nodes: what they tell each other through an existing broker (Redis).

The store is the truth; the broker only makes pushes immediate. Every node subscribes
to one channel per device connected to it (``<prefix>:d:<device_id>``), so a message is
routed to the one node holding the recipient, and no node sees the others' traffic.
One more channel (``<prefix>:directory``) carries directory-cache invalidations to all.

Redis pub/sub delivers at most once. A lost or reordered message costs a push, not an
envelope: the push session reads the mailbox at any gap (see
:mod:`parley.core.session`), and after the broker connection comes back every local
device reads its mailbox and the directory cache is dropped (``on_resync``).

One task owns the subscribing connection (reads, subscribes, unsubscribes), so nothing
races on it; one task publishes, in order, many messages per round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import redis.asyncio as redis

from parley.wire import NodeFrame, frame_encode, node_frame_decoder

log = logging.getLogger("parley.broker")

READ_POLL_S = 0.05  # how long a read waits before the reader looks at its to-do list
SUBSCRIBE_TIMEOUT_S = 5.0
MAX_PUBLISH_BATCH = 512


class Broker(Protocol):
    """What the hub and the directory need of the broker."""

    node_id: str

    @property
    def connected(self) -> bool: ...

    async def start(self, on_frame: Callable[[NodeFrame], None], on_resync: Callable[[], None]) -> None: ...

    async def stop(self) -> None: ...

    async def watch(self, device_id: str) -> None:
        """Receive this device's frames; returns once the subscription is in place."""
        ...

    def unwatch(self, device_id: str) -> None: ...

    def to_device(self, device_id: str, frame: NodeFrame) -> None:
        """Queue a frame for the node holding ``device_id`` (if any); never blocks."""
        ...

    def to_all(self, frame: NodeFrame) -> None: ...


class RedisBroker:
    def __init__(self, url: str, node_id: str, prefix: str = "parley", on_error: Callable[[str], None] | None = None):
        self.node_id = node_id
        self._url = url
        self._prefix = prefix
        self._on_error = on_error or (lambda where: None)
        self._client: Any = None
        self._pubsub: Any = None
        self._on_frame: Callable[[NodeFrame], None] = lambda frame: None
        self._on_resync: Callable[[], None] = lambda: None
        self._watching: dict[str, int] = {}  # channel -> local connections wanting it
        self._confirmations: dict[str, list[asyncio.Future[None]]] = {}
        self._todo: list[tuple[str, str]] = []  # ("subscribe" | "unsubscribe", channel)
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False

    @property
    def directory_channel(self) -> str:
        return f"{self._prefix}:directory"

    def device_channel(self, device_id: str) -> str:
        return f"{self._prefix}:d:{device_id}"

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, on_frame: Callable[[NodeFrame], None], on_resync: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_resync = on_resync
        self._client = redis.from_url(
            self._url, health_check_interval=10, socket_connect_timeout=5, client_name=f"parley-{self.node_id}"
        )
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self.directory_channel)
        self._connected = True
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="parley-broker-reader"),
            asyncio.create_task(self._publish_loop(), name="parley-broker-publisher"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        self._connected = False

    # --- subscribing ---

    async def watch(self, device_id: str) -> None:
        channel = self.device_channel(device_id)
        self._watching[channel] = self._watching.get(channel, 0) + 1
        if self._watching[channel] > 1:
            return
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, []).append(confirmed)
        self._todo.append(("subscribe", channel))
        try:
            await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            # The broker is away: the device still reads its mailbox now, and every
            # device reads it again when the broker is back (on_resync).
            log.warning("broker subscription for device %s not confirmed in time", device_id)
            self._on_error("broker")

    def unwatch(self, device_id: str) -> None:
        channel = self.device_channel(device_id)
        left = self._watching.get(channel, 0) - 1
        if left > 0:
            self._watching[channel] = left
            return
        self._watching.pop(channel, None)
        self._todo.append(("unsubscribe", channel))

    async def _read_loop(self) -> None:
        backoff = 0.1
        resync = False
        while True:
            try:
                await self._do_todo()
                message = await self._pubsub.get_message(timeout=READ_POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._connected:
                    log.error("broker connection lost: %r", error)
                    self._on_error("broker")
                self._connected = False
                resync = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if resync:
                # Reconnected: redis-py has subscribed every channel again in one
                # command, so from here on nothing is missed; what was missed meanwhile
                # is in the store.
                log.info("broker connection restored")
                resync = False
                self._connected = True
                backoff = 0.1
                self._on_resync()
            if message is not None:
                self._handle(message)

    async def _do_todo(self) -> None:
        """Send the queued (un)subscriptions, many channels per command."""
        if not self._todo:
            return
        todo, self._todo = self._todo, []
        subscribe = [c for a, c in dict.fromkeys(todo) if a == "subscribe" and c in self._watching]
        unsubscribe = [c for a, c in dict.fromkeys(todo) if a == "unsubscribe" and c not in self._watching]
        try:
            if subscribe:
                await self._pubsub.subscribe(*subscribe)
            if unsubscribe:
                await self._pubsub.unsubscribe(*unsubscribe)
        except BaseException:
            self._todo = todo + self._todo  # not sent: try again once reconnected
            raise

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        raw = message.get("channel")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind == "subscribe":
            for future in self._confirmations.pop(channel, []):
                if not future.done():
                    future.set_result(None)
            return
        if kind != "message":
            return
        try:
            frame = node_frame_decoder.decode(message["data"])
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.error("undecodable broker message on %s: %s", channel, error)
            self._on_error("broker")
            return
        self._on_frame(frame)

    # --- publishing ---

    def to_device(self, device_id: str, frame: NodeFrame) -> None:
        self._outbox.put_nowait((self.device_channel(device_id), frame_encode(frame)))

    def to_all(self, frame: NodeFrame) -> None:
        self._outbox.put_nowait((self.directory_channel, frame_encode(frame)))

    @property
    def pending(self) -> int:
        return self._outbox.qsize()

    async def _publish_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < MAX_PUBLISH_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            for attempt in range(3):
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for channel, data in batch:
                            pipe.publish(channel, data)
                        await pipe.execute()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.error("broker publish failed (attempt %d): %r", attempt + 1, error)
                    self._on_error("broker")
                    await asyncio.sleep(0.2 * (attempt + 1))
