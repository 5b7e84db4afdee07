"""The HTTP API: thin handlers that decode a wire type, call the directory or hub, and
encode the answer. The route table below is also the source of ``/openapi.json``."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from parley import __version__
from parley.carrier import kannel
from parley.carrier.simulator import CarrierSimulator
from parley.core import handles
from parley.errors import ApiError, InvalidHandle
from parley.server.directory import Directory, device_info
from parley.server.hub import Hub
from parley.server.keys import KeyDirectory
from parley.server.sms import SmsService
from parley.server.ws import bearer, error_info
from parley.store.base import DeviceRecord, Store
from parley.wire import (
    MAX_FETCH,
    MAX_FRAME_BYTES,
    AckRequest,
    AckResponse,
    ClaimRequest,
    ClaimResponse,
    CodeRequest,
    CodeSent,
    DeviceList,
    ErrorBody,
    ErrorCode,
    FetchResponse,
    HandsetInbox,
    HandsetSend,
    KeyCount,
    KeyUpload,
    LookupRequest,
    LookupResponse,
    Registered,
    RegisterRequest,
    SendAccepted,
    SendRequest,
    ServerInfo,
    SignalRelayed,
    SignalRequest,
    SimulatedSms,
    SmsAccepted,
    SmsRequest,
    json_encode,
)

log = logging.getLogger("parley.http")
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    request: type | None
    response: type | None
    status: int = 200
    auth: bool = False


ENDPOINTS = [
    Endpoint("GET", "/v1/info", "Server version, carrier and limits", None, ServerInfo),
    Endpoint("POST", "/v1/codes", "Send a one-time code to a handle", CodeRequest, CodeSent, 202),
    Endpoint("POST", "/v1/devices", "Verify a code and register a device", RegisterRequest, Registered, 201),
    Endpoint("GET", "/v1/devices", "This account's devices", None, DeviceList, auth=True),
    Endpoint("DELETE", "/v1/devices/{device_id}", "Unlink a device of this account", None, None, 204, True),
    Endpoint("POST", "/v1/keys", "Upload one-time keys and a fallback key", KeyUpload, KeyCount, auth=True),
    Endpoint("GET", "/v1/keys", "How many one-time keys this device has left", None, KeyCount, auth=True),
    Endpoint("POST", "/v1/keys/claim", "Claim a key per device", ClaimRequest, ClaimResponse, auth=True),
    Endpoint("POST", "/v1/lookup", "Look handles up in the directory", LookupRequest, LookupResponse, auth=True),
    Endpoint("POST", "/v1/messages", "Send one message to every target device", SendRequest, SendAccepted, 200, True),
    Endpoint("GET", "/v1/messages", "This device's queued envelopes", None, FetchResponse, auth=True),
    Endpoint("POST", "/v1/messages/ack", "Remove envelopes up to a seq", AckRequest, AckResponse, auth=True),
    Endpoint(
        "POST", "/v1/signals", "Relay an ephemeral signal to connected devices", SignalRequest, SignalRelayed, 200, True
    ),
    Endpoint(
        "POST", "/v1/sms", "Send a text by SMS (not on Parley, or a fallback)", SmsRequest, SmsAccepted, 202, True
    ),
    Endpoint("GET", "/v1/sim/handsets/{number}/inbox", "Simulator: SMS a handset received", None, HandsetInbox),
    Endpoint("POST", "/v1/sim/sms", "Simulator: an SMS-only handset sends a text", HandsetSend, SimulatedSms, 202),
    Endpoint("GET", kannel.INBOUND_PATH, "Kannel get-url: an SMS arrived (needs ?secret=)", None, None, 202),
    Endpoint("GET", kannel.REPORT_PATH, "Kannel dlr-url: a delivery report (needs ?secret=)", None, None, 202),
]


class Api:
    def __init__(
        self,
        directory: Directory,
        hub: Hub,
        key_directory: KeyDirectory,
        store: Store,
        clock: Callable[[], int],
        carrier_name: str,
        simulator: CarrierSimulator | None,
        sms: SmsService,
        kannel_secret: str | None = None,
        left_key: str = "",
    ) -> None:
        self._left_key = left_key
        self._directory = directory
        self._hub = hub
        self._keys = key_directory
        self._store = store
        self._clock = clock
        self._carrier_name = carrier_name
        self._simulator = simulator
        self._sms = sms
        self._kannel_secret = kannel_secret

    async def info(self, request: Request) -> Response:
        return reply(
            ServerInfo(
                version=__version__,
                carrier=self._carrier_name,
                server_time_ms=self._clock(),
                left_key=self._left_key,
            )
        )

    async def request_code(self, request: Request) -> Response:
        body = await decode(request, CodeRequest)
        return reply(await self._directory.request_code(body.handle, address(request)), 202)

    async def register(self, request: Request) -> Response:
        body = await decode(request, RegisterRequest)
        registered = await self._directory.register(body, address(request))
        log.info("device %s registered on account %s", registered.device_id, registered.account_id)
        return reply(registered, 201)

    async def devices(self, request: Request) -> Response:
        device = await self._authenticate(request)
        records = await self._directory.devices(device.account_id)
        owned = await self._store.handles_of(device.account_id)
        listing = DeviceList(device.account_id, owned, [device_info(r) for r in records], device.lease_until_ms)
        return reply(listing)

    async def unlink(self, request: Request) -> Response:
        device = await self._authenticate(request)
        target = request.path_params["device_id"]
        await self._directory.unlink(device.account_id, target)
        self._hub.disconnect(target)
        log.info("device %s unlinked from account %s", target, device.account_id)
        return Response(status_code=204)

    async def upload_keys(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, KeyUpload)
        return reply(await self._keys.upload(device, body))

    async def key_count(self, request: Request) -> Response:
        device = await self._authenticate(request)
        return reply(await self._keys.count(device))

    async def claim_keys(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, ClaimRequest)
        return reply(await self._keys.claim(device, body.device_ids))

    async def lookup(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, LookupRequest)
        results = await self._directory.lookup(body.handles, device.device_id, address(request))
        return reply(LookupResponse(results))

    async def send(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, SendRequest)
        return reply(await self._hub.send(device, body))

    async def fetch(self, request: Request) -> Response:
        device = await self._authenticate(request)
        after = query_int(request, "after", 0, 0, 2**63 - 1)
        limit = query_int(request, "limit", 100, 1, MAX_FETCH)
        envelopes, more = await self._store.fetch(device.device_id, after, limit)
        return reply(FetchResponse(envelopes, more))

    async def ack(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, AckRequest)
        return reply(AckResponse(removed=await self._hub.ack(device, body.up_to)))

    async def signal(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, SignalRequest)
        return reply(await self._hub.relay(device, body))

    async def handset_inbox(self, request: Request) -> Response:
        if self._simulator is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this server does not run the carrier simulator")
        try:
            number = handles.normalise_phone(request.path_params["number"])
        except InvalidHandle as error:
            raise ApiError(400, ErrorCode.INVALID_HANDLE, str(error)) from None
        messages = [SimulatedSms(s.sms_id, s.sender, s.to, s.text, s.at_ms) for s in self._simulator.inbox(number)]
        return reply(HandsetInbox(number, messages))

    async def send_sms(self, request: Request) -> Response:
        device = await self._authenticate(request)
        body = await decode(request, SmsRequest)
        return reply(await self._sms.submit(device, body), 202)

    async def handset_send(self, request: Request) -> Response:
        if self._simulator is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this server does not run the carrier simulator")
        body = await decode(request, HandsetSend)
        sender, to = phone_or_400(body.sender), phone_or_400(body.to)
        sms = await self._simulator.handset_send(sender, to, body.text)
        return reply(SimulatedSms(sms.sms_id, sms.sender, sms.to, sms.text, sms.at_ms), 202)

    async def kannel_inbound(self, request: Request) -> Response:
        params = self._kannel_params(request)
        try:
            sms = kannel.parse_inbound(params, self._clock())
        except ValueError as error:
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"malformed inbound SMS: {error}") from None
        if not await self._sms.inbound(sms):
            raise ApiError(404, ErrorCode.NOT_ON_PARLEY, "no Parley account owns that number")
        return reply({"ok": True}, 202)

    async def kannel_report(self, request: Request) -> Response:
        params = self._kannel_params(request)
        try:
            report = kannel.parse_report(params)
        except ValueError as error:
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"malformed delivery report: {error}") from None
        await self._sms.report(report)
        return reply({"ok": True}, 202)

    def _kannel_params(self, request: Request) -> dict[str, str]:
        if self._kannel_secret is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this server does not run the Kannel gateway")
        params = dict(request.query_params)
        given = params.pop("secret", "")
        if not hmac.compare_digest(given.encode(), self._kannel_secret.encode()):
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "a gateway callback needs the shared secret")
        return params

    async def _authenticate(self, request: Request) -> DeviceRecord:
        return await self._directory.authenticate(bearer(request.headers))

    def handlers(self) -> dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]:
        by_route: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("GET", "/v1/info"): self.info,
            ("POST", "/v1/codes"): self.request_code,
            ("POST", "/v1/devices"): self.register,
            ("GET", "/v1/devices"): self.devices,
            ("DELETE", "/v1/devices/{device_id}"): self.unlink,
            ("POST", "/v1/keys"): self.upload_keys,
            ("GET", "/v1/keys"): self.key_count,
            ("POST", "/v1/keys/claim"): self.claim_keys,
            ("POST", "/v1/lookup"): self.lookup,
            ("POST", "/v1/messages"): self.send,
            ("GET", "/v1/messages"): self.fetch,
            ("POST", "/v1/messages/ack"): self.ack,
            ("POST", "/v1/signals"): self.signal,
            ("POST", "/v1/sms"): self.send_sms,
            ("GET", "/v1/sim/handsets/{number}/inbox"): self.handset_inbox,
            ("POST", "/v1/sim/sms"): self.handset_send,
            ("GET", kannel.INBOUND_PATH): self.kannel_inbound,
            ("GET", kannel.REPORT_PATH): self.kannel_report,
        }
        assert set(by_route) == {(e.method, e.path) for e in ENDPOINTS}, "route table and handlers disagree"
        return by_route


# --- helpers ---

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


async def decode(request: Request, kind: type[T]) -> T:
    """Read a bounded JSON body and validate it into ``kind``, or raise a 4xx."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FRAME_BYTES:
        raise ApiError(413, ErrorCode.TOO_LARGE, f"request body over {MAX_FRAME_BYTES} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FRAME_BYTES:
            raise ApiError(413, ErrorCode.TOO_LARGE, f"request body over {MAX_FRAME_BYTES} bytes")
        chunks.append(chunk)
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(b"".join(chunks))  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"bad request body: {error}") from None


def reply(body: Any, status: int = 200) -> Response:
    return Response(json_encode(body), status_code=status, media_type="application/json")


def error_response(error: ApiError) -> Response:
    headers = {}
    retry = error.detail.get("retry_after_s")
    if isinstance(retry, int | float):
        headers["retry-after"] = str(max(1, round(retry)))
    return Response(
        json_encode(ErrorBody(error_info(error))),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )


def address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def phone_or_400(raw: str) -> str:
    try:
        return handles.phone_of(handles.normalise(raw)) if raw.startswith("tel:") else handles.normalise_phone(raw)
    except InvalidHandle as error:
        raise ApiError(400, ErrorCode.INVALID_HANDLE, str(error)) from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{name} must be between {low} and {high}")
    return value
