"""Re-proof of a phone handle against a real server process (every 2 s, 2 s to answer):
the simulated handset that runs Parley answers its silent code and the number stays;
once the number moves to an SMS-only phone the code goes unanswered and it leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, running_server
from tests.server.test_bad_input import ALICE, BOB, auth, register

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    args = ("--reproof-days", repr(2 / 86_400), "--reproof-answer-seconds", "2")
    with running_server(tmp_path, *args) as process:
        yield process


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def bob_result(http: httpx.AsyncClient, asker: object) -> dict[str, object]:
    response = await http.post("/v1/lookup", json={"handles": [BOB]}, headers=auth(asker))  # type: ignore[arg-type]
    result: dict[str, object] = response.json()["results"][0]
    return result


async def test_the_phone_holding_the_sim_answers_and_a_moved_number_leaves(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    await register(http, BOB)
    await asyncio.sleep(6)  # at least one re-proof, answered by Bob's handset
    assert (await bob_result(http, alice))["on_parley"] is True
    inbox = (await http.get(f"/v1/sim/handsets/{BOB}/inbox")).json()["messages"]
    assert not any("Parley check" in m["text"] for m in inbox)  # silent: never shown
    assert (await http.post("/v1/sim/events", json={"kind": "move", "number": BOB})).status_code == 202
    result = {}
    for _ in range(40):
        await asyncio.sleep(0.25)
        result = await bob_result(http, alice)
        if not result["on_parley"]:
            break
    assert result["on_parley"] is False
    assert result["left"]["reason"] == "reproof-failed"  # type: ignore[index]
