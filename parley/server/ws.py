"""The WebSocket layer: moves frames between one device and the hub.

It decides nothing: what to push comes from the device's :class:`PushSession`, what to
store from the :class:`Hub`. It reads frames in order, so a device's sends are planned
and queued for commit in the order they were sent, without waiting for each commit:
many sends from one connection share a group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
from starlette.websockets import WebSocket

from parley.core.session import AckBeyondPushed, Fetch, Push, PushSession
from parley.errors import ApiError
from parley.server.directory import Directory
from parley.server.hub import Hub
from parley.server.metrics import Metrics
from parley.store.base import DeviceRecord, Store
from parley.wire import (
    Ack,
    Deliver,
    Envelope,
    Ephemeral,
    ErrorCode,
    ErrorInfo,
    Hello,
    Ping,
    Pong,
    Refused,
    Send,
    SendAccepted,
    Sent,
    Signal,
    WsClose,
    client_frame_decoder,
    frame_encode,
)

log = logging.getLogger("parley.ws")

MAX_ENVELOPES_PER_FRAME = 256
MAX_PENDING_FRAMES = 4096  # replies queued for a client that does not read them
MAX_COMMITS_IN_FLIGHT = 1024  # sends read but not yet committed, per connection


def bearer(headers: Any) -> str:
    value: str = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def serve_device(
    websocket: WebSocket,
    directory: Directory,
    hub: Hub,
    store: Store,
    clock: Callable[[], int],
    window: int,
    metrics: Metrics,
) -> None:
    """Run one device's connection from handshake to close."""
    await websocket.accept()
    try:
        device = await directory.authenticate(bearer(websocket.headers))
    except ApiError as error:
        await websocket.close(WsClose.UNAUTHORIZED, error.message)
        return
    connection = DeviceConnection(websocket, device, hub, store, clock, window, metrics)
    await connection.run()


