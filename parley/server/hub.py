"""The hub: the one place that writes mailboxes and pushes to live connections.

A send is checked against the directory (the core decides), committed to every target
mailbox in one store call, and only then pushed to whichever target devices are
connected; the rest read their mailbox when they reconnect. An ack removes envelopes
and writes "delivered" receipts to the senders' devices the same way.

The carrier path: a send to numbers on Parley starts fallback watches in the same store
call (``core.fallback`` decides which); an ack settles them. The SMS service
(``parley.server.sms``) writes its envelopes (fallback notices, SMS status, inbound
SMS) through :meth:`Hub.deliver` and :meth:`Hub.commit_copies`.

With several nodes (a :class:`~parley.server.broker.Broker`), a target device that is
not connected here may be connected to another node: the hub sends its stored envelopes
to that device's broker channel, and the node holding it pushes them through its own
hub. The broker is a thin layer under the hub, never a second writer of mailboxes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from parley.core import fallback, fanout, handles
from parley.core.receipts import plan_receipts
from parley.errors import ApiError, InvalidHandle
from parley.server.broker import Broker
from parley.server.directory import Directory
from parley.server.metrics import Metrics
from parley.store.base import DeviceRecord, NewEnvelope, Store
from parley.wire import (
    MAX_BODY_BYTES,
    DeliveryReceipt,
    Envelope,
    ErrorCode,
    NodeDeliver,
    NodeForget,
    NodeFrame,
    NodeKick,
    SendAccepted,
    SendRequest,
    SignalRelayed,
    SignalRequest,
    frame_encode,
)

log = logging.getLogger("parley.hub")


class LiveConnection(Protocol):
    """What the hub needs of a connected device (see ``parley.server.ws``)."""

    def live(self, envelopes: list[Envelope]) -> None: ...

    def poke(self) -> None:
        """The mailbox may hold envelopes this connection was not told about."""
        ...

    def close_replaced(self) -> None: ...

    def ephemeral(self, envelopes: list[Envelope]) -> None: ...


@dataclass(frozen=True)
class SendPlan:
    """A checked send, ready to commit."""

    sender: DeviceRecord
    message_id: str
    envelopes: list[NewEnvelope]
    fallbacks: list[fallback.Fallback]


# Envelopes for one device larger than this travel as a bare "read your mailbox".
MAX_CARRIED_BYTES = 4 * MAX_BODY_BYTES


class Hub:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        clock: Callable[[], int],
        metrics: Metrics | None = None,
        broker: Broker | None = None,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._broker = broker
        self._connections: dict[str, LiveConnection] = {}

    @property
    def contiguous(self) -> bool:
        """Whether live envelopes may come from several writers (see PushSession)."""
        return self._broker is not None

    # --- connections ---

    async def attach(self, device_id: str, connection: LiveConnection) -> None:
        """Register a live connection; returns once it will be told of every commit."""
        previous = self._connections.get(device_id)
        self._connections[device_id] = connection
        if previous is not None and previous is not connection:
            previous.close_replaced()
        if self._broker is not None:
            await self._broker.watch(device_id)
            # An older connection of this device on another node is stale: close it.
            self._broker.to_device(device_id, NodeKick(device_id, keep_node=self._broker.node_id))
            self._metrics.broker_frames.labels("out").inc()

    def detach(self, device_id: str, connection: LiveConnection) -> None:
        if self._connections.get(device_id) is connection:
            del self._connections[device_id]
        if self._broker is not None:
            self._broker.unwatch(device_id)

    @property
    def connected(self) -> int:
        return len(self._connections)

    def connected_ids(self) -> list[str]:
        return list(self._connections)

    def disconnect(self, device_id: str) -> None:
        """Close a device's live connection, on whichever node (it was unlinked)."""
        connection = self._connections.pop(device_id, None)
        if connection is not None:
            connection.close_replaced()
        if self._broker is not None:
            self._broker.to_device(device_id, NodeKick(device_id))

    def close_all(self, close: Callable[[LiveConnection], None]) -> int:
        """Close every live connection (the node is shutting down); return how many."""
        connections = list(self._connections.values())
        for connection in connections:
            close(connection)
        return len(connections)

    # --- what other nodes say (over the broker) ---

    def on_node_frame(self, frame: NodeFrame) -> None:
        self._metrics.broker_frames.labels("in").inc()
        if type(frame) is NodeDeliver:
            connection = self._connections.get(frame.device_id)
            if connection is None:
                return
            if frame.envelopes and frame.envelopes[0].kind == "ephemeral":
                connection.ephemeral(frame.envelopes)  # relayed by another node; never stored
            elif frame.envelopes:
                self._metrics.envelopes_pushed.inc(len(frame.envelopes))
                connection.live(frame.envelopes)
            else:
                connection.poke()
        elif type(frame) is NodeKick:
            if self._broker is not None and frame.keep_node != self._broker.node_id:
                connection = self._connections.pop(frame.device_id, None)
                if connection is not None:
                    connection.close_replaced()
        elif type(frame) is NodeForget and (self._broker is None or frame.from_node != self._broker.node_id):
            self._directory.forget(frame.account_id, frame.handle or None)

    def on_broker_resync(self) -> None:
        """The broker was away: anything may have been missed. Read from the store."""
        self._directory.forget_all()
        for connection in list(self._connections.values()):
            connection.poke()

    # --- sending ---

    async def plan(self, sender: DeviceRecord, request: SendRequest) -> SendPlan:
        """Check a send against the directory; raise ApiError if it cannot be stored."""
        recipient_devices: dict[str, tuple[str, ...]] = {}
        reached: list[tuple[str, str]] = []
        for raw in request.recipients:
            try:
                handle = handles.normalise(raw)
            except InvalidHandle as error:
                raise ApiError(400, ErrorCode.INVALID_HANDLE, str(error)) from None
            account_id = await self._directory.account_for(handle)
            account = await self._directory.account(account_id) if account_id else None
            if account is None or not account.device_ids:
                raise ApiError(404, ErrorCode.NOT_ON_PARLEY, f"{handle} is not on Parley")
            recipient_devices[account.account_id] = account.device_ids
            reached.append((handle, account.account_id))
        own = await self._directory.account(sender.account_id)
        named = [envelope.device_id for envelope in request.envelopes]
        repeated = fanout.duplicates(named)
        if repeated:
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"more than one envelope for device {repeated[0]}")
        expected = fanout.expected_targets(own.device_ids, sender.device_id, recipient_devices)
        if request.kind == "control":
            if not named:
                raise ApiError(400, ErrorCode.BAD_REQUEST, "a control send names at least one device")
            diff = fanout.diff_control_set(expected, named)
        else:
            diff = fanout.diff_device_set(expected, named)
        if diff:
            raise ApiError(
                409,
                ErrorCode.STALE_DEVICES,
                "the device list is out of date; look the recipients up again",
                missing=diff.missing,
                extra=diff.extra,
            )
        now = self._clock()
        envelopes = [
            NewEnvelope(
                device_id=out.device_id,
                message_id=request.message_id,
                kind=request.kind,
                sender_account=sender.account_id,
                sender_device=sender.device_id,
                sender_handle=own.primary_handle,
                sent_at_ms=now,
                body=out.body,
            )
            for out in request.envelopes
        ]
        watches = fallback.watches_for_send(
            sender.account_id, request.message_id, reached, now, request.fallback_s, request.kind
        )
        return SendPlan(sender, request.message_id, envelopes, watches)

    async def commit(self, plan: SendPlan) -> SendAccepted:
        """Store a planned send and push it to the targets that are connected.

        The store call is queued before this coroutine's first suspension, so sends
        committed in the order their ``commit`` tasks were created keep that order.
        """
        with self._metrics.commit_seconds.time():
            submitted = await self._store.submit(
                plan.sender.device_id, plan.message_id, plan.envelopes, self._clock(), plan.fallbacks
            )
        if submitted.duplicate:
            self._metrics.duplicates.inc()
        else:
            self._metrics.messages.inc()
            self._metrics.envelopes_stored.labels("message").inc(len(submitted.envelopes))
            self._push(submitted.device_ids, submitted.envelopes)
        return SendAccepted(message_id=plan.message_id, duplicate=submitted.duplicate)

    async def send(self, sender: DeviceRecord, request: SendRequest) -> SendAccepted:
        return await self.commit(await self.plan(sender, request))

    async def relay(self, sender: DeviceRecord, signal: SignalRequest) -> SignalRelayed:
        """Push an ephemeral signal to the named devices that are connected; store nothing.
        Checked as a control send is: only devices a control send may name."""
        request = SendRequest(
            message_id=signal.message_id, recipients=signal.recipients, envelopes=signal.envelopes, kind="control"
        )
        plan = await self.plan(sender, request)
        relayed = 0
        for new in plan.envelopes:
            connection = self._connections.get(new.device_id)
            if connection is None and self._broker is None:
                continue
            envelope = Envelope(
                seq=0,
                message_id=new.message_id,
                kind="ephemeral",
                sender_account=new.sender_account,
                sender_device=new.sender_device,
                sender_handle=new.sender_handle,
                sent_at_ms=new.sent_at_ms,
                body=new.body,
            )
            if connection is not None:
                connection.ephemeral([envelope])
            else:  # perhaps connected to another node: its hub pushes it, or nobody does
                assert self._broker is not None
                self._broker.to_device(new.device_id, NodeDeliver(new.device_id, [envelope]))
            relayed += 1
        return SignalRelayed(relayed=relayed)

    # --- acknowledging ---

    async def ack(self, device: DeviceRecord, up_to: int) -> int:
        """Remove what the device acked and tell the senders it was delivered."""
        acked = await self._store.ack(device.device_id, up_to)
        self._metrics.acked.inc(len(acked))
        plans = plan_receipts(acked, device.account_id)
        if not plans:
            return len(acked)
        settled = [(plan.sender_account, message_id) for plan in plans for message_id in plan.message_ids]
        await self._store.settle_fallbacks(device.account_id, settled)
        now = self._clock()
        acker = await self._directory.account(device.account_id)
        receipts: list[NewEnvelope] = []
        for plan in plans:
            body = frame_encode(DeliveryReceipt(device_id=device.device_id, message_ids=plan.message_ids, at_ms=now))
            sender = await self._directory.account(plan.sender_account)
            receipts.extend(
                NewEnvelope(
                    device_id=target,
                    message_id=plan.message_ids[-1],
                    kind="delivered",
                    sender_account=device.account_id,
                    sender_device=device.device_id,
                    sender_handle=acker.primary_handle,
                    sent_at_ms=now,
                    body=body,
                )
                for target in sender.device_ids
            )
        await self.deliver(receipts)
        return len(acked)

    async def deliver(self, envelopes: list[NewEnvelope]) -> None:
        """Store server-written envelopes and push them to the targets that are connected."""
        if not envelopes:
            return
        stored = await self._store.enqueue(envelopes)
        for kind in {e.kind for e in envelopes}:
            self._metrics.envelopes_stored.labels(kind).inc(sum(1 for e in envelopes if e.kind == kind))
        self._push([e.device_id for e in envelopes], stored)

    async def commit_copies(self, sender: DeviceRecord, message_id: str, copies: list[NewEnvelope]) -> None:
        """Store the sender's own copies of a message that went out only by SMS, once."""
        submitted = await self._store.submit(sender.device_id, message_id, copies, self._clock())
        if not submitted.duplicate:
            self._push(submitted.device_ids, submitted.envelopes)

    def _push(self, device_ids: list[str], envelopes: list[Envelope]) -> None:
        by_device: dict[str, list[Envelope]] = {}
        for device_id, envelope in zip(device_ids, envelopes, strict=True):
            if envelope.seq and (self._broker is not None or device_id in self._connections):
                by_device.setdefault(device_id, []).append(envelope)
        for device_id, batch in by_device.items():
            connection = self._connections.get(device_id)
            if connection is not None:
                self._metrics.envelopes_pushed.inc(len(batch))
                connection.live(batch)
            elif self._broker is not None:
                carried = sum(len(envelope.body) for envelope in batch) <= MAX_CARRIED_BYTES
                self._broker.to_device(device_id, NodeDeliver(device_id, batch if carried else []))
                self._metrics.broker_frames.labels("out").inc()
