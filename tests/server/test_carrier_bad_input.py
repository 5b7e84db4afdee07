"""Bad input on the carrier path, against real server processes: SMS to unknown, invalid
or SMS-incapable numbers, empty and oversize texts, SMS that would bypass a fallback
window, simulator endpoints on a non-simulator server, and malformed or unauthenticated
Kannel callbacks. Each gets a clear error and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.conftest import ServerProcess, free_port, registration_keys
from tests.server.test_bad_input import ALICE, BOB, auth, error_code, register
from tests.server.test_bad_input import http as http  # the fixture, re-exported

pytestmark = pytest.mark.slow

CAROL = "+14155550122"
LONDON_LANDLINE = "+442079460000"
SECRET = "kannel-callback-secret"


async def handset(http: httpx.AsyncClient, number: str) -> list[str]:
    inbox = (await http.get(f"/v1/sim/handsets/{number}/inbox")).json()
    return [m["text"] for m in inbox["messages"] if "Parley code" not in m["text"]]


async def test_sms_to_bad_numbers_and_bad_texts_is_refused(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    cases = [
        ({"message_id": "m1", "to": "not-a-number", "text": "hi"}, 400, "invalid_handle"),
        ({"message_id": "m2", "to": "+1234", "text": "hi"}, 400, "invalid_handle"),
        ({"message_id": "m3", "to": "mailto:carol@example.com", "text": "hi"}, 400, "invalid_handle"),
        ({"message_id": "m4", "to": LONDON_LANDLINE, "text": "hi"}, 400, "not_sms_capable"),
        ({"message_id": "m5", "to": CAROL, "text": ""}, 400, "bad_request"),
        ({"message_id": "m6", "to": CAROL, "text": "a" * 1531}, 400, "too_large"),  # 11 parts
        ({"message_id": "m7", "to": CAROL, "text": "a" * 1601}, 400, "bad_request"),  # over the wire bound
        ({"message_id": "bad id!", "to": CAROL, "text": "hi"}, 400, "bad_request"),
    ]
    for body, status, code in cases:
        response = await http.post("/v1/sms", json=body, headers=auth(alice))
        assert (response.status_code, error_code(response)) == (status, code), body
    response = await http.post("/v1/sms", json={"message_id": "m8", "to": CAROL, "text": "hi"})
    assert (response.status_code, error_code(response)) == (401, "unauthorized")
    response = await http.post(
        "/v1/sms", json={"message_id": "m9", "to": CAROL, "text": "hi"}, headers={"authorization": "Bearer x.y"}
    )
    assert response.status_code == 401
    await asyncio.sleep(0.3)
    assert await handset(http, CAROL) == []


async def test_direct_sms_needs_the_exact_device_set_for_copies(http: httpx.AsyncClient) -> None:
    phone = await register(http, ALICE, "phone")
    await register(http, ALICE, "laptop")
    response = await http.post("/v1/sms", json={"message_id": "m1", "to": CAROL, "text": "hi"}, headers=auth(phone))
    assert (response.status_code, error_code(response)) == (409, "stale_devices")
    assert len(response.json()["error"]["missing"]) == 1
    await asyncio.sleep(0.3)
    assert await handset(http, CAROL) == []


async def test_sms_to_a_parley_number_only_after_its_window_and_only_once(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)
    body = {"message_id": "m1", "to": BOB, "text": "hi"}
    # No Parley message with that id: an SMS to a number on Parley is refused.
    response = await http.post("/v1/sms", json=body, headers=auth(alice))
    assert (response.status_code, error_code(response)) == (409, "no_fallback")
    send = {
        "message_id": "m1",
        "recipients": [BOB],
        "fallback_s": 1,
        "envelopes": [{"device_id": bob.device_id, "body": ""}],
    }
    assert (await http.post("/v1/messages", json=send, headers=auth(alice))).status_code == 200
    response = await http.post("/v1/sms", json=body, headers=auth(alice))
    assert (response.status_code, error_code(response)) == (409, "not_due")
    await asyncio.sleep(1.5)
    first = await http.post("/v1/sms", json=body, headers=auth(alice))
    again = await http.post("/v1/sms", json=body, headers=auth(alice))
    assert first.status_code == again.status_code == 202
    assert (first.json().get("duplicate", False), again.json()["duplicate"]) == (False, True)
    assert first.json()["sms_id"] == again.json()["sms_id"]
    await asyncio.sleep(0.5)
    assert await handset(http, BOB) == ["hi"]
    # An out-of-range window is refused with the send.
    send["fallback_s"] = -1
    send["message_id"] = "m2"
    response = await http.post("/v1/messages", json=send, headers=auth(alice))
    assert (response.status_code, error_code(response)) == (400, "bad_request")


async def test_simulator_handsets_refuse_bad_numbers(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/sim/sms", json={"sender": "nope", "to": ALICE, "text": "hi"})
    assert (response.status_code, error_code(response)) == (400, "invalid_handle")
    response = await http.post("/v1/sim/sms", json={"sender": CAROL, "to": ALICE, "text": ""})
    assert (response.status_code, error_code(response)) == (400, "bad_request")
    # To a number no account owns: it reaches that handset only.
    response = await http.post("/v1/sim/sms", json={"sender": CAROL, "to": BOB, "text": "hello"})
    assert response.status_code == 202
    assert await handset(http, BOB) == ["hello"]


# --- a server on Kannel ---


class FakeSendsms:
    """Stands in for smsbox's sendsms: records what the server asks it to send."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, str]] = []
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        self.requests.append(dict(parse_qsl(urlsplit(line.split(" ")[1]).query)))
        writer.write(b"HTTP/1.0 202 Accepted\r\nContent-Length: 24\r\n\r\n0: Accepted for delivery")
        await writer.drain()
        writer.close()


