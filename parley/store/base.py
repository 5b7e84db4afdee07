"""The store interface: everything the server keeps, behind one small async protocol.

Implementations: :mod:`parley.store.memory` (tests, reference semantics) and
:mod:`parley.store.sqlite` (the embedded default). One contract suite,
``tests/store/test_contract.py``, runs against every implementation; a new store (the
PostgreSQL one) is done when it passes. The interface names no SQL dialect.

Rules every implementation keeps:

* A method returns only after its writes are durable (committed to disk).
* ``submit`` is idempotent on (sender_device, message_id): a repeat stores nothing and
  reports ``duplicate=True``.
* Within one device's mailbox, ``seq`` grows in commit order and is never reused, even
  after the mailbox empties, so "everything up to seq N" is a safe cumulative ack.
* ``remove_device`` drops the device's mailbox and keys with it.
* Device ids are unique: registering an id that exists is an error.
* The carrier path (fallback watches and the SMS outbox): ``submit`` stores a send's
  fallback watches in the same transaction as its envelopes; ``queue_sms`` applies
  :func:`parley.core.fallback.claim` inside one transaction, so an SMS is queued at most
  once per (sender account, message id, number) however many devices ask at once.
* Leaving (``parley.core.leaving``): ``leave`` unlinks every device of the handle's
  account, releases the handle, drops the account's fallback watches and overdue notes,
  and stores the signed "left" record, in one transaction; ``register_device`` drops the
  handle's "left" record in its transaction and marks the handle proven at the device's
  ``created_at_ms`` (a registration proves the number). ``settle_fallbacks`` also drops
  the overdue notes of what was acked.
* ``claim_prekey`` hands out each one-time key exactly once, even to concurrent callers;
  when none is left it returns the fallback key, which stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from parley.core.codes import PendingCode
from parley.core.fallback import Claim, Fallback, FallbackKey, OutboxItem
from parley.core.leaving import Departure, Left, Overdue
from parley.core.receipts import AckedEnvelope
from parley.wire import ClaimedKey, Envelope, EnvelopeKind, KeyCount, SignedKey


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    account_id: str
    name: str
    secret_hash: str  # SHA-256 of the device's credential secret, hex
    created_at_ms: int
    identity_key: str = ""
    signing_key: str = ""
    # --- carrier path ---
    inbox_key: str = ""  # Curve25519 (base64) that inbound SMS is sealed to; "" if none
    # --- leaving Parley ---
    lease_until_ms: int = 0  # the registration lease ends here unless renewed; 0: no lease


@dataclass(frozen=True)
class NewEnvelope:
    """An envelope before the store gives it a seq."""

    device_id: str
    message_id: str
    kind: EnvelopeKind
    sender_account: str
    sender_device: str
    sender_handle: str
    sent_at_ms: int
    body: bytes


@dataclass(frozen=True)
class Submitted:
    duplicate: bool
    envelopes: list[Envelope]  # as stored, with seqs, in the order given ([] if duplicate)
    device_ids: list[str]  # the mailbox each envelope went to, index for index


@dataclass(frozen=True)
class Registration:
    account_id: str | None  # None: the account already has the most devices it may have
    created_account: bool


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None:
        """Commit what is queued, then release everything."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot serve requests now (readiness checks)."""
        ...

    @property
    def pending_writes(self) -> int:
        """Writes queued for the next commit (a metric: how far behind the store is)."""
        ...

    # --- accounts, handles, devices ---

    async def account_for_handle(self, handle: str) -> str | None: ...

    async def handles_of(self, account_id: str) -> list[str]: ...

    async def register_device(
        self, handle: str, new_account_id: str, device: DeviceRecord, max_devices: int
    ) -> Registration:
        """Add ``device`` to the account that owns ``handle``, creating the account (as
        ``new_account_id``) if no account owns it. ``device.account_id`` is ignored."""
        ...

    async def get_device(self, device_id: str) -> DeviceRecord | None: ...

    async def devices_of(self, account_id: str) -> list[DeviceRecord]: ...

    async def remove_device(self, device_id: str) -> bool: ...

    # --- end-to-end keys (public halves only; see parley.core.keys) ---

    async def add_prekeys(
        self, device_id: str, one_time: list[SignedKey], fallback: SignedKey | None, max_held: int
    ) -> int | None:
        """Add one-time keys (a key id the device already holds is skipped) and, if given,
        replace the fallback key, atomically. Return how many one-time keys the device now
        holds, or ``None`` and store nothing if the device is unknown or would hold more
        than ``max_held``."""
        ...

    async def claim_prekey(self, device_id: str) -> ClaimedKey | None:
        """Remove and return one of the device's one-time keys (oldest first); when none
        is left, return its fallback key (``fallback=True``, not removed); else ``None``."""
        ...

    async def prekey_count(self, device_id: str) -> KeyCount: ...

    # --- verification codes ---

    async def put_code(self, code: PendingCode) -> None:
        """Store ``code``, replacing any code for the same handle and purpose."""
        ...

    async def get_code(self, handle: str, purpose: str) -> PendingCode | None: ...

    async def delete_code(self, handle: str, purpose: str) -> None: ...

    # --- mailboxes ---

    async def submit(
        self,
        sender_device: str,
        message_id: str,
        envelopes: list[NewEnvelope],
        now_ms: int,
        fallbacks: Sequence[Fallback] = (),
    ) -> Submitted:
        """Store one message's envelopes atomically, once per (sender_device, message_id),
        with its fallback watches (ignored on a duplicate; a watch whose key exists is
        kept as it is)."""
        ...

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[Envelope]:
        """Store server-written envelopes (receipts); no idempotency key."""
        ...

    async def fetch(self, device_id: str, after_seq: int, limit: int) -> tuple[list[Envelope], bool]:
        """Up to ``limit`` envelopes with seq > ``after_seq``, in seq order, and whether
        more remain."""
        ...

    async def ack(self, device_id: str, up_to: int) -> list[AckedEnvelope]:
        """Remove every envelope with seq <= ``up_to``; return what was removed, in seq
        order."""
        ...

    async def expire(self, before_ms: int) -> int:
        """Drop envelopes sent, idempotency keys made, fallback watches due, and SMS outbox
        items created (unless still PENDING) before ``before_ms``; return how many
        envelopes were dropped."""
        ...

    async def queued_count(self, device_id: str) -> int: ...

    # --- the carrier path: fallback watches and the SMS outbox ---

    async def settle_fallbacks(self, recipient_account: str, acked: Sequence[tuple[str, str]]) -> int:
        """A device of ``recipient_account`` acked these (sender_account, message_id):
        drop their watches (and overdue notes) for that account; return how many
        watches were dropped."""
        ...

    async def due_fallbacks(self, now_ms: int, limit: int) -> list[Fallback]:
        """Up to ``limit`` WAITING watches whose deadline is <= ``now_ms``, oldest first."""
        ...

    async def fallbacks_notified(self, keys: Sequence[FallbackKey]) -> None:
        """Mark these watches DUE (the sender's devices were told)."""
        ...

    async def queue_sms(self, item: OutboxItem, fallback: FallbackKey | None, now_ms: int) -> tuple[Claim, OutboxItem]:
        """Atomically: judge with ``core.fallback.claim`` (already queued for
        (item.sender_account, item.message_id, item.to_number)? the watch ``fallback``,
        if given?); on QUEUED store ``item`` and drop the watch. Return the claim and the
        stored item (the existing one on DUPLICATE, ``item`` otherwise)."""
        ...

    async def sms_to_send(self, now_ms: int, limit: int, lease_ms: int) -> list[OutboxItem]:
        """Claim up to ``limit`` PENDING items whose next attempt is due, oldest first.

        Claiming moves each item's next attempt to ``now_ms + lease_ms`` in the same
        transaction, so another node (or a second loop) does not take it meanwhile; the
        caller writes the outcome with :meth:`update_sms`. If the caller dies, the lease
        lapses and the item is taken again: at least once to the gateway, never twice at
        the same time."""
        ...

    async def update_sms(self, item: OutboxItem) -> None:
        """Write back an item's state, text, attempts, next attempt, carrier ref, error."""
        ...

    async def find_sms(self, sms_id: str = "", carrier_ref: str = "") -> OutboxItem | None:
        """The outbox item with this id, or (if ``sms_id`` is empty) this carrier ref."""
        ...

    # --- leaving Parley (see parley.core.leaving) ---

    async def note_overdue(self, items: Sequence[Overdue]) -> None:
        """Note messages unacked past their windows (a note whose key, (recipient
        account, sender account, message id), exists is kept as it is)."""
        ...

    async def overdue(self, limit: int) -> list[Overdue]:
        """Up to ``limit`` overdue notes, oldest first."""
        ...

    async def leave(self, handle: str, record: Left) -> Departure:
        """Atomically: unlink every device of the account owning ``handle`` (mailboxes
        and keys with them), returning what was queued for them; release ``handle``;
        drop the account's fallback watches (as recipient) and overdue notes; store
        ``record`` as the handle's "left" record (replacing one). A handle no account
        owns only gets the record."""
        ...

    async def left_record(self, handle: str) -> Left | None: ...

    async def set_proven(self, handle: str, at_ms: int) -> None:
        """The handle was proven (a re-proof answered) at ``at_ms``."""
        ...

    async def proofs_due(self, before_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` phone handles (``tel:``) owned by an account, last proven
        before ``before_ms``, longest ago first."""
        ...

    async def renew_lease(self, device_id: str, until_ms: int) -> bool:
        """Set the device's lease end; False if the device is unknown."""
        ...

    async def lapsed_devices(self, now_ms: int, limit: int) -> list[DeviceRecord]:
        """Up to ``limit`` devices whose lease ended (0 < lease_until_ms <= ``now_ms``),
        earliest first."""
        ...
