"""The server's HTTP API as typed async calls; error bodies become :mod:`parley.errors`."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import msgspec

from parley.errors import ProtocolError, RateLimited, Rejected, StaleDevices, Unreachable
from parley.wire import (
    AckRequest,
    AckResponse,
    ClaimRequest,
    ClaimResponse,
    CodeRequest,
    CodeSent,
    DeregisterCode,
    Deregistered,
    DeregisterRequest,
    DeviceList,
    ErrorBody,
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
    SimEvent,
    SimulatedSms,
    SmsAccepted,
    SmsRequest,
    json_encode,
)

T = TypeVar("T")

TIMEOUT_S = 15.0


def ws_url(server: str) -> str:
    base = server.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/v1/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/v1/ws"
    raise ValueError(f"server URL must start with http:// or https://: {server!r}")


class ServerApi:
    def __init__(self, server: str, credential: str | None = None) -> None:
        ws_url(server)  # validates the scheme
        self.server = server.rstrip("/")
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        self._http = httpx.AsyncClient(base_url=self.server, headers=headers, timeout=TIMEOUT_S)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ServerApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def info(self) -> ServerInfo:
        return await self._call("GET", "/v1/info", ServerInfo)

    async def request_code(self, handle: str) -> CodeSent:
        return await self._call("POST", "/v1/codes", CodeSent, CodeRequest(handle))

    async def register(self, request: RegisterRequest) -> Registered:
        return await self._call("POST", "/v1/devices", Registered, request)

    async def devices(self) -> DeviceList:
        return await self._call("GET", "/v1/devices", DeviceList)

    async def unlink(self, device_id: str) -> None:
        await self._call("DELETE", f"/v1/devices/{device_id}", None)

    async def upload_keys(self, upload: KeyUpload) -> KeyCount:
        return await self._call("POST", "/v1/keys", KeyCount, upload)

    async def key_count(self) -> KeyCount:
        return await self._call("GET", "/v1/keys", KeyCount)

    async def claim_keys(self, device_ids: list[str]) -> ClaimResponse:
        return await self._call("POST", "/v1/keys/claim", ClaimResponse, ClaimRequest(device_ids))

    async def lookup(self, handles: list[str]) -> LookupResponse:
        return await self._call("POST", "/v1/lookup", LookupResponse, LookupRequest(handles))

    async def send(self, request: SendRequest) -> SendAccepted:
        return await self._call("POST", "/v1/messages", SendAccepted, request)

    async def fetch(self, after: int = 0, limit: int = 500) -> FetchResponse:
        return await self._call("GET", f"/v1/messages?after={after}&limit={limit}", FetchResponse)

    async def ack(self, up_to: int) -> AckResponse:
        return await self._call("POST", "/v1/messages/ack", AckResponse, AckRequest(up_to))

    async def get_json(self, path: str) -> Any:
        """A GET answer as plain JSON: for fields a newer server may report (a lease)."""
        return await self._call("GET", path, dict)

    async def signal(self, request: SignalRequest) -> SignalRelayed:
        return await self._call("POST", "/v1/signals", SignalRelayed, request)

    async def handset_inbox(self, number: str) -> HandsetInbox:
        return await self._call("GET", f"/v1/sim/handsets/{number}/inbox", HandsetInbox)

    async def send_sms(self, request: SmsRequest) -> SmsAccepted:
        return await self._call("POST", "/v1/sms", SmsAccepted, request)

    async def handset_send(self, sender: str, to: str, text: str) -> SimulatedSms:
        return await self._call("POST", "/v1/sim/sms", SimulatedSms, HandsetSend(sender=sender, to=to, text=text))

    async def deregister_code(self, phone: str) -> CodeSent:
        return await self._call("POST", "/v1/deregister/code", CodeSent, DeregisterCode(phone=phone))

    async def deregister(self, request: DeregisterRequest) -> Deregistered:
        return await self._call("POST", "/v1/deregister", Deregistered, request)

    async def carrier_event(self, kind: str, number: str) -> None:
        """Simulator: a carrier event for ``number`` (port-out, sim-change, recycle, move)."""
        await self._call("POST", "/v1/sim/events", None, SimEvent(kind=kind, number=number))  # type: ignore[arg-type]

    async def _call(self, method: str, path: str, kind: type[T] | None, body: Any = None) -> T:
        content = json_encode(body) if body is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as error:
            raise Unreachable(f"cannot reach {self.server}: {error or type(error).__name__}") from None
        if response.status_code >= 400:
            raise rejection(response)
        if kind is None:
            return None  # type: ignore[return-value]
        try:
            return msgspec.json.decode(response.content, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise ProtocolError(f"the server sent a malformed {kind.__name__}: {error}") from None


def rejection(response: httpx.Response) -> Rejected:
    try:
        info = msgspec.json.decode(response.content, type=ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Rejected("http_error", f"the server answered {response.status_code}", response.status_code)
    if info.code == "stale_devices":
        return StaleDevices(info.message, info.missing or [], info.extra or [])
    if info.code == "rate_limited":
        return RateLimited(info.message, info.retry_after_s or 1.0)
    return Rejected(info.code, info.message, response.status_code)
