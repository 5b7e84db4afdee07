"""Bad key uploads and claims against a real server: a clear 4xx, nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import vodozemac

from parley.core import keys
from parley.wire import MAX_KEYS_HELD
from tests.conftest import ServerProcess, registration_keys
from tests.server.test_bad_input import ALICE, BOB, auth, error_code, read_code, register

pytestmark = pytest.mark.slow


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def request_code(http: httpx.AsyncClient, phone: str) -> str:
    info = (await http.get("/v1/info")).json()
    assert (await http.post("/v1/codes", json={"handle": phone})).status_code == 202
    return await read_code(http, phone, info["server_time_ms"])


async def try_register(
    http: httpx.AsyncClient, phone: str, key_fields: dict[str, Any], code: str | None = None
) -> httpx.Response:
    code = code or await request_code(http, phone)
    return await http.post("/v1/devices", json={"handle": phone, "code": code, "device_name": "x", **key_fields})


async def test_registration_with_bad_keys_stores_nothing(http: httpx.AsyncClient) -> None:
    good = registration_keys()
    other = registration_keys()
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "identity_key": good["identity_key"][:40]}, "bad_request"),  # wrong size
        ({**good, "signature": other["signature"]}, "bad_keys"),  # signed by another device
        ({**good, "signing_key": other["signing_key"]}, "bad_keys"),
        ({**good, "one_time_keys": other["one_time_keys"]}, "bad_keys"),  # another device's keys
        ({**good, "fallback_key": {**good["fallback_key"], "key": other["fallback_key"]["key"]}}, "bad_keys"),
        ({**good, "one_time_keys": good["one_time_keys"] * 21}, "bad_request"),  # over 100 in one upload
        ({k: v for k, v in good.items() if k != "signature"}, "bad_request"),
    ]
    # Keys are checked before the code: each refusal leaves the code (and the store) as it was.
    code = await request_code(http, ALICE)
    for fields, expected in cases:
        response = await try_register(http, ALICE, fields, code)
        assert (response.status_code, error_code(response)) == (400, expected), fields
    bob = await register(http, BOB)
    lookup = await http.post("/v1/lookup", json={"handles": [ALICE]}, headers=auth(bob))
    assert lookup.json()["results"][0]["on_parley"] is False
    assert (await try_register(http, ALICE, good, code)).status_code == 201


async def test_key_uploads_are_checked_and_bounded(http: httpx.AsyncClient) -> None:
    account = vodozemac.Account()
    body = {"handle": ALICE, **registration_keys(one_time=5, account=account)}
    response = await try_register(http, ALICE, {k: v for k, v in body.items() if k != "handle"})
    device = response.json()
    headers = {"authorization": f"Bearer {device['credential']}"}
    assert (await http.get("/v1/keys", headers=headers)).json() == {"one_time_keys": 5, "fallback_key": True}

    def signed(n: int, signer: vodozemac.Account = account) -> dict[str, str]:
        public = vodozemac.Curve25519SecretKey().public_key().to_base64()
        key_id = f"extra{n}"
        signature = signer.sign(keys.prekey_message(keys.ONE_TIME, key_id, public)).to_base64()
        return {"key_id": key_id, "key": public, "signature": signature}

    forged = await http.post("/v1/keys", json={"one_time_keys": [signed(1, vodozemac.Account())]}, headers=headers)
    assert (forged.status_code, error_code(forged)) == (400, "bad_keys")
    wrong_purpose = signed(2)
    wrong_purpose["key_id"] = "renamed"  # the signature covers the id too
    renamed = await http.post("/v1/keys", json={"one_time_keys": [wrong_purpose]}, headers=headers)
    assert (renamed.status_code, error_code(renamed)) == (400, "bad_keys")
    short = await http.post("/v1/keys", json={"one_time_keys": [{**signed(3), "key": "AAAA"}]}, headers=headers)
    assert (short.status_code, error_code(short)) == (400, "bad_request")
    batch = [signed(n) for n in range(100)]
    too_many = await http.post("/v1/keys", json={"one_time_keys": batch}, headers=headers)
    assert (too_many.status_code, error_code(too_many)) == (400, "too_many_keys")
    assert (await http.get("/v1/keys", headers=headers)).json()["one_time_keys"] == 5  # nothing stored
    fits = await http.post("/v1/keys", json={"one_time_keys": batch[: MAX_KEYS_HELD - 5]}, headers=headers)
    assert fits.json() == {"one_time_keys": MAX_KEYS_HELD, "fallback_key": True}


async def test_claims_for_unknown_devices_claim_nothing(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)
    before = (await http.get("/v1/keys", headers=auth(bob))).json()["one_time_keys"]
    unknown = await http.post("/v1/keys/claim", json={"device_ids": [bob.device_id, "dNope"]}, headers=auth(alice))
    assert (unknown.status_code, error_code(unknown)) == (404, "not_found")
    twice = await http.post("/v1/keys/claim", json={"device_ids": [bob.device_id] * 2}, headers=auth(alice))
    assert (twice.status_code, error_code(twice)) == (400, "bad_request")
    assert (await http.get("/v1/keys", headers=auth(bob))).json()["one_time_keys"] == before
    claimed = await http.post("/v1/keys/claim", json={"device_ids": [bob.device_id]}, headers=auth(alice))
    assert claimed.json()["keys"][0]["device_id"] == bob.device_id
    assert (await http.get("/v1/keys", headers=auth(bob))).json()["one_time_keys"] == before - 1


async def test_control_sends_reach_only_devices_of_the_recipients(http: httpx.AsyncClient) -> None:
    alice = await register(http, ALICE)
    bob = await register(http, BOB)
    carol = await register(http, "+14155550122")

    async def control(envelopes: list[str], to: str = BOB, message_id: str = "c1") -> httpx.Response:
        body = {
            "message_id": message_id,
            "recipients": [to],
            "kind": "control",
            "envelopes": [{"device_id": d, "body": "eA=="} for d in envelopes],
        }
        return await http.post("/v1/messages", json=body, headers=auth(alice))

    outside = await control([carol.device_id])
    assert (outside.status_code, error_code(outside)) == (409, "stale_devices")
    assert outside.json()["error"]["extra"] == [carol.device_id]
    empty = await control([])
    assert (empty.status_code, error_code(empty)) == (400, "bad_request")
    assert (await control([bob.device_id], message_id="c2")).status_code == 200
    fetched = (await http.get("/v1/messages", headers=auth(bob))).json()["envelopes"]
    assert [(e["message_id"], e["kind"]) for e in fetched] == [("c2", "control")]
    assert (await http.get("/v1/messages", headers=auth(carol))).json()["envelopes"] == []
    # Acking a control envelope makes no "delivered" receipt for the sender.
    await http.post("/v1/messages/ack", json={"up_to": fetched[-1]["seq"]}, headers=auth(bob))
    assert (await http.get("/v1/messages", headers=auth(alice))).json()["envelopes"] == []
