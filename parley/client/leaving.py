"""The device's side of leaving Parley.

* :func:`check_left`: believe a lookup's signed "left" record only if it verifies under
  the server key this device pinned when it registered, names the handle asked for, and
  is newer than the last time this device saw the handle on Parley
  (``parley.core.leaving.judge_left``). A believed record is kept: the device stops
  trying Parley for that handle and sends by SMS.
* :func:`deregister`: deregistration without a device, by a code sent to the number
  (read from the simulated handset by itself, as ``parley register`` does).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from parley.client.api import ServerApi
from parley.client.profile import Profile
from parley.core import handles, keys
from parley.core import leaving as core
from parley.errors import UsageError
from parley.wire import CodeSent, Deregistered, DeregisterRequest, LeftRecord, LookupResult

LEFT_KEY = "left_key"  # the pinned server key for "left" records (a profile setting)


def check_left(record: LeftRecord, asked: str, server_key: str, seen_on_parley_ms: int) -> core.LeftCheck:
    left = core.Left(record.handle, record.left_at_ms, record.reason, record.moved_to)
    signature_ok = bool(server_key) and keys.verify(server_key, core.signed_bytes(left), record.signature)
    return core.judge_left(signature_ok, record.handle, asked, record.left_at_ms, seen_on_parley_ms)


def observe(profile: Profile, results: list[LookupResult]) -> dict[str, core.LeftCheck]:
    """Note which handles are on Parley now, and judge every "left" record; return the
    verdicts by handle. Valid records are remembered (``left:<handle>``)."""
    server_key = profile.get(LEFT_KEY) or ""
    verdicts: dict[str, core.LeftCheck] = {}
    now = int(time.time() * 1000)
    updates: dict[str, str] = {}
    for result in results:
        if result.on_parley:
            updates[f"seen:{result.handle}"] = str(now)
            continue
        if result.left is None:
            continue
        seen = int(profile.get(f"seen:{result.handle}") or 0)
        verdict = check_left(result.left, result.handle, server_key, seen)
        verdicts[result.handle] = verdict
        if verdict is core.LeftCheck.VALID:
            updates[f"left:{result.handle}"] = f"{result.left.left_at_ms} {result.left.moved_to}".strip()
    if updates:
        profile.set_many(updates)
    return verdicts


async def deregister(
    server: str,
    phone: str,
    code: str | None,
    moved_to: str = "",
    read_code: Callable[[ServerApi, str, int], Awaitable[str]] | None = None,
) -> Deregistered:
    """Deregister ``phone`` by SMS code: every device on it is unlinked at once."""
    handle = handles.normalise(phone)
    if not handles.is_phone(handle):
        raise UsageError("deregister a phone number (+E.164)")
    number = handles.phone_of(handle)
    async with ServerApi(server) as api:
        if code is None:
            info = await api.info()
            sent: CodeSent = await api.deregister_code(handle)
            if info.carrier != "sim" or read_code is None:
                raise UsageError(
                    f"a code was sent by SMS to {handles.phone_of(sent.handle)}; run again with --code CODE"
                )
            code = await read_code(api, number, info.server_time_ms)
        return await api.deregister(DeregisterRequest(phone=handle, code=code, moved_to=moved_to))
