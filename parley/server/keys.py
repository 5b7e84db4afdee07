"""The key directory: devices upload the public halves of their one-time and fallback
keys, and senders claim one per device to start an Olm session.

Every signature is checked (``parley.core.keys``) before anything is stored. A claim
hands each one-time key out exactly once (the store guarantees it), then the fallback
key. The server never sees a private key and never decrypts anything.
"""

from __future__ import annotations

from parley.core import keys
from parley.errors import ApiError
from parley.server.limits import Limiter
from parley.store.base import DeviceRecord, Store
from parley.wire import MAX_KEYS_HELD, ClaimResponse, ErrorCode, KeyCount, KeyUpload, SignedKey


def key_error(problem: keys.KeyProblem) -> ApiError:
    return ApiError(400, problem.code, str(problem))


class KeyDirectory:
    def __init__(self, store: Store, limiter: Limiter) -> None:
        self._store = store
        self._limiter = limiter

    async def upload(self, device: DeviceRecord, upload: KeyUpload) -> KeyCount:
        held = await self._store.prekey_count(device.device_id)
        await self.store_prekeys(device, upload.one_time_keys, upload.fallback_key, held.one_time_keys)
        return await self._store.prekey_count(device.device_id)

    async def store_prekeys(
        self, device: DeviceRecord, one_time: list[SignedKey], fallback: SignedKey | None, held: int = 0
    ) -> None:
        try:
            checked = keys.check_prekeys(device.signing_key, one_time, fallback, held)
        except keys.KeyProblem as problem:
            raise key_error(problem) from None
        if not checked.one_time and checked.fallback is None:
            return
        stored = await self._store.add_prekeys(device.device_id, checked.one_time, checked.fallback, MAX_KEYS_HELD)
        if stored is None:
            raise ApiError(400, ErrorCode.TOO_MANY_KEYS, f"a device may hold at most {MAX_KEYS_HELD} one-time keys")

    async def count(self, device: DeviceRecord) -> KeyCount:
        return await self._store.prekey_count(device.device_id)

    async def claim(self, claimer: DeviceRecord, device_ids: list[str]) -> ClaimResponse:
        """One key per named device. Every device must exist, or nothing is claimed."""
        self._limiter.check("claim:device", claimer.device_id, cost=len(device_ids))
        if len(set(device_ids)) != len(device_ids):
            raise ApiError(400, ErrorCode.BAD_REQUEST, "a device is named more than once")
        for device_id in device_ids:
            if await self._store.get_device(device_id) is None:
                raise ApiError(404, ErrorCode.NOT_FOUND, f"no device {device_id}")
        claimed = [await self._store.claim_prekey(device_id) for device_id in device_ids]
        return ClaimResponse([key for key in claimed if key is not None])
