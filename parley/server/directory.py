"""The identity directory: codes, registration, device credentials, lookups.

Holds an in-memory cache of handle → account and account → devices, because every send
checks its device set against them. The cache is dropped for an account whenever this
server changes that account's devices, and ``on_change`` tells the other nodes to drop
theirs (through the broker, when there are several nodes).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from parley.carrier.base import GatewayError, OutboundSms, SmsGateway
from parley.core import codes, handles, keys, leaving, sms_text
from parley.errors import ApiError, InvalidHandle
from parley.server.keys import KeyDirectory, key_error
from parley.server.limits import Limiter
from parley.store.base import DeviceRecord, Store
from parley.wire import (
    MAX_DEVICES_PER_ACCOUNT,
    CodeSent,
    DeviceInfo,
    ErrorCode,
    LeftRecord,
    LookupResult,
    Registered,
    RegisterRequest,
)

log = logging.getLogger("parley.directory")

LOOKUP_TTL_S = 300  # how long a client may cache a lookup answer
CACHE_LIMIT = 100_000
REGISTER = "register"


def hash_secret(secret: str) -> str:
    # Credentials are 256-bit random secrets, so a fast hash is enough: there is nothing
    # to brute-force, and a slow one would cost every authenticated request.
    return hashlib.sha256(secret.encode()).hexdigest()


def device_info(record: DeviceRecord) -> DeviceInfo:
    return DeviceInfo(
        device_id=record.device_id,
        name=record.name,
        created_at_ms=record.created_at_ms,
        identity_key=record.identity_key,
        signing_key=record.signing_key,
    )


@dataclass(frozen=True)
class Account:
    account_id: str
    primary_handle: str
    device_ids: tuple[str, ...]


class Directory:
    def __init__(
        self,
        store: Store,
        gateway: SmsGateway,
        limiter: Limiter,
        key_directory: KeyDirectory,
        secret: bytes,
        clock: Callable[[], int],
        make_id: Callable[[str], str],
        sms_sender: str,
        on_change: Callable[[str, str | None], None] | None = None,
        lease_ms: int = leaving.DEFAULT_LEASE_S * 1000,
    ) -> None:
        self._lease_ms = lease_ms
        self._store = store
        self._on_change = on_change or (lambda account_id, handle: None)
        self._gateway = gateway
        self._limiter = limiter
        self._keys = key_directory
        self._secret = secret
        self._clock = clock
        self._make_id = make_id
        self._sms_sender = sms_sender
        self._account_of_handle: dict[str, str | None] = {}
        self._accounts: dict[str, Account] = {}

    def use_secret(self, secret: bytes) -> None:
        """Key code hashes with the deployment's shared secret (several nodes)."""
        self._secret = secret

    # --- registration ---

    async def request_code(self, raw_handle: str, address: str, purpose: str = REGISTER) -> CodeSent:
        """Send a one-time code for ``purpose`` (registering, or deregistering) by SMS."""
        handle = normalise_or_400(raw_handle)
        if not handles.is_phone(handle):
            raise ApiError(400, ErrorCode.INVALID_HANDLE, "only phone numbers can be registered so far")
        self._limiter.check("code:address", address)
        self._limiter.check("code:handle", handle)
        code = "".join(secrets.choice("0123456789") for _ in range(codes.CODE_DIGITS))
        now = self._clock()
        await self._store.put_code(codes.issue(self._secret, handle, purpose, code, now))
        action = "code" if purpose == REGISTER else f"code to {purpose} this number"
        text = f"Your Parley {action} is {code}. Do not share it with anyone."
        sms = OutboundSms(
            self._make_id("c"), self._sms_sender, handles.phone_of(handle), sms_text.encode(text, 0), want_report=False
        )
        try:
            await self._gateway.send(sms)
        except GatewayError as error:
            log.warning("a code could not be sent by %s: %s", self._gateway.name, error)
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the SMS gateway cannot send the code now; try again") from None
        return CodeSent(handle=handle, channel="sms", expires_in_s=codes.CODE_TTL_MS // 1000)

    async def send_reproof(self, handle: str, answer_ms: int) -> None:
        """Send a silent re-proof code to a phone handle; the device holding the SIM
        answers it by SMS (``parley.core.leaving``). Raises GatewayError if it cannot go."""
        code = "".join(secrets.choice("0123456789") for _ in range(codes.CODE_DIGITS))
        now = self._clock()
        await self._store.put_code(codes.issue(self._secret, handle, leaving.REPROOF, code, now, ttl_ms=answer_ms))
        text = leaving.REPROOF_PREFIX + code
        sms = OutboundSms(
            self._make_id("c"), self._sms_sender, handles.phone_of(handle), sms_text.encode(text, 0), want_report=False
        )
        await self._gateway.send(sms)

    def check_verify_rate(self, address: str) -> None:
        self._limiter.check("verify:address", address)

    async def register(self, request: RegisterRequest, address: str) -> Registered:
        handle = normalise_or_400(request.handle)
        self.check_verify_rate(address)
        # Keys are checked before the code is spent: a bad upload stores nothing at all.
        try:
            keys.check_identity(request.identity_key, request.signing_key, request.signature)
            keys.check_prekeys(request.signing_key, request.one_time_keys, request.fallback_key)
        except keys.KeyProblem as problem:
            raise key_error(problem) from None
        await self.check_code(handle, REGISTER, request.code)
        device_id = self._make_id("d")
        secret = secrets.token_urlsafe(32)
        record = DeviceRecord(
            device_id=device_id,
            account_id="",
            name=request.device_name,
            secret_hash=hash_secret(secret),
            created_at_ms=self._clock(),
            identity_key=request.identity_key,
            signing_key=request.signing_key,
            inbox_key=request.inbox_key,
            lease_until_ms=self._clock() + self._lease_ms,
        )
        outcome = await self._store.register_device(handle, self._make_id("a"), record, MAX_DEVICES_PER_ACCOUNT)
        if outcome.account_id is None:
            raise ApiError(
                409,
                ErrorCode.TOO_MANY_DEVICES,
                f"this account already has {MAX_DEVICES_PER_ACCOUNT} devices; unlink one first",
            )
        self._changed(outcome.account_id, handle)
        await self._keys.store_prekeys(record, request.one_time_keys, request.fallback_key)
        return Registered(
            account_id=outcome.account_id, device_id=device_id, handle=handle, credential=f"{device_id}.{secret}"
        )

    async def check_code(self, handle: str, purpose: str, code: str) -> None:
        """Accept ``code`` for (handle, purpose) once, or raise the reason it fails."""
        pending = await self._store.get_code(handle, purpose)
        verdict, keep = codes.check(pending, self._secret, code, self._clock())
        if keep is None:
            if pending is not None:
                await self._store.delete_code(handle, purpose)
        else:
            await self._store.put_code(keep)
        if verdict is codes.Verdict.ACCEPTED:
            return
        if verdict is codes.Verdict.WRONG:
            assert keep is not None
            raise ApiError(403, ErrorCode.WRONG_CODE, f"wrong code; {keep.attempts_left} attempts left")
        if verdict is codes.Verdict.EXPIRED:
            raise ApiError(403, ErrorCode.CODE_EXPIRED, "the code has expired; request a new one")
        if verdict is codes.Verdict.EXHAUSTED:
            raise ApiError(403, ErrorCode.TOO_MANY_ATTEMPTS, "too many wrong attempts; request a new code")
        raise ApiError(403, ErrorCode.WRONG_CODE, "no code was requested for this handle, or it was used")

    # --- credentials and devices ---

    async def authenticate(self, credential: str) -> DeviceRecord:
        device_id, _, secret = credential.partition(".")
        record = await self._store.get_device(device_id) if device_id and secret else None
        if record is None or not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "unknown device or wrong credential")
        await self.renew_if_due(record)
        return record

    async def renew_if_due(self, record: DeviceRecord) -> None:
        """A running client renews its registration lease by using it (see core.leaving)."""
        now = self._clock()
        if leaving.renewal_due(record.lease_until_ms, now, self._lease_ms):
            await self._store.renew_lease(record.device_id, now + self._lease_ms)

    async def devices(self, account_id: str) -> list[DeviceRecord]:
        return await self._store.devices_of(account_id)

    async def unlink(self, account_id: str, device_id: str) -> None:
        record = await self._store.get_device(device_id)
        if record is None or record.account_id != account_id:
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such device on this account")
        await self._store.remove_device(device_id)
        self._changed(account_id, None)

    # --- lookups ---

    async def lookup(self, queries: list[str], device_id: str, address: str) -> list[LookupResult]:
        self._limiter.check("lookup:device", device_id, cost=len(queries))
        self._limiter.check("lookup:address", address, cost=len(queries))
        results = []
        for query in queries:
            try:
                handle = handles.normalise(query)
            except InvalidHandle as error:
                results.append(LookupResult(query=query, handle="", on_parley=False, error=str(error)))
                continue
            account_id = await self.account_for(handle)
            devices = await self._store.devices_of(account_id) if account_id else []
            left = None if devices else await self._store.left_record(handle)
            results.append(
                LookupResult(
                    query=query,
                    handle=handle,
                    on_parley=bool(devices),
                    devices=[device_info(d) for d in devices],
                    ttl_s=LOOKUP_TTL_S,
                    left=(
                        LeftRecord(left.handle, left.left_at_ms, left.reason, left.signature, left.moved_to)
                        if left
                        else None
                    ),
                )
            )
        return results

    # --- the cache the send path reads ---

    async def account_for(self, handle: str) -> str | None:
        if handle in self._account_of_handle:
            return self._account_of_handle[handle]
        account_id = await self._store.account_for_handle(handle)
        self._remember_handle(handle, account_id)
        return account_id

    async def account(self, account_id: str) -> Account:
        cached = self._accounts.get(account_id)
        if cached is not None:
            return cached
        owned = await self._store.handles_of(account_id)
        devices = await self._store.devices_of(account_id)
        account = Account(account_id, owned[0] if owned else "", tuple(d.device_id for d in devices))
        if len(self._accounts) >= CACHE_LIMIT:
            self._accounts.clear()
        self._accounts[account_id] = account
        return account

    def forget(self, account_id: str, handle: str | None = None) -> None:
        """Drop cached facts about an account (its devices changed)."""
        self._accounts.pop(account_id, None)
        if handle is not None:
            self._account_of_handle.pop(handle, None)

    def forget_all(self) -> None:
        """Drop the whole cache (changes on other nodes may have gone unheard)."""
        self._accounts.clear()
        self._account_of_handle.clear()

    def _changed(self, account_id: str, handle: str | None) -> None:
        self.forget(account_id, handle)
        self._on_change(account_id, handle)

    def changed(self, account_id: str, handle: str | None = None) -> None:
        """An account's devices or handles changed outside this class (a way out of
        Parley): drop cached facts here and on every other node."""
        self._changed(account_id, handle)

    def _remember_handle(self, handle: str, account_id: str | None) -> None:
        if len(self._account_of_handle) >= CACHE_LIMIT:
            self._account_of_handle.clear()
        self._account_of_handle[handle] = account_id


def normalise_or_400(raw: str) -> str:
    try:
        return handles.normalise(raw)
    except InvalidHandle as error:
        raise ApiError(400, ErrorCode.INVALID_HANDLE, str(error)) from None