@pytest.fixture
async def sendsms() -> AsyncIterator[FakeSendsms]:
    fake = FakeSendsms()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def kannel_server(tmp_path: Path, sendsms: FakeSendsms) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "kannel-server",
        "--carrier",
        "kannel",
        "--carrier-secret",
        SECRET,
        "--kannel-username",
        "parley",
        "--kannel-password",
        "pw",
        "--kannel-sendsms-url",
        f"http://127.0.0.1:{sendsms.port}/cgi-bin/sendsms",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_kannel_callbacks_need_the_secret_and_well_formed_parameters(
    kannel_server: ServerProcess, sendsms: FakeSendsms
) -> None:
    async with httpx.AsyncClient(base_url=kannel_server.url, timeout=10) as http:
        # Simulator endpoints do not exist here.
        response = await http.get(f"/v1/sim/handsets/{ALICE}/inbox")
        assert (response.status_code, error_code(response)) == (404, "not_found")
        response = await http.post("/v1/sim/sms", json={"sender": CAROL, "to": ALICE, "text": "hi"})
        assert response.status_code == 404
        # Register Alice with the code Kannel was asked to send.
        assert (await http.post("/v1/codes", json={"handle": ALICE})).status_code == 202
        code = sendsms.requests[-1]["text"].split("code is ")[1][:6]
        assert sendsms.requests[-1]["to"] == ALICE
        body = {"handle": ALICE, "code": code, "device_name": "x", **registration_keys()}
        registered = await http.post("/v1/devices", json=body)
        assert registered.status_code == 201

        inbound = "/v1/carrier/kannel/inbound"
        good = {"from": CAROL, "to": ALICE, "text": "hello", "id": "k-1"}
        cases = [
            ({**good}, 401, "unauthorized"),  # no secret
            ({**good, "secret": "wrong"}, 401, "unauthorized"),
            ({**good, "secret": SECRET, "from": "garbage"}, 400, "bad_request"),
            ({"secret": SECRET, "to": ALICE, "text": "x", "id": "k"}, 400, "bad_request"),
            ({**good, "secret": SECRET, "text": ""}, 400, "bad_request"),
            ({**good, "secret": SECRET, "id": "x" * 65}, 400, "bad_request"),
            ({**good, "secret": SECRET, "to": BOB}, 404, "not_on_parley"),
        ]
        for params, status, code in cases:
            response = await http.get(inbound, params=params)
            assert (response.status_code, error_code(response)) == (status, code), params
        device = registered.json()
        headers = {"authorization": f"Bearer {device['credential']}"}
        assert (await http.get("/v1/messages", headers=headers)).json()["envelopes"] == []
        # A good one is delivered, sealed (no inbox key on this raw device: nothing stored in clear).
        assert (await http.get(inbound, params={**good, "secret": SECRET})).status_code == 202

        report = "/v1/carrier/kannel/report"
        for params, status in [
            ({"sms": "s1", "status": "1"}, 401),
            ({"secret": SECRET, "status": "1"}, 400),
            ({"secret": SECRET, "sms": "s1", "status": "x"}, 400),
            ({"secret": SECRET, "sms": "s1", "status": "8"}, 400),  # not a final report
            ({"secret": SECRET, "sms": "unknown", "status": "1"}, 202),  # nothing to update
        ]:
            assert (await http.get(report, params=params)).status_code == status, params
    assert "hello" not in kannel_server.log()
