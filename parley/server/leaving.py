"""Leaving Parley, applied: every way out ends in :meth:`Exits.leave`.

``parley.core.leaving`` decides (the liveness rule, which senders to tell, whether a
"left" record holds); this module does the I/O: it signs the record with the server's
Ed25519 key, asks the store to unlink and release in one transaction, closes the
devices' connections, and tells each sender's devices about the messages that were
still queued (a ``fallback`` envelope, written through the hub). Those devices hand the
message over by SMS, and the SMS outbox's claim (``core.fallback.claim``) keeps it to
exactly one SMS per message and number, whichever devices hand it over and however
often.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import vodozemac

from parley.carrier.base import CarrierEvent, GatewayError
from parley.core import fallback as fb
from parley.core import handles
from parley.core import leaving as core
from parley.errors import ApiError
from parley.server.directory import Directory, normalise_or_400
from parley.server.hub import Hub
from parley.server.notices import fallback_notices
from parley.store.base import NewEnvelope, Store
from parley.wire import CodeSent, Deregistered, DeregisterRequest, ErrorCode, LeftRecord

log = logging.getLogger("parley.leaving")

LIVENESS_INTERVAL_S = 0.5
OVERDUE_BATCH = 10_000
EVENT_MAX_AGE_MS = 10 * 60_000  # carrier events older than this are refused (replays)
EVENT_MAX_SKEW_MS = 60_000
SEEN_EVENTS = 10_000
LEASE_CHECK_MS = 60_000


class LeftSigner:
    """The server's Ed25519 key for "left" records: a vodozemac account pickled under
    the server secret, in the data folder, mode 0600."""

    def __init__(self, path: str, secret: bytes) -> None:
        key = secret[:32].ljust(32, b"\0")
        try:
            with open(path) as file:
                self._account = vodozemac.Account.from_pickle(file.read(), key)
        except FileNotFoundError:
            self._account = vodozemac.Account()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(self._account.pickle(key))

    @property
    def public_key(self) -> str:
        return str(self._account.ed25519_key.to_base64())

    def sign(self, left: core.Left) -> core.Left:
        signature = self._account.sign(core.signed_bytes(left)).to_base64()
        return core.Left(left.handle, left.left_at_ms, left.reason, left.moved_to, signature)


def left_record(left: core.Left) -> LeftRecord:
    return LeftRecord(left.handle, left.left_at_ms, left.reason, left.signature, left.moved_to)


class Exits:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        hub: Hub,
        signer: LeftSigner,
        clock: Callable[[], int],
        liveness_ms: int,
        lease_ms: int = core.DEFAULT_LEASE_S * 1000,
        reproof_ms: int = core.DEFAULT_REPROOF_S * 1000,
        reproof_answer_ms: int = core.DEFAULT_REPROOF_ANSWER_S * 1000,
    ) -> None:
        self._reproof_ms = reproof_ms
        self._reproof_answer_ms = reproof_answer_ms
        self._lease_ms = lease_ms
        self._next_lease_check_ms = 0
        self._store = store
        self._directory = directory
        self._hub = hub
        self._signer = signer
        self._clock = clock
        self._liveness_ms = liveness_ms
        self._seen_events: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._task: asyncio.Task[Any] | None = None

    # --- the one act every way out ends in ---

    async def leave(self, handle: str, reason: core.Reason, moved_to: str = "") -> tuple[core.Departure, core.Left]:
        record = self._signer.sign(core.Left(handle, self._clock(), reason.value, moved_to))
        departure = await self._store.leave(handle, record)
        self._directory.changed(departure.account_id or "", handle)
        for device_id in departure.device_ids:
            self._hub.disconnect(device_id)
        plan = core.reroute(departure.backlog, departure.account_id or "")
        await self._tell_senders(handle, plan)
        log.info(
            "a number left Parley (%s): %d device(s) unlinked, %d message(s) re-routed",
            reason.value,
            len(departure.device_ids),
            sum(len(ids) for ids in plan.values()),
        )
        return departure, record

    async def _tell_senders(self, handle: str, plan: dict[str, list[str]]) -> None:
        now = self._clock()
        envelopes: list[NewEnvelope] = []
        for sender_account, message_ids in plan.items():
            for message_id in message_ids:
                envelopes += await fallback_notices(self._directory, sender_account, message_id, [handle], now)
        await self._hub.deliver(envelopes)

    # --- delivery liveness ---

    async def note_due(self, watches: list[fb.Fallback]) -> None:
        """Windows passed unacked (the fallback sweep): the liveness rule's evidence."""
        await self._store.note_overdue(
            [core.Overdue(w.recipient_account, w.sender_account, w.message_id, w.deadline_ms) for w in watches]
        )

    async def check_liveness(self) -> int:
        """Stop advertising every account the liveness rule picks; return how many."""
        silent = core.unresponsive(await self._store.overdue(OVERDUE_BATCH), self._clock(), self._liveness_ms)
        for account_id in silent:
            for handle in await self._store.handles_of(account_id):
                await self.leave(handle, core.Reason.UNRESPONSIVE)
        return len(silent)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_liveness()
                if self._clock() >= self._next_lease_check_ms:
                    await self.check_leases()
                    await self.check_reproofs()
                    shortest = min(self._lease_ms, self._reproof_ms, self._reproof_answer_ms)
                    self._next_lease_check_ms = self._clock() + min(LEASE_CHECK_MS, shortest // 4)
            except Exception:
                log.exception("the liveness or lease check failed; retrying")
            await asyncio.sleep(LIVENESS_INTERVAL_S)

    # --- registration leases ---

    async def check_leases(self) -> int:
        """Renew connected devices' leases (a connected client is running); unlink lapsed
        devices, and make an account whose devices all lapsed leave. Return how many
        devices lapsed."""
        for device_id in self._hub.connected_ids():
            record = await self._store.get_device(device_id)
            if record is not None:
                await self._directory.renew_if_due(record)
        lapsed = await self._store.lapsed_devices(self._clock(), OVERDUE_BATCH)
        if not lapsed:
            return 0
        accounts = {d.account_id for d in lapsed}
        devices_of = {a: [d.device_id for d in await self._store.devices_of(a)] for a in accounts}
        leave, unlink = core.lapse_plan([(d.device_id, d.account_id) for d in lapsed], devices_of)
        for account_id in leave:
            for handle in await self._store.handles_of(account_id):
                await self.leave(handle, core.Reason.LAPSED)
        for record in lapsed:
            if record.device_id in unlink:
                await self._store.remove_device(record.device_id)
                self._directory.changed(record.account_id)
                self._hub.disconnect(record.device_id)
        log.info("%d device lease(s) lapsed; %d account(s) left", len(lapsed), len(leave))
        return len(lapsed)

    # --- re-proof of phone handles ---

    async def check_reproofs(self) -> int:
        """Send silent codes to phone handles due a re-proof; make those whose code went
        unanswered leave. Return how many left."""
        now = self._clock()
        failed = 0
        for handle in await self._store.proofs_due(now - self._reproof_ms, OVERDUE_BATCH):
            pending = await self._store.get_code(handle, core.REPROOF)
            step = core.reproof_step(pending.expires_at_ms if pending else None, now)
            if step is core.Reproof.SEND:
                try:
                    await self._directory.send_reproof(handle, self._reproof_answer_ms)
                except GatewayError as error:
                    log.warning("a re-proof code could not be sent: %s", error)
            elif step is core.Reproof.FAILED:
                await self._store.delete_code(handle, core.REPROOF)
                await self.leave(handle, core.Reason.REPROOF_FAILED)
                failed += 1
        return failed

    async def reproof_answer(self, number: str, text: str) -> bool:
        """The device holding the SIM of ``number`` answered its silent code by SMS."""
        handle = handles.TEL + number
        code = text.removeprefix(core.REPROOF_PREFIX).strip()
        try:
            await self._directory.check_code(handle, core.REPROOF, code)
        except ApiError:
            log.info("a wrong or late re-proof answer; ignored")
            return False
        await self._store.set_proven(handle, self._clock())
        return True

    # --- deregistration without a device ---

    async def request_deregister_code(self, raw_phone: str, address: str) -> CodeSent:
        handle = normalise_or_400(raw_phone)
        await self._must_be_known(handle)
        return await self._directory.request_code(handle, address, core.DEREGISTER)

    async def deregister(self, request: DeregisterRequest, address: str) -> Deregistered:
        handle = normalise_or_400(request.phone)
        moved_to = normalise_or_400(request.moved_to) if request.moved_to else ""
        self._directory.check_verify_rate(address)
        await self._directory.check_code(handle, core.DEREGISTER, request.code)
        departure, record = await self.leave(handle, core.Reason.DEREGISTERED, moved_to)
        return Deregistered(handle, len(departure.device_ids), left_record(record))

    async def _must_be_known(self, handle: str) -> None:
        if not handles.is_phone(handle):
            raise ApiError(400, ErrorCode.INVALID_HANDLE, "only phone numbers can be deregistered by SMS code")
        if await self._directory.account_for(handle) is None and await self._store.left_record(handle) is None:
            raise ApiError(404, ErrorCode.NOT_ON_PARLEY, f"{handle} is not on Parley; there is nothing to deregister")

    # --- carrier events ---

    async def carrier_event(self, event: CarrierEvent, event_id: str = "") -> bool:
        """Act on a carrier event; False if it was ignored (a move, a replay, stale)."""
        reason = core.EVENT_REASONS.get(event.kind)
        if reason is None:
            log.info("carrier event %s: nothing to do (the number's devices speak for it)", event.kind)
            return False
        now = self._clock()
        if event_id:
            if event_id in self._seen_events:
                raise ApiError(409, ErrorCode.BAD_REQUEST, "this carrier event was already reported")
            if not now - EVENT_MAX_AGE_MS <= event.at_ms <= now + EVENT_MAX_SKEW_MS:
                raise ApiError(400, ErrorCode.BAD_REQUEST, "the carrier event is too old or in the future")
        handle = handles.TEL + event.number
        account_id = await self._directory.account_for(handle)
        if account_id is not None:
            devices = await self._store.devices_of(account_id)
            if any(d.created_at_ms > event.at_ms for d in devices):
                # Registered (proved the number) after the event: it speaks of the last owner.
                raise ApiError(409, ErrorCode.BAD_REQUEST, "the number was registered again after this event")
        if event_id:
            self._seen_events[event_id] = None
            while len(self._seen_events) > SEEN_EVENTS:
                self._seen_events.popitem(last=False)
        await self.leave(handle, reason)
        return True

    async def lookup_left(self, handle: str) -> LeftRecord | None:
        left = await self._store.left_record(handle)
        return left_record(left) if left is not None else None
