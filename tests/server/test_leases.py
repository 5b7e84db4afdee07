"""Registration leases against a real server process (a lease of about 3 s): a device
whose client stops running lapses, and when every device of a number lapsed the number
leaves Parley and what was queued is re-routed; a connected device keeps its lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ServerProcess, running_server
from tests.server.test_bad_input import ALICE, BOB, auth, register, ws_url

pytestmark = pytest.mark.slow

LEASE_DAYS = 3 / 86_400  # 3 s


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, "--lease-days", repr(LEASE_DAYS)) as process:
        yield process


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def test_idle_devices_lapse_and_running_ones_stay(http: httpx.AsyncClient, server: ServerProcess) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)
    send = {
        "message_id": "m1",
        "recipients": [BOB],
        "fallback_s": 0,
        "envelopes": [{"device_id": bob.device_id, "body": ""}],
    }
    async with connect(ws_url(server.url), additional_headers=auth(alice)):
        assert (await http.post("/v1/messages", json=send, headers=auth(alice))).status_code == 200
        await asyncio.sleep(5.5)  # Bob's client never runs; Alice's stays connected
        lookup = (await http.post("/v1/lookup", json={"handles": [BOB, ALICE]}, headers=auth(alice))).json()
    bob_result, alice_result = lookup["results"]
    assert bob_result["on_parley"] is False and bob_result["left"]["reason"] == "lapsed"
    assert alice_result["on_parley"] is True
    assert (await http.get("/v1/messages", headers=auth(bob))).status_code == 401
    fetched = (await http.get("/v1/messages", headers=auth(alice))).json()["envelopes"]
    assert [e["kind"] for e in fetched if e["message_id"] == "m1"] == ["fallback"]  # re-routed, not lost


async def test_a_device_sees_its_own_lease_and_using_it_renews_it(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    first = (await http.get("/v1/devices", headers=auth(alice))).json()["lease_expires_ms"]
    await asyncio.sleep(2.0)  # past half of the 3 s lease: the next request renews it
    await http.get("/v1/devices", headers=auth(alice))
    renewed = (await http.get("/v1/devices", headers=auth(alice))).json()["lease_expires_ms"]
    assert renewed > first
    # Lookups never show a lease: others must not learn how recently a device was used.
    lookup = (await http.post("/v1/lookup", json={"handles": [ALICE]}, headers=auth(alice))).json()
    assert "lease_expires_ms" not in lookup["results"][0]["devices"][0]
