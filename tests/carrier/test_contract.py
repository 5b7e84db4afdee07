"""One contract suite over every SMS gateway: the simulator, real Kannel (bearerbox,
smsbox, fakesmsc) and a real SMPP peer (node-smpp). Each gateway must carry a short
text, a long concatenated one and a UCS-2 one out to the handset, bring a handset's
text in, and report delivery under the reference its send returned."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from parley.carrier.base import CarrierEvent, CarrierSms, DeliveryReport, GatewayError, OutboundSms, SmsGateway
from parley.carrier.kannel import KannelGateway
from parley.carrier.simulator import CarrierSimulator
from parley.carrier.smpp import SmppGateway
from parley.core import sms_text
from tests.carrier.peers import CallbackReceiver, KannelPeer, PhoneSms, SmscPeer

ALICE = "+14155550100"
CAROL = "+14155550122"
_ids = itertools.count(1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RecordingSink:
    def __init__(self) -> None:
        self.received: list[CarrierSms] = []
        self.reports: list[DeliveryReport] = []
        self.events: list[CarrierEvent] = []

    async def inbound(self, sms: CarrierSms) -> bool:
        self.received.append(sms)
        return True

    async def report(self, report: DeliveryReport) -> None:
        self.reports.append(report)

    async def event(self, event: CarrierEvent) -> None:
        self.events.append(event)


@dataclass
class Harness:
    gateway: SmsGateway
    sink: RecordingSink
    phone_send: Callable[[str, str, str], object]
    received: Callable[[], list[PhoneSms]]


async def eventually(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time limit")


@pytest.fixture(params=["sim", "kannel", "smpp"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
async def smpp_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness("smpp", tmp_path) as opened:
        yield opened


@contextlib.asynccontextmanager
async def open_harness(kind: str, tmp_path: Path) -> AsyncIterator[Harness]:
    sink = RecordingSink()
    if kind == "sim":
        simulator = CarrierSimulator(now_ms, lambda: f"sim{next(_ids)}")
        await simulator.start(sink)

        def sim_received() -> list[PhoneSms]:
            return [PhoneSms(s.sender, s.to, s.text) for s in simulator.inbox(CAROL)]

        yield Harness(simulator, sink, simulator.handset_send, sim_received)
        await simulator.stop()
    elif kind == "kannel":
        receiver = CallbackReceiver("callback-secret")
        peer = KannelPeer(tmp_path / "kannel", f"http://127.0.0.1:{receiver.port}", receiver.secret)
        kannel = KannelGateway(
            peer.sendsms_url, peer.username, peer.password, peer.callback_url, receiver.secret, now_ms
        )
        await receiver.start(sink)
        try:
            await asyncio.to_thread(peer.start, kannel.service_config())
            await kannel.start(sink)
            yield Harness(kannel, sink, peer.phone_send, peer.received)
        finally:
            await kannel.stop()
            await asyncio.to_thread(peer.stop)
            await receiver.stop()
    else:
        smsc = SmscPeer(tmp_path / "smsc")
        await asyncio.to_thread(smsc.start)
        smpp = SmppGateway("127.0.0.1", smsc.port, smsc.system_id, smsc.password, now_ms, max_backoff_s=1)
        try:
            await smpp.start(sink)
            assert await smpp.wait_bound(10), "the ESME did not bind"
            harness = Harness(smpp, sink, smsc.phone_send, smsc.received)
            harness.smsc = smsc  # type: ignore[attr-defined]
            yield harness
        finally:
            await smpp.stop()
            await asyncio.to_thread(smsc.stop)


def outbound(text: str) -> OutboundSms:
    sms_id = f"s{next(_ids)}"
    return OutboundSms(sms_id, ALICE, CAROL, sms_text.encode(text, next(_ids) & 0xFF))


@pytest.mark.parametrize(
    "text",
    ["Hi Carol, it's Alice", "Long " + "and longer " * 40, "Привет, Кэрол! Как дела? 😀"],
    ids=["gsm7", "concatenated", "ucs2"],
)
async def test_outbound_reaches_the_handset_once_with_a_report(harness: Harness, text: str) -> None:
    sms = outbound(text)
    reference = await harness.gateway.send(sms)
    assert reference
    await eventually(lambda: any(r.text == text for r in harness.received()))
    assert [r for r in harness.received() if r.text == text] == [PhoneSms(ALICE, CAROL, text)]
    await eventually(lambda: any(r.sms_id == sms.sms_id or r.carrier_ref == reference for r in harness.sink.reports))
    report = next(r for r in harness.sink.reports if r.sms_id == sms.sms_id or r.carrier_ref == reference)
    assert report.delivered


@pytest.mark.parametrize("text", ["Hi Alice, Carol here", "Ça va? Ω"], ids=["gsm7", "non-ascii"])
async def test_inbound_reaches_the_sink(harness: Harness, text: str) -> None:
    result = harness.phone_send(CAROL, ALICE, text)
    if asyncio.iscoroutine(result):
        await result
    await eventually(lambda: any(s.text == text for s in harness.sink.received))
    sms = next(s for s in harness.sink.received if s.text == text)
    assert (sms.sender, sms.to) == (CAROL, ALICE) and sms.carrier_id


async def test_smpp_plays_failures(smpp_harness: Harness) -> None:
    """Only the SMPP peer can play these: rejected and throttled submits, failed
    receipts, dropped binds (the ESME binds again by itself)."""
    harness = smpp_harness
    assert isinstance(harness.gateway, SmppGateway)
    smsc: SmscPeer = harness.smsc  # type: ignore[attr-defined]
    smsc.command(cmd="reject", count=1)
    await asyncio.sleep(0.2)
    with pytest.raises(GatewayError) as rejected:
        await harness.gateway.send(outbound("rejected"))
    assert not rejected.value.temporary
    smsc.command(cmd="throttle", count=1)
    await asyncio.sleep(0.2)
    with pytest.raises(GatewayError) as throttled:
        await harness.gateway.send(outbound("throttled"))
    assert throttled.value.temporary
    smsc.command(cmd="fail_receipts", count=1)
    await asyncio.sleep(0.2)
    reference = await harness.gateway.send(outbound("undeliverable"))
    await eventually(lambda: any(r.carrier_ref == reference for r in harness.sink.reports))
    assert not next(r for r in harness.sink.reports if r.carrier_ref == reference).delivered
    smsc.command(cmd="drop")
    await eventually(lambda: not harness.gateway.bound)  # type: ignore[attr-defined]
    with pytest.raises(GatewayError) as unbound:
        await harness.gateway.send(outbound("while unbound"))
    assert unbound.value.temporary
    assert await harness.gateway.wait_bound(10)  # type: ignore[attr-defined]
    await harness.gateway.send(outbound("after the rebind"))
    await eventually(lambda: any(r.text == "after the rebind" for r in harness.received()))
