"""An in-memory store: the reference semantics of the interface, for tests."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import replace

from parley.core import fallback as fb
from parley.core.codes import PendingCode
from parley.core.leaving import Departure, Left, Overdue, Queued
from parley.core.receipts import AckedEnvelope
from parley.store.base import DeviceRecord, NewEnvelope, Registration, Submitted
from parley.wire import ClaimedKey, Envelope, KeyCount, SignedKey


class MemoryStore:
    def __init__(self) -> None:
        self._handles: dict[str, str] = {}
        self._accounts: dict[str, list[str]] = {}  # account -> handles
        self._devices: dict[str, DeviceRecord] = {}
        self._codes: dict[tuple[str, str], PendingCode] = {}
        self._sent: dict[tuple[str, str], int] = {}
        self._mailboxes: dict[str, list[Envelope]] = {}
        self._seq = 0
        self._watches: dict[fb.FallbackKey, fb.Fallback] = {}
        self._outbox: dict[str, fb.OutboxItem] = {}
        self._one_time: dict[str, dict[str, SignedKey]] = {}  # device -> key id -> key, oldest first
        self._fallback: dict[str, SignedKey] = {}
        self._overdue: dict[tuple[str, str, str], Overdue] = {}
        self._left: dict[str, Left] = {}
        self._proven: dict[str, int] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    @property
    def pending_writes(self) -> int:
        return 0

    async def account_for_handle(self, handle: str) -> str | None:
        return self._handles.get(handle)

    async def handles_of(self, account_id: str) -> list[str]:
        return list(self._accounts.get(account_id, []))

    async def register_device(
        self, handle: str, new_account_id: str, device: DeviceRecord, max_devices: int
    ) -> Registration:
        self._left.pop(handle, None)
        self._proven[handle] = device.created_at_ms
        account_id = self._handles.get(handle)
        created = account_id is None
        if account_id is None:
            account_id = new_account_id
            self._handles[handle] = account_id
            self._accounts[account_id] = [handle]
        if device.device_id in self._devices:
            raise ValueError(f"device {device.device_id} exists")
        if sum(1 for d in self._devices.values() if d.account_id == account_id) >= max_devices:
            return Registration(None, created)
        self._devices[device.device_id] = replace(device, account_id=account_id)
        self._mailboxes[device.device_id] = []
        return Registration(account_id, created)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        return self._devices.get(device_id)

    async def devices_of(self, account_id: str) -> list[DeviceRecord]:
        devices = [d for d in self._devices.values() if d.account_id == account_id]
        return sorted(devices, key=lambda d: (d.created_at_ms, d.device_id))

    async def remove_device(self, device_id: str) -> bool:
        self._mailboxes.pop(device_id, None)
        self._one_time.pop(device_id, None)
        self._fallback.pop(device_id, None)
        return self._devices.pop(device_id, None) is not None

    async def add_prekeys(
        self, device_id: str, one_time: list[SignedKey], fallback: SignedKey | None, max_held: int
    ) -> int | None:
        if device_id not in self._devices:
            return None
        held = self._one_time.setdefault(device_id, {})
        new = {key.key_id: key for key in one_time if key.key_id not in held}
        if len(held) + len(new) > max_held:
            return None
        held.update(new)
        if fallback is not None:
            self._fallback[device_id] = fallback
        return len(held)

    async def claim_prekey(self, device_id: str) -> ClaimedKey | None:
        held = self._one_time.get(device_id)
        if held:
            key_id = next(iter(held))
            key = held.pop(key_id)
            return ClaimedKey(device_id, key.key_id, key.key, key.signature)
        fallback = self._fallback.get(device_id)
        if fallback is None:
            return None
        return ClaimedKey(device_id, fallback.key_id, fallback.key, fallback.signature, fallback=True)

    async def prekey_count(self, device_id: str) -> KeyCount:
        return KeyCount(len(self._one_time.get(device_id, {})), device_id in self._fallback)

    async def put_code(self, code: PendingCode) -> None:
        self._codes[(code.handle, code.purpose)] = code

    async def get_code(self, handle: str, purpose: str) -> PendingCode | None:
        return self._codes.get((handle, purpose))

    async def delete_code(self, handle: str, purpose: str) -> None:
        self._codes.pop((handle, purpose), None)

    async def submit(
        self,
        sender_device: str,
        message_id: str,
        envelopes: list[NewEnvelope],
        now_ms: int,
        fallbacks: Sequence[fb.Fallback] = (),
    ) -> Submitted:
        key = (sender_device, message_id)
        if key in self._sent:
            return Submitted(True, [], [])
        self._sent[key] = now_ms
        for watch in fallbacks:
            self._watches.setdefault(watch.key, watch)
        stored = await self.enqueue(envelopes)
        return Submitted(False, stored, [e.device_id for e in envelopes])

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[Envelope]:
        stored = []
        for new in envelopes:
            mailbox = self._mailboxes.get(new.device_id)
            # A device removed since the send was planned gets nothing; seq 0 marks that.
            if mailbox is not None:
                self._seq += 1
            envelope = Envelope(
                seq=self._seq if mailbox is not None else 0,
                message_id=new.message_id,
                kind=new.kind,
                sender_account=new.sender_account,
                sender_device=new.sender_device,
                sender_handle=new.sender_handle,
                sent_at_ms=new.sent_at_ms,
                body=new.body,
            )
            if mailbox is not None:
                mailbox.append(envelope)
            stored.append(envelope)
        return stored

    async def fetch(self, device_id: str, after_seq: int, limit: int) -> tuple[list[Envelope], bool]:
        mailbox = self._mailboxes.get(device_id, [])
        start = bisect.bisect_right([e.seq for e in mailbox], after_seq)
        page = mailbox[start : start + limit]
        return page, start + limit < len(mailbox)

    async def ack(self, device_id: str, up_to: int) -> list[AckedEnvelope]:
        mailbox = self._mailboxes.get(device_id)
        if not mailbox:
            return []
        removed = [e for e in mailbox if e.seq <= up_to]
        mailbox[:] = [e for e in mailbox if e.seq > up_to]
        return [AckedEnvelope(e.message_id, e.kind, e.sender_account) for e in removed]

    async def expire(self, before_ms: int) -> int:
        dropped = 0
        for device_id, mailbox in self._mailboxes.items():
            kept = [e for e in mailbox if e.sent_at_ms >= before_ms]
            dropped += len(mailbox) - len(kept)
            self._mailboxes[device_id] = kept
        self._sent = {key: at for key, at in self._sent.items() if at >= before_ms}
        self._watches = {key: w for key, w in self._watches.items() if w.deadline_ms >= before_ms}
        self._outbox = {
            sms_id: item
            for sms_id, item in self._outbox.items()
            if item.created_at_ms >= before_ms or item.state is fb.SmsState.PENDING
        }
        return dropped

    async def queued_count(self, device_id: str) -> int:
        return len(self._mailboxes.get(device_id, []))

    # --- the carrier path ---

    async def settle_fallbacks(self, recipient_account: str, acked: Sequence[tuple[str, str]]) -> int:
        dropped = 0
        for sender_account, message_id in acked:
            key = fb.FallbackKey(sender_account, message_id, recipient_account)
            dropped += self._watches.pop(key, None) is not None
            self._overdue.pop((recipient_account, sender_account, message_id), None)
        return dropped

    async def due_fallbacks(self, now_ms: int, limit: int) -> list[fb.Fallback]:
        due = [w for w in self._watches.values() if fb.is_due(w, now_ms)]
        return sorted(due, key=lambda w: (w.deadline_ms, w.message_id))[:limit]

    async def fallbacks_notified(self, keys: Sequence[fb.FallbackKey]) -> None:
        for key in keys:
            watch = self._watches.get(key)
            if watch is not None:
                self._watches[key] = replace(watch, state=fb.WatchState.DUE)

    async def queue_sms(
        self, item: fb.OutboxItem, fallback: fb.FallbackKey | None, now_ms: int
    ) -> tuple[fb.Claim, fb.OutboxItem]:
        existing = next(
            (
                o
                for o in self._outbox.values()
                if (o.sender_account, o.message_id, o.to_number)
                == (item.sender_account, item.message_id, item.to_number)
            ),
            None,
        )
        watch = self._watches.get(fallback) if fallback is not None else None
        verdict = fb.claim(existing is not None, fallback is not None, watch, now_ms)
        if verdict is fb.Claim.DUPLICATE:
            assert existing is not None
            return verdict, existing
        if verdict is fb.Claim.QUEUED:
            self._outbox[item.sms_id] = item
            if fallback is not None:
                self._watches.pop(fallback, None)
        return verdict, item

    async def sms_to_send(self, now_ms: int, limit: int, lease_ms: int) -> list[fb.OutboxItem]:
        ready = [o for o in self._outbox.values() if o.state is fb.SmsState.PENDING and o.next_attempt_ms <= now_ms]
        claimed = sorted(ready, key=lambda o: (o.next_attempt_ms, o.created_at_ms, o.sms_id))[:limit]
        for item in claimed:
            self._outbox[item.sms_id] = replace(item, next_attempt_ms=now_ms + lease_ms)
        return claimed

    async def update_sms(self, item: fb.OutboxItem) -> None:
        if item.sms_id in self._outbox:
            self._outbox[item.sms_id] = item

    async def find_sms(self, sms_id: str = "", carrier_ref: str = "") -> fb.OutboxItem | None:
        if sms_id:
            return self._outbox.get(sms_id)
        if not carrier_ref:
            return None
        return next((o for o in self._outbox.values() if o.carrier_ref == carrier_ref), None)

    # --- leaving Parley ---

    async def note_overdue(self, items: Sequence[Overdue]) -> None:
        for item in items:
            self._overdue.setdefault((item.recipient_account, item.sender_account, item.message_id), item)

    async def overdue(self, limit: int) -> list[Overdue]:
        return sorted(self._overdue.values(), key=lambda n: (n.since_ms, n.message_id))[:limit]

    async def leave(self, handle: str, record: Left) -> Departure:
        self._left[handle] = record
        account_id = self._handles.pop(handle, None)
        if account_id is None:
            return Departure(None, [], [])
        self._accounts[account_id] = [h for h in self._accounts.get(account_id, []) if h != handle]
        devices = [d.device_id for d in await self.devices_of(account_id)]
        backlog = [
            Queued(e.sender_account, e.message_id, e.kind)
            for device_id in devices
            for e in self._mailboxes.get(device_id, [])
        ]
        for device_id in devices:
            await self.remove_device(device_id)
        self._watches = {k: w for k, w in self._watches.items() if k.recipient_account != account_id}
        self._overdue = {k: n for k, n in self._overdue.items() if n.recipient_account != account_id}
        return Departure(account_id, devices, backlog)

    async def left_record(self, handle: str) -> Left | None:
        return self._left.get(handle)

    async def renew_lease(self, device_id: str, until_ms: int) -> bool:
        record = self._devices.get(device_id)
        if record is None:
            return False
        self._devices[device_id] = replace(record, lease_until_ms=until_ms)
        return True

    async def lapsed_devices(self, now_ms: int, limit: int) -> list[DeviceRecord]:
        lapsed = [d for d in self._devices.values() if 0 < d.lease_until_ms <= now_ms]
        return sorted(lapsed, key=lambda d: (d.lease_until_ms, d.device_id))[:limit]

    async def set_proven(self, handle: str, at_ms: int) -> None:
        if handle in self._handles:
            self._proven[handle] = at_ms

    async def proofs_due(self, before_ms: int, limit: int) -> list[str]:
        due = [h for h in self._handles if h.startswith("tel:") and self._proven.get(h, 0) < before_ms]
        return sorted(due, key=lambda h: (self._proven.get(h, 0), h))[:limit]
