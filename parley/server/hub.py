"""The hub: the one place that writes mailboxes and pushes to live connections.

A send is checked against the directory (the core decides), committed to every target
mailbox in one store call, and only then pushed to whichever target devices are
connected; the rest read their mailbox when they reconnect. An ack removes envelopes
and writes "delivered" receipts to the senders' devices the same way.

The carrier path: a send to numbers on Parley starts fallback watches in the same store
call (``core.fallback`` decides which); an ack settles them. The SMS service
(``parley.server.sms``) writes its envelopes (fallback notices, SMS status, inbound
SMS) through :meth:`Hub.deliver` and :meth:`Hub.commit_copies`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from parley.core import fallback, fanout, handles
from parley.core.receipts import plan_receipts
from parley.errors import ApiError, InvalidHandle
from parley.server.directory import Directory
from parley.store.base import DeviceRecord, NewEnvelope, Store
from parley.wire import DeliveryReceipt, Envelope, ErrorCode, SendAccepted, SendRequest, frame_encode

log = logging.getLogger("parley.hub")


class LiveConnection(Protocol):
    """What the hub needs of a connected device (see ``parley.server.ws``)."""

    def live(self, envelopes: list[Envelope]) -> None: ...

    def close_replaced(self) -> None: ...


@dataclass(frozen=True)
class SendPlan:
    """A checked send, ready to commit."""

    sender: DeviceRecord
    message_id: str
    envelopes: list[NewEnvelope]
    fallbacks: list[fallback.Fallback]


class Hub:
    def __init__(self, store: Store, directory: Directory, clock: Callable[[], int]) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._connections: dict[str, LiveConnection] = {}

    # --- connections ---

    def attach(self, device_id: str, connection: LiveConnection) -> None:
        previous = self._connections.get(device_id)
        self._connections[device_id] = connection
        if previous is not None and previous is not connection:
            previous.close_replaced()

    def detach(self, device_id: str, connection: LiveConnection) -> None:
        if self._connections.get(device_id) is connection:
            del self._connections[device_id]

    @property
    def connected(self) -> int:
        return len(self._connections)

    def disconnect(self, device_id: str) -> None:
        """Close a device's live connection (it was unlinked)."""
        connection = self._connections.pop(device_id, None)
        if connection is not None:
            connection.close_replaced()

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
        watches = fallback.watches_for_send(sender.account_id, request.message_id, reached, now, request.fallback_s)
        return SendPlan(sender, request.message_id, envelopes, watches)

    async def commit(self, plan: SendPlan) -> SendAccepted:
        """Store a planned send and push it to the targets that are connected.

        The store call is queued before this coroutine's first suspension, so sends
        committed in the order their ``commit`` tasks were created keep that order.
        """
        submitted = await self._store.submit(
            plan.sender.device_id, plan.message_id, plan.envelopes, self._clock(), plan.fallbacks
        )
        if not submitted.duplicate:
            self._push(submitted.device_ids, submitted.envelopes)
        return SendAccepted(message_id=plan.message_id, duplicate=submitted.duplicate)

    async def send(self, sender: DeviceRecord, request: SendRequest) -> SendAccepted:
        return await self.commit(await self.plan(sender, request))

    # --- acknowledging ---

    async def ack(self, device: DeviceRecord, up_to: int) -> int:
        """Remove what the device acked and tell the senders it was delivered."""
        acked = await self._store.ack(device.device_id, up_to)
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
        self._push([e.device_id for e in envelopes], stored)

    async def commit_copies(self, sender: DeviceRecord, message_id: str, copies: list[NewEnvelope]) -> None:
        """Store the sender's own copies of a message that went out only by SMS, once."""
        submitted = await self._store.submit(sender.device_id, message_id, copies, self._clock())
        if not submitted.duplicate:
            self._push(submitted.device_ids, submitted.envelopes)

    def _push(self, device_ids: list[str], envelopes: list[Envelope]) -> None:
        by_device: dict[str, list[Envelope]] = {}
        for device_id, envelope in zip(device_ids, envelopes, strict=True):
            if envelope.seq and device_id in self._connections:
                by_device.setdefault(device_id, []).append(envelope)
        for device_id, batch in by_device.items():
            self._connections[device_id].live(batch)