class DeviceConnection:
    def __init__(
        self,
        websocket: WebSocket,
        device: DeviceRecord,
        hub: Hub,
        store: Store,
        clock: Callable[[], int],
        window: int,
        metrics: Metrics,
    ) -> None:
        self._websocket = websocket
        self._device = device
        self._hub = hub
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._session = PushSession(window, contiguous=hub.contiguous)
        self._frames: list[bytes] = []
        self._envelopes: list[Envelope] = []
        self._wake = asyncio.Event()
        self._commit_slots = asyncio.Semaphore(MAX_COMMITS_IN_FLIGHT)
        self._close_code: int | None = None
        self._close_reason = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        device = self._device
        self._queue(Hello(device_id=device.device_id, account_id=device.account_id, server_time_ms=self._clock()))
        writer = asyncio.create_task(self._write_loop())
        try:
            # Attached (and subscribed on the broker) before the first read of the
            # mailbox, so nothing committed from here on can be missed.
            await self._hub.attach(device.device_id, self)
            self._apply(self._session.start())
            await self._read_loop()
        finally:
            self._hub.detach(device.device_id, self)
            for task in self._tasks:
                task.cancel()
            if self._close_code is None:
                writer.cancel()
            # The writer ends by closing the socket, or is cancelled; either way it is done.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    # --- what the hub calls ---

    def live(self, envelopes: list[Envelope]) -> None:
        self._apply(self._session.live(envelopes))

    def poke(self) -> None:
        self._apply(self._session.poke())

    def ephemeral(self, envelopes: list[Envelope]) -> None:
        self._queue(Ephemeral(envelopes=envelopes))

    def close_replaced(self) -> None:
        self._close(WsClose.REPLACED, "this device connected again elsewhere, or was unlinked")

    def close_going_away(self) -> None:
        self._close(WsClose.GOING_AWAY, "the server is shutting down; reconnect")

    # --- reading ---

    async def _read_loop(self) -> None:
        receive = self._websocket.receive
        while self._close_code is None:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                self._close(WsClose.BAD_FRAME, "frames are MessagePack in binary messages")
                return
            try:
                frame = client_frame_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                self._close(WsClose.BAD_FRAME, f"bad frame: {error}"[:120])
                return
            if type(frame) is Send:
                await self._on_send(frame)
            elif type(frame) is Ack:
                self._on_ack(frame.up_to)
            elif type(frame) is Signal:
                self._spawn(self._relay(frame))
            elif type(frame) is Ping:
                self._queue(Pong(client_time_ms=frame.client_time_ms, server_time_ms=self._clock()))

    async def _on_send(self, frame: Send) -> None:
        try:
            plan = await self._hub.plan(self._device, frame)
        except ApiError as error:
            self._queue(Refused(message_id=frame.message_id, error=error_info(error)))
            return
        await self._commit_slots.acquire()
        task = asyncio.ensure_future(self._hub.commit(plan))
        task.add_done_callback(partial(self._committed, frame.message_id))

    async def _relay(self, frame: Signal) -> None:
        with contextlib.suppress(ApiError):  # a signal is a courtesy: a stale one is dropped
            await self._hub.relay(self._device, frame)

    def _committed(self, message_id: str, task: asyncio.Future[SendAccepted]) -> None:
        self._commit_slots.release()
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            accepted = task.result()
            self._queue(Sent(message_id=message_id, duplicate=accepted.duplicate))
            return
        log.error("commit failed for a send from device %s: %r", self._device.device_id, error)
        self._metrics.errors.labels("commit").inc()
        info = ErrorInfo(code=ErrorCode.UNAVAILABLE, message="the server could not store the message; retry")
        self._queue(Refused(message_id=message_id, error=info))

    def _on_ack(self, up_to: int) -> None:
        try:
            actions = self._session.acked(up_to)
        except AckBeyondPushed as error:
            self._close(WsClose.BAD_FRAME, str(error))
            return
        self._spawn(self._hub.ack(self._device, up_to))
        self._apply(actions)

    # --- acting on the session ---

    def _apply(self, actions: list[Push | Fetch]) -> None:
        for action in actions:
            if type(action) is Push:
                self._envelopes.extend(action.envelopes)
                self._wake.set()
            elif type(action) is Fetch:
                self._spawn(self._fetch(action.after_seq, action.limit))

    async def _fetch(self, after_seq: int, limit: int) -> None:
        envelopes, more = await self._store.fetch(self._device.device_id, after_seq, limit)
        self._apply(self._session.fetched(envelopes, more))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed for device %s: %r", self._device.device_id, task.exception())
            self._metrics.errors.labels("connection").inc()
            self._close(WsClose.GOING_AWAY, "server error; reconnect")

    # --- writing ---

    def _queue(self, frame: msgspec.Struct) -> None:
        self._frames.append(frame_encode(frame))
        if len(self._frames) > MAX_PENDING_FRAMES:
            self._close(WsClose.TOO_SLOW, "the client is not reading its frames")
        self._wake.set()

    def _close(self, code: int, reason: str) -> None:
        if self._close_code is None:
            self._close_code = code
            self._close_reason = reason
            self._wake.set()

    async def _write_loop(self) -> None:
        send = self._websocket.send
        while True:
            await self._wake.wait()
            self._wake.clear()
            frames, self._frames = self._frames, []
            envelopes, self._envelopes = self._envelopes, []
            for data in frames:
                await send({"type": "websocket.send", "bytes": data})
            for start in range(0, len(envelopes), MAX_ENVELOPES_PER_FRAME):
                chunk = envelopes[start : start + MAX_ENVELOPES_PER_FRAME]
                await send({"type": "websocket.send", "bytes": frame_encode(Deliver(envelopes=chunk))})
            if self._close_code is not None:
                await self._websocket.close(self._close_code, self._close_reason)
                return


def error_info(error: ApiError) -> ErrorInfo:
    detail = error.detail
    return ErrorInfo(
        code=error.code,
        message=error.message,
        missing=detail.get("missing"),  # type: ignore[arg-type]
        extra=detail.get("extra"),  # type: ignore[arg-type]
        retry_after_s=detail.get("retry_after_s"),  # type: ignore[arg-type]
    )
