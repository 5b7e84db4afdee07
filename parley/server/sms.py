"""The carrier path's shell: SMS submits, the durable outbox, fallback windows, inbound SMS.

It decides nothing itself: where a text may go and whether an SMS is due come from
:mod:`parley.core.fallback`, the encoding from :mod:`parley.core.sms_text`; the store
keeps the outbox and the watches; every envelope it writes (fallback notices, SMS
status, inbound SMS) goes through the :class:`Hub`, the one place that writes mailboxes.
It is also the gateway's :class:`CarrierSink`.

Two loops run beside the server: the **outbox** hands PENDING items to the gateway and
applies the outcome (retry with backoff, or SENT/FAILED), woken at once by a new item;
the **sweeper** finds fallback windows that passed and tells the sender's devices.
No message text is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import vodozemac

from parley.carrier.base import CarrierEvent, CarrierSms, DeliveryReport, GatewayError, OutboundSms, SmsGateway
from parley.core import fallback as fb
from parley.core import fanout, handles, sms_text
from parley.errors import ApiError, InvalidHandle
from parley.server.directory import Directory
from parley.server.hub import Hub
from parley.server.leaving import Exits
from parley.server.limits import Limiter
from parley.server.notices import SERVER_DEVICE, fallback_notices
from parley.store.base import DeviceRecord, NewEnvelope, Store
from parley.wire import (
    ErrorCode,
    InboundSms,
    SealedSms,
    SmsAccepted,
    SmsRequest,
    SmsStatus,
    frame_encode,
)

log = logging.getLogger("parley.sms")

SWEEP_INTERVAL_S = 0.25
OUTBOX_IDLE_S = 1.0
BATCH = 100
# A claimed SMS is this node's for this long; if the node dies mid-send, another retries.
SEND_LEASE_MS = 60_000
MAX_ORPHAN_REPORTS = 1000
SMS_DEVICE = "sms"  # sender_device of inbound SMS: the conversation is with the number


def reference_of(sms_id: str) -> int:
    """The concatenation reference for an SMS: stable across retries of the same item."""
    return hashlib.sha256(sms_id.encode()).digest()[0]


class SmsService:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        hub: Hub,
        gateway: SmsGateway,
        clock: Callable[[], int],
        make_id: Callable[[str], str],
        limiter: Limiter | None = None,
        exits: Exits | None = None,
        service_sender: str = "Parley",
    ) -> None:
        self._service_sender = service_sender  # the sender id codes go out from
        self._exits = exits
        self._limiter = limiter
        self._store = store
        self._directory = directory
        self._hub = hub
        self._gateway = gateway
        self._clock = clock
        self._make_id = make_id
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        # Reports that arrived before the item they name was recorded as SENT.
        self._orphans: OrderedDict[str, DeliveryReport] = OrderedDict()

    async def start(self) -> None:
        await self._gateway.start(self)
        self._tasks = [asyncio.create_task(self._outbox_loop()), asyncio.create_task(self._sweep_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._gateway.stop()

    # --- a sender device asks for an SMS ---

    async def submit(self, sender: DeviceRecord, request: SmsRequest) -> SmsAccepted:
        if self._limiter is not None:
            self._limiter.check("sms:account", sender.account_id)
        try:
            handle = handles.normalise(request.to)
        except InvalidHandle as error:
            raise ApiError(400, ErrorCode.INVALID_HANDLE, str(error)) from None
        if not handles.is_phone(handle):
            raise ApiError(400, ErrorCode.INVALID_HANDLE, f"{handle} is not a phone number; it cannot get SMS")
        number = handles.phone_of(handle)
        if not fb.sms_capable(number):
            raise ApiError(400, ErrorCode.NOT_SMS_CAPABLE, f"{number} cannot receive SMS")
        try:
            sms_text.encode(request.text, 0)
        except sms_text.SmsTextError as error:
            code = ErrorCode.TOO_LARGE if request.text else ErrorCode.BAD_REQUEST
            raise ApiError(400, code, str(error)) from None
        own = await self._directory.account(sender.account_id)
        if not own.primary_handle.startswith(handles.TEL):
            raise ApiError(400, ErrorCode.BAD_REQUEST, "SMS go out from a phone number; this account has none")
        recipient_account = await self._directory.account_for(handle)
        recipient = await self._directory.account(recipient_account) if recipient_account else None
        on_parley = recipient is not None and bool(recipient.device_ids) and recipient.account_id != own.account_id
        copies: list[NewEnvelope] = []
        if not on_parley and not request.handover:
            copies = self._copies(sender, own.device_ids, own.primary_handle, request)
        now = self._clock()
        item = fb.OutboxItem(
            sms_id=self._make_id("s"),
            sender_account=sender.account_id,
            message_id=request.message_id,
            sender_number=handles.phone_of(own.primary_handle),
            to_number=number,
            text=request.text,
            state=fb.SmsState.PENDING,
            created_at_ms=now,
            next_attempt_ms=now,
        )
        key = None
        if on_parley and recipient is not None:
            key = fb.FallbackKey(sender.account_id, request.message_id, recipient.account_id)
        verdict, stored = await self._store.queue_sms(item, key, now)
        if verdict is fb.Claim.NO_FALLBACK:
            raise ApiError(409, ErrorCode.NO_FALLBACK, f"{handle} is on Parley and this message needs no SMS")
        if verdict is fb.Claim.NOT_DUE:
            raise ApiError(409, ErrorCode.NOT_DUE, "the fallback window of this message is still open")
        if copies:
            # Idempotent by (device, message id): a retry after a crash stores them once.
            await self._hub.commit_copies(sender, request.message_id, copies)
        if verdict is fb.Claim.QUEUED:
            log.info(
                "SMS %s queued for message %s (%s)", stored.sms_id, stored.message_id, "fallback" if key else "direct"
            )
            await self._status(stored)
            self._wake.set()
        return SmsAccepted(
            message_id=request.message_id,
            sms_id=stored.sms_id,
            state=stored.state.value,
            duplicate=verdict is fb.Claim.DUPLICATE,
        )

    def _copies(
        self, sender: DeviceRecord, own_devices: tuple[str, ...], own_handle: str, request: SmsRequest
    ) -> list[NewEnvelope]:
        named = [copy.device_id for copy in request.copies]
        repeated = fanout.duplicates(named)
        if repeated:
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"more than one copy for device {repeated[0]}")
        diff = fanout.diff_device_set(fanout.expected_targets(own_devices, sender.device_id, {}), named)
        if diff:
            raise ApiError(
                409,
                ErrorCode.STALE_DEVICES,
                "the device list is out of date; look your devices up again",
                missing=diff.missing,
                extra=diff.extra,
            )
        now = self._clock()
        return [
            NewEnvelope(
                device_id=copy.device_id,
                message_id=request.message_id,
                kind="message",
                sender_account=sender.account_id,
                sender_device=sender.device_id,
                sender_handle=own_handle,
                sent_at_ms=now,
                body=copy.body,
            )
            for copy in request.copies
        ]

    # --- the outbox ---

    async def _outbox_loop(self) -> None:
        while True:
            try:
                handled = await self.send_due()
            except Exception:  # keep the loop alive; the item stays PENDING and is retried
                log.exception("the SMS outbox loop failed; retrying")
                handled = 0
            if handled < BATCH:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), OUTBOX_IDLE_S)

    async def send_due(self) -> int:
        """Hand every PENDING item whose attempt is due to the gateway; return how many."""
        items = await self._store.sms_to_send(self._clock(), BATCH, SEND_LEASE_MS)
        for item in items:
            await self._attempt(item)
        return len(items)

    async def _attempt(self, item: fb.OutboxItem) -> None:
        now = self._clock()
        try:
            encoded = sms_text.encode(item.text, reference_of(item.sms_id))
        except sms_text.SmsTextError as error:
            updated = fb.after_attempt(item, fb.Attempt.REJECTED, now, error=str(error))
        else:
            try:
                ref = await self._gateway.send(OutboundSms(item.sms_id, item.sender_number, item.to_number, encoded))
            except GatewayError as error:
                outcome = fb.Attempt.BUSY if error.temporary else fb.Attempt.REJECTED
                updated = fb.after_attempt(item, outcome, self._clock(), error=str(error))
                log.warning(
                    "SMS %s not taken by %s (attempt %d): %s", item.sms_id, self._gateway.name, updated.attempts, error
                )
            else:
                updated = fb.after_attempt(item, fb.Attempt.ACCEPTED, self._clock(), carrier_ref=ref)
        await self._store.update_sms(updated)
        if updated.state is not item.state:
            log.info("SMS %s is %s", updated.sms_id, updated.state.value)
            await self._status(updated)
        orphan = self._orphans.pop(updated.carrier_ref, None) or self._orphans.pop(updated.sms_id, None)
        if orphan is not None:
            await self.report(orphan)

    async def _status(self, item: fb.OutboxItem) -> None:
        """Tell every device of the sender's account where its SMS stands."""
        body = frame_encode(SmsStatus(item.message_id, item.to_number, item.state.value, self._clock(), item.error))
        account = await self._directory.account(item.sender_account)
        await self._hub.deliver(
            [
                NewEnvelope(
                    device_id=device_id,
                    message_id=item.message_id,
                    kind="sms_status",
                    sender_account=item.sender_account,
                    sender_device=SERVER_DEVICE,
                    sender_handle=handles.TEL + item.to_number,
                    sent_at_ms=self._clock(),
                    body=body,
                )
                for device_id in account.device_ids
            ]
        )

    # --- fallback windows ---

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("the fallback sweep failed; retrying")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def sweep(self) -> int:
        """Tell the senders of every message whose window passed; return how many."""
        due = await self._store.due_fallbacks(self._clock(), BATCH)
        if not due:
            return 0
        envelopes: list[NewEnvelope] = []
        by_message: dict[tuple[str, str], list[str]] = {}
        for watch in due:
            by_message.setdefault((watch.sender_account, watch.message_id), []).append(watch.recipient_handle)
        now = self._clock()
        for (sender_account, message_id), recipients in by_message.items():
            envelopes += await fallback_notices(self._directory, sender_account, message_id, sorted(recipients), now)
        # Notices first, then the mark: a crash between them repeats a notice (harmless:
        # the claim is idempotent) instead of losing one.
        await self._hub.deliver(envelopes)
        if self._exits is not None:
            await self._exits.note_due(due)
        await self._store.fallbacks_notified([watch.key for watch in due])
        log.info("fallback windows passed for %d message(s)", len(by_message))
        return len(due)

    # --- the carrier speaks (CarrierSink) ---

    async def inbound(self, sms: CarrierSms) -> bool:
        if sms.to == self._service_sender and self._exits is not None:
            return await self._exits.reproof_answer(sms.sender, sms.text)  # a re-proof answer
        handle = handles.TEL + sms.to
        account_id = await self._directory.account_for(handle)
        if account_id is None:
            log.info("inbound SMS %s for a number no account owns; dropped", sms.carrier_id)
            return False
        devices = await self._store.devices_of(account_id)
        plaintext = frame_encode(InboundSms(sms.sender, sms.to, sms.text, sms.received_at_ms))
        envelopes = []
        for device in devices:
            if not device.inbox_key:
                continue  # a device without an inbox key cannot read SMS; never store plaintext
            sealed = seal(device.inbox_key, plaintext)
            if sealed is None:
                log.warning("device %s has an unusable inbox key", device.device_id)
                continue
            envelopes.append(
                NewEnvelope(
                    device_id=device.device_id,
                    message_id=f"sms.{hashlib.sha256(sms.carrier_id.encode()).hexdigest()[:32]}",
                    kind="sms",
                    sender_account="",
                    sender_device=SMS_DEVICE,
                    sender_handle=handles.TEL + sms.sender,
                    sent_at_ms=sms.received_at_ms,
                    body=sealed,
                )
            )
        await self._hub.deliver(envelopes)
        log.info("inbound SMS %s delivered to %d device(s)", sms.carrier_id, len(envelopes))
        return True

    async def report(self, report: DeliveryReport) -> None:
        item = await self._store.find_sms(
            sms_id=report.sms_id, carrier_ref=report.carrier_ref if not report.sms_id else ""
        )
        if item is None or item.state is fb.SmsState.PENDING:
            key = report.sms_id or report.carrier_ref
            self._orphans[key] = report  # the item is being handed over right now
            while len(self._orphans) > MAX_ORPHAN_REPORTS:
                self._orphans.popitem(last=False)
            return
        updated = fb.after_report(item, report.delivered, report.detail)
        if updated != item:
            await self._store.update_sms(updated)
            log.info("SMS %s is %s", updated.sms_id, updated.state.value)
            await self._status(updated)

    async def event(self, event: CarrierEvent) -> None:
        log.info("carrier event %s for a number", event.kind)
        if self._exits is not None:
            await self._exits.carrier_event(event)


def seal(inbox_key: str, plaintext: bytes) -> bytes | None:
    """Seal ``plaintext`` to a device's Curve25519 inbox key (vodozemac PkEncryption)."""
    try:
        encryption = vodozemac.PkEncryption.from_key(vodozemac.Curve25519PublicKey.from_base64(inbox_key))
    except (vodozemac.KeyException, vodozemac.PkInvalidKeySizeException, ValueError):
        return None
    message = encryption.encrypt(plaintext)
    return frame_encode(SealedSms(message.ephemeral_key, message.mac, message.ciphertext))
