"""Leaving Parley against a real server process: deregistration codes for numbers the
caller does not hold, forged, replayed and stale carrier events, rate limits; and the
ways out that work: a port-out unlinks at once, a recycled number's new owner inherits
nothing. Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, running_server
from tests.server.test_bad_input import ALICE, BOB, auth, error_code, register

pytestmark = pytest.mark.slow

SECRET = "carrier-events-secret"
HEADER = "x-parley-carrier-secret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, "--carrier-secret", SECRET) as process:
        yield process


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def on_parley(http: httpx.AsyncClient, asker: object, number: str) -> bool:
    response = await http.post("/v1/lookup", json={"handles": [number]}, headers=auth(asker))  # type: ignore[arg-type]
    return bool(response.json()["results"][0]["on_parley"])


async def newest_code(http: httpx.AsyncClient, number: str) -> str:
    inbox = (await http.get(f"/v1/sim/handsets/{number}/inbox")).json()["messages"]
    match = re.search(r"\b(\d{6})\b", inbox[-1]["text"])
    assert match is not None
    return match.group(1)


async def test_deregistration_needs_the_code_sent_to_the_number(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    await register(http, BOB)
    cases = [
        ({"phone": "not-a-number"}, 400, "invalid_handle"),
        ({"phone": "+14155550177"}, 404, "not_on_parley"),  # never on Parley: nothing to do
        ({"phone": "mailto:bob@example.com"}, 400, "invalid_handle"),
        ({}, 400, "bad_request"),
    ]
    for body, status, code in cases:
        response = await http.post("/v1/deregister/code", json=body)
        assert (response.status_code, error_code(response)) == (status, code), body
    # No code requested yet, then a wrong code (the caller does not hold the number).
    response = await http.post("/v1/deregister", json={"phone": BOB, "code": "000000"})
    assert (response.status_code, error_code(response)) == (403, "wrong_code")
    assert (await http.post("/v1/deregister/code", json={"phone": BOB})).status_code == 202
    real = await newest_code(http, BOB)
    wrong = "111111" if real != "111111" else "222222"
    response = await http.post("/v1/deregister", json={"phone": BOB, "code": wrong})
    assert (response.status_code, error_code(response)) == (403, "wrong_code")
    # A registration code is no deregistration code.
    info = (await http.get("/v1/info")).json()
    assert (await http.post("/v1/codes", json={"handle": BOB})).status_code == 202
    register_code = await newest_code(http, BOB)
    response = await http.post("/v1/deregister", json={"phone": BOB, "code": register_code})
    assert response.status_code == 403 or register_code == real
    assert info["left_key"]
    assert await on_parley(http, alice, BOB)  # nothing changed
    # The web page says the same in one line, and changes nothing either.
    page = await http.post("/deregister", data={"phone": BOB, "code": wrong})
    assert page.status_code == 403 and "wrong code" in page.text
    assert await on_parley(http, alice, BOB)


async def test_deregistration_codes_are_rate_limited_like_registration(http: httpx.AsyncClient) -> None:
    await register(http, BOB)  # one code already sent to the number
    statuses = [(await http.post("/v1/deregister/code", json={"phone": BOB})).status_code for _ in range(4)]
    assert statuses[-1] == 429 and 202 in statuses


async def test_carrier_events_need_the_secret_and_are_taken_once(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    await register(http, BOB)
    now = int(time.time() * 1000)
    event = {"event_id": "ev1", "kind": "port-out", "number": BOB, "at_ms": now}
    assert (await http.post("/v1/carrier/events", json=event)).status_code == 401
    assert (await http.post("/v1/carrier/events", json=event, headers={HEADER: "wrong"})).status_code == 401
    bad = [
        {**event, "kind": "explode"},
        {**event, "number": "garbage"},
        {**event, "at_ms": now - 3_600_000},  # too old: a replay of an old capture
        {**event, "at_ms": now + 3_600_000},
        {**event, "at_ms": 0, "event_id": "ev0"},
    ]
    for body in bad:
        response = await http.post("/v1/carrier/events", json=body, headers={HEADER: SECRET})
        assert response.status_code == 400, body
    # An event from before Bob registered speaks of the number's last owner.
    early = {**event, "event_id": "ev-early", "at_ms": now - 60_000}
    response = await http.post("/v1/carrier/events", json=early, headers={HEADER: SECRET})
    assert response.status_code == 409
    assert await on_parley(http, alice, BOB)  # nothing changed so far
    response = await http.post("/v1/carrier/events", json=event, headers={HEADER: SECRET})
    assert response.status_code == 202
    assert not await on_parley(http, alice, BOB)  # unlinked at once
    response = await http.post("/v1/carrier/events", json=event, headers={HEADER: SECRET})
    assert response.status_code == 409  # replayed


async def test_a_recycled_numbers_new_owner_inherits_nothing(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB, "old owner")
    send = {
        "message_id": "m1",
        "recipients": [BOB],
        "fallback_s": 0,
        "envelopes": [{"device_id": bob.device_id, "body": ""}],
    }
    assert (await http.post("/v1/messages", json=send, headers=auth(alice))).status_code == 200
    assert (await http.post("/v1/sim/events", json={"kind": "recycle", "number": BOB})).status_code == 202
    assert (await http.get("/v1/messages", headers=auth(bob))).status_code == 401  # the old device is gone
    lookup = (await http.post("/v1/lookup", json={"handles": [BOB]}, headers=auth(alice))).json()["results"][0]
    assert lookup["on_parley"] is False and lookup["left"]["reason"] == "recycle"
    new_owner = await register(http, BOB, "new owner")
    listing = (await http.get("/v1/devices", headers=auth(new_owner))).json()
    assert [d["name"] for d in listing["devices"]] == ["new owner"]
    assert (await http.get("/v1/messages", headers=auth(new_owner))).json()["envelopes"] == []
    lookup = (await http.post("/v1/lookup", json={"handles": [BOB]}, headers=auth(alice))).json()["results"][0]
    assert lookup["on_parley"] is True and "left" not in lookup
    # Alice was told about m1 (re-routed to SMS), not silently dropped.
    fetched = (await http.get("/v1/messages", headers=auth(alice))).json()["envelopes"]
    assert [e["kind"] for e in fetched if e["message_id"] == "m1"] == ["fallback"]
