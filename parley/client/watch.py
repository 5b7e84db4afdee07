"""A device's live connection that does not silently stop.

The loop connects, resumes after the last acked envelope (the server pushes everything
still in the mailbox, in seq order; history is keyed by sender device and message id,
so nothing is shown twice), and keeps the connection honest with heartbeats: after
``heartbeat_s`` without a frame it sends a ``ping``; if a whole further ``heartbeat_s``
passes without any frame, the connection is half-open (the peer vanished without a
close) and is dropped. It then reconnects with exponential backoff and full jitter.

On every (re)connect it repairs what a gap can leave behind: the outbox (sent again
under the same ids), unsynced reads, one-time keys, messages that did not decrypt.
Each ``pong`` measures the clock against the server's and corrects the device's clock
when they drift apart. Every repair is written to the repair log (``parley doctor``) and
reported as a :class:`Repaired` event; a revoked credential is logged as "needs you" and
raised with the one command to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import websockets
from websockets.asyncio.client import ClientConnection

from parley.client import checks
from parley.client.events import Event, Repaired, StateChanged
from parley.errors import ParleyError, ProtocolError, Rejected, Unreachable, UsageError
from parley.wire import Ack, Deliver, Ephemeral, Hello, Ping, Pong, WsClose, frame_encode, server_frame_decoder

if TYPE_CHECKING:
    from parley.client.device import Device

HEARTBEAT_S = 15.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class HalfOpen(Exception):
    """No frame arrived for a heartbeat after a ping: the connection is dead."""


def next_backoff(backoff_s: float) -> float:
    return min(backoff_s * 2, BACKOFF_MAX_S)


def jittered(backoff_s: float, unit: float) -> float:
    """A delay in [backoff/2, backoff*1.5): clients that lost the same server do not
    all come back at the same instant. ``unit`` is a random number in [0, 1)."""
    return backoff_s * (0.5 + unit)


class Watcher:
    def __init__(self, device: Device, on_event: Callable[[Event], None], stop: asyncio.Event, heartbeat_s: float):
        self._device = device
        self._on_event = on_event
        self._stop = stop
        self._heartbeat_s = heartbeat_s
        self._failure = ""  # why the last connection ended, until the next one is up
        self._attempts = 0

    async def run(self) -> None:
        backoff_s = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                await self._connect_once()
                backoff_s = BACKOFF_FIRST_S
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code == WsClose.UNAUTHORIZED:
                    raise self._revoked() from None
                if code == WsClose.REPLACED:
                    await self._still_registered()  # "replaced" is also how an unlink looks
                    raise UsageError("this device connected from another process; only one may watch") from None
                self._failed(f"the connection closed ({code or 'no close frame'})")
            except HalfOpen as error:
                self._failed(str(error))
                backoff_s = BACKOFF_FIRST_S  # the server may be fine: come back at once
            except Rejected as error:
                if error.code == "unauthorized":
                    raise self._revoked() from None
                self._failed(f"the server refused a request ({error.code})")
            except (TimeoutError, OSError, websockets.InvalidHandshake, Unreachable):
                self._failed("the server could not be reached")
            if self._stop.is_set():
                return
            delay = jittered(backoff_s, random.random())
            backoff_s = next_backoff(backoff_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    def _failed(self, why: str) -> None:
        if not self._failure:
            self._failure = why
        self._attempts += 1

    async def _still_registered(self) -> None:
        try:
            await self._device.api.devices()
        except Rejected as error:
            if error.status == 401:
                raise self._revoked() from None
        except Unreachable:
            pass

    def _revoked(self) -> Rejected:
        device = self._device
        device.profile.set_many({"revoked": str(device.now())})
        facts = checks.Facts(device.now(), device.profile.name, device.server, device.handle, device.device_id)
        command = checks.register_command(facts)
        device.log_repair("registration", checks.Status.NEEDS_YOU.value, "the server no longer accepts this device")
        return Rejected("unauthorized", f"the server no longer accepts this device; run: {command}")

    def _emit(self, event: Event) -> None:
        self._on_event(event)

    async def _connect_once(self) -> None:
        device = self._device
        async with device.connect() as ws:
            stopper = asyncio.ensure_future(self._stop.wait())
            pinged_at: float | None = None
            try:
                while True:
                    wait_s = self._heartbeat_s
                    if pinged_at is not None:
                        wait_s = max(0.0, pinged_at + self._heartbeat_s - time.monotonic())
                    receiving = asyncio.ensure_future(ws.recv())
                    done, _ = await asyncio.wait(
                        {receiving, stopper}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stopper in done:
                        receiving.cancel()
                        return
                    if receiving not in done:
                        receiving.cancel()
                        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                            await receiving
                        if pinged_at is not None:
                            ws.transport.abort()  # never wait for a close from a dead peer
                            raise HalfOpen(f"no answer to a heartbeat in {self._heartbeat_s:g} s (half-open)")
                        await ws.send(frame_encode(Ping(client_time_ms=device.raw_clock())))
                        pinged_at = time.monotonic()
                        continue
                    pinged_at = None
                    data = receiving.result()
                    if isinstance(data, str):
                        raise ProtocolError("the server sent a text frame")
                    await self._on_frame(ws, data)
            finally:
                stopper.cancel()

    async def _on_frame(self, ws: ClientConnection, data: bytes) -> None:
        device = self._device
        frame = server_frame_decoder.decode(data)
        if isinstance(frame, Hello):
            await ws.send(frame_encode(Ping(client_time_ms=device.raw_clock())))  # measures the clock
            await self._connected()
        elif isinstance(frame, Pong):
            self._check_clock(frame)
        elif isinstance(frame, Ephemeral):
            for envelope in frame.envelopes:  # never stored, never acked
                typing = device.presence.open(envelope)
                if typing is not None:
                    self._emit(typing)
        elif isinstance(frame, Deliver) and frame.envelopes:
            events = await device.accept(frame.envelopes)
            await ws.send(frame_encode(Ack(up_to=frame.envelopes[-1].seq)))
            for event in events:
                self._emit(event)
            if any(isinstance(e, StateChanged) and e.state == "sms_due" for e in events):
                for message_id, state in await device.flush_sms():
                    self._emit(StateChanged(message_id, state))

    async def _connected(self) -> None:
        """A connection is up: repair what the gap before it may have left."""
        device = self._device
        if self._failure:
            detail = f"{self._failure}; reconnected after {self._attempts} attempt(s)"
            device.log_repair("connection", checks.Status.REPAIRED.value, detail)
            self._emit(Repaired("connection", detail))
            self._failure, self._attempts = "", 0
        resent = await device.flush_outbox()
        for message_id in resent:
            self._emit(StateChanged(message_id, "sent"))
        if resent:
            detail = f"sent {len(resent)} message(s) left in the outbox"
            device.log_repair("outbox", checks.Status.REPAIRED.value, detail)
            self._emit(Repaired("outbox", detail))
        with contextlib.suppress(ParleyError):  # each is retried at the next connect
            reads = await device.reads.flush()
            if reads:
                device.log_repair("reads", checks.Status.REPAIRED.value, f"told the other devices of {reads} read(s)")
        uploaded = await device.channel.replenish_keys()
        if uploaded:
            device.log_repair("keys", checks.Status.REPAIRED.value, f"uploaded {uploaded} one-time keys")

    def _check_clock(self, pong: Pong) -> None:
        device = self._device
        skew = checks.skew(pong.client_time_ms, device.raw_clock(), pong.server_time_ms)
        correction = checks.clock_correction(device.clock_offset_ms, skew)
        if correction is None:
            return
        device.set_clock_offset(correction)
        detail = f"this device's clock is {checks.describe_skew(skew)}; using the server's time"
        if correction == 0:
            detail = "this device's clock is in step again; no correction"
        device.log_repair("clock", checks.Status.REPAIRED.value, detail)
        self._emit(Repaired("clock", detail))
