"""Bad input against a real server: each gets a clear 4xx or close code, nothing is stored,
and other connections are unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import msgspec
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from parley.client.api import ws_url
from parley.wire import (
    MAX_BODY_BYTES,
    MAX_FRAME_BYTES,
    MAX_LOOKUP_HANDLES,
    Ack,
    Deliver,
    Hello,
    OutEnvelope,
    Refused,
    Send,
    Sent,
    WsClose,
    frame_encode,
    server_frame_decoder,
)
from tests.conftest import ServerProcess, registration_keys

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"
KEYS = registration_keys()


@dataclass
class Registered:
    device_id: str
    credential: str
    handle: str


async def register(http: httpx.AsyncClient, phone: str, name: str = "test") -> Registered:
    info = (await http.get("/v1/info")).json()
    assert (await http.post("/v1/codes", json={"handle": phone})).status_code == 202
    code = await read_code(http, phone, info["server_time_ms"])
    body = {"handle": phone, "code": code, "device_name": name, **registration_keys()}
    response = await http.post("/v1/devices", json=body)
    assert response.status_code == 201, response.text
    body = response.json()
    return Registered(body["device_id"], body["credential"], body["handle"])


async def read_code(http: httpx.AsyncClient, phone: str, since_ms: int) -> str:
    inbox = (await http.get(f"/v1/sim/handsets/{phone}/inbox")).json()
    texts = [m["text"] for m in inbox["messages"] if m["at_ms"] >= since_ms]
    return str(texts[-1].split("code is ")[1][:6])


def auth(device: Registered) -> dict[str, str]:
    return {"authorization": f"Bearer {device.credential}"}


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def open_ws(server: ServerProcess, device: Registered | None, **headers: str) -> ClientConnection:
    extra = {**(auth(device) if device else {}), **headers}
    return await connect(ws_url(server.url), additional_headers=extra, max_size=MAX_FRAME_BYTES)


async def next_frame(ws: ClientConnection) -> object:
    return server_frame_decoder.decode(await asyncio.wait_for(ws.recv(), 5))


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd else None


def send_frame(message_id: str, to: str, device_ids: list[str], body: bytes = b"x") -> bytes:
    envelopes = [OutEnvelope(device_id=d, body=body) for d in device_ids]
    return frame_encode(Send(message_id=message_id, recipients=[to], envelopes=envelopes))


# --- HTTP ---


async def test_malformed_and_oversize_bodies_are_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/codes", content=b"{not json", headers={"content-type": "application/json"})
    assert (response.status_code, error_code(response)) == (400, "bad_request")
    response = await http.post("/v1/codes", json={"wrong_field": 1})
    assert (response.status_code, error_code(response)) == (400, "bad_request")
    response = await http.post("/v1/codes", content=b"x" * (MAX_FRAME_BYTES + 1))
    assert (response.status_code, error_code(response)) == (413, "too_large")
    response = await http.post("/v1/codes", json={"handle": "+1 not a number"})
    assert (response.status_code, error_code(response)) == (400, "invalid_handle")


async def test_wrong_codes_register_nothing_and_lock_after_five(http: httpx.AsyncClient) -> None:
    assert (await http.post("/v1/codes", json={"handle": ALICE})).status_code == 202
    for attempt in range(4):
        response = await http.post("/v1/devices", json={"handle": ALICE, "code": "000000", "device_name": "x", **KEYS})
        assert (response.status_code, error_code(response)) == (403, "wrong_code"), attempt
    response = await http.post("/v1/devices", json={"handle": ALICE, "code": "000000", "device_name": "x", **KEYS})
    assert error_code(response) == "too_many_attempts"
    # Even the right code is void now: the one that was sent is used up.
    info = (await http.get("/v1/info")).json()
    code = await read_code(http, ALICE, 0)
    response = await http.post("/v1/devices", json={"handle": ALICE, "code": code, "device_name": "x", **KEYS})
    assert (response.status_code, error_code(response)) == (403, "wrong_code")
    assert info["carrier"] == "sim"
    lookup_device = await register(http, BOB)
    lookup = await http.post("/v1/lookup", json={"handles": [ALICE]}, headers=auth(lookup_device))
    assert lookup.json()["results"][0]["on_parley"] is False


async def test_code_requests_are_rate_limited_per_number(http: httpx.AsyncClient) -> None:
    statuses = [(await http.post("/v1/codes", json={"handle": ALICE})).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    limited = await http.post("/v1/codes", json={"handle": ALICE})
    assert error_code(limited) == "rate_limited" and int(limited.headers["retry-after"]) > 0


async def test_bad_tokens_and_unlinked_devices_are_unauthorized(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE, "phone")
    laptop = await register(http, ALICE, "laptop")
    for headers in [{}, {"authorization": "Bearer nonsense"}, {"authorization": f"Bearer {alice.device_id}.wrong"}]:
        response = await http.get("/v1/devices", headers=headers)
        assert (response.status_code, error_code(response)) == (401, "unauthorized")
    assert (await http.delete(f"/v1/devices/{laptop.device_id}", headers=auth(alice))).status_code == 204
    response = await http.get("/v1/devices", headers=auth(laptop))
    assert response.status_code == 401
    listing = (await http.get("/v1/devices", headers=auth(alice))).json()
    assert [d["device_id"] for d in listing["devices"]] == [alice.device_id]


async def test_lookup_bounds_and_per_handle_errors(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    too_many = [f"+1415555{n:04d}" for n in range(MAX_LOOKUP_HANDLES + 1)]
    response = await http.post("/v1/lookup", json={"handles": too_many}, headers=auth(alice))
    assert (response.status_code, error_code(response)) == (400, "bad_request")
    response = await http.post("/v1/lookup", json={"handles": ["nope", ALICE]}, headers=auth(alice))
    first, second = response.json()["results"]
    assert first["error"] and not first["on_parley"]
    assert second["on_parley"] and second["devices"][0]["device_id"] == alice.device_id


async def test_stale_oversize_and_unknown_sends_store_nothing(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)

    async def send(envelopes: list[dict[str, object]], to: str = BOB, message_id: str = "m1") -> httpx.Response:
        body = {"message_id": message_id, "recipients": [to], "envelopes": envelopes}
        return await http.post("/v1/messages", json=body, headers=auth(alice))

    stale = await send([{"device_id": "dGone", "body": "eA=="}])
    assert (stale.status_code, error_code(stale)) == (409, "stale_devices")
    assert stale.json()["error"]["missing"] == [bob.device_id]
    assert stale.json()["error"]["extra"] == ["dGone"]
    huge = msgspec.json.encode(b"x" * (MAX_BODY_BYTES + 1)).decode().strip('"')
    oversize = await send([{"device_id": bob.device_id, "body": huge}])
    assert (oversize.status_code, error_code(oversize)) == (400, "bad_request")
    twice = await send([{"device_id": bob.device_id, "body": "eA=="}] * 2)
    assert (twice.status_code, error_code(twice)) == (400, "bad_request")
    stranger = await send([], to="+14155550199")
    assert (stranger.status_code, error_code(stranger)) == (404, "not_on_parley")
    fetched = (await http.get("/v1/messages", headers=auth(bob))).json()
    assert fetched["envelopes"] == []


async def test_same_message_id_is_stored_once(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)
    body = {"message_id": "same", "recipients": [BOB], "envelopes": [{"device_id": bob.device_id, "body": "eA=="}]}
    first = (await http.post("/v1/messages", json=body, headers=auth(alice))).json()
    again = (await http.post("/v1/messages", json=body, headers=auth(alice))).json()
    assert first == {"message_id": "same"} and again == {"message_id": "same", "duplicate": True}
    fetched = (await http.get("/v1/messages", headers=auth(bob))).json()
    assert [e["message_id"] for e in fetched["envelopes"]] == ["same"]


async def test_openapi_document_lists_the_api(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/codes", "/v1/devices", "/v1/lookup", "/v1/messages"} <= set(document["paths"])
    assert "SendRequest" in document["components"]["schemas"]


# --- WebSocket ---


async def test_websocket_refuses_missing_or_bad_credentials(server: ServerProcess, http: httpx.AsyncClient) -> None:
    for headers in [{}, {"authorization": "Bearer d123.nope"}]:
        ws = await open_ws(server, None, **headers)
        assert await close_code(ws) == WsClose.UNAUTHORIZED


async def test_bad_frames_close_only_their_connection(server: ServerProcess, http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)
    async with await open_ws(server, bob) as bob_ws:
        assert isinstance(await next_frame(bob_ws), Hello)
        for bad in [b"\xc1garbage", frame_encode({"type": "nonsense"}), "text frame", frame_encode(Ack(up_to=99))]:
            ws = await open_ws(server, alice)
            assert isinstance(await next_frame(ws), Hello)
            await ws.send(bad)
            assert await close_code(ws) == WsClose.BAD_FRAME, bad
        # Bob's connection is untouched and still gets what Alice sends.
        async with await open_ws(server, alice) as alice_ws:
            assert isinstance(await next_frame(alice_ws), Hello)
            await alice_ws.send(send_frame("after-bad", BOB, [bob.device_id]))
            assert isinstance(await next_frame(alice_ws), Sent)
            delivered = await next_frame(bob_ws)
            assert isinstance(delivered, Deliver) and delivered.envelopes[0].message_id == "after-bad"


async def test_refused_sends_are_reported_on_the_socket(server: ServerProcess, http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    await register(http, BOB)
    async with await open_ws(server, alice) as ws:
        assert isinstance(await next_frame(ws), Hello)
        await ws.send(send_frame("stale-one", BOB, ["dWrong"]))
        refused = await next_frame(ws)
        assert isinstance(refused, Refused) and refused.error.code == "stale_devices"
        assert refused.error.extra == ["dWrong"]


async def test_unlinked_device_is_disconnected(server: ServerProcess, http: httpx.AsyncClient) -> None:
    phone = await register(http, ALICE, "phone")
    laptop = await register(http, ALICE, "laptop")
    ws = await open_ws(server, laptop)
    assert isinstance(await next_frame(ws), Hello)
    assert (await http.delete(f"/v1/devices/{laptop.device_id}", headers=auth(phone))).status_code == 204
    assert await close_code(ws) == WsClose.REPLACED
    again = await open_ws(server, laptop)
    assert await close_code(again) == WsClose.UNAUTHORIZED
