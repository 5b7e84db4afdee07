"""The built-in carrier simulator: the embedded default carrier.

It plays a phone network on one machine: every number has a handset that holds its SIM
and keeps what reached it by SMS, whether or not that number also runs Parley. It
carries the server's verification codes, so a device registering against a simulator
reads its own code the way a phone reads its own SMS. A handset's texts go to the
handset of the number they are addressed to and, like a carrier routing an SMS to an
operator's gateway, to the server (which delivers it if a Parley account owns the number).
Its handsets are reachable over HTTP only when the server runs with the simulator.

For tests it can also play an outage (``outage = True``: every send fails, temporarily)
and a carrier that rejects what it is given (``reject = True``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parley.carrier.base import (
    CarrierEvent,
    CarrierSink,
    CarrierSms,
    DeliveryReport,
    EventKind,
    GatewayError,
    OutboundSms,
)

REPROOF_PREFIX = "Parley check "  # as parley.core.leaving.REPROOF_PREFIX: a silent code

# A handset keeps its latest messages, like a phone with a full inbox dropping old ones.
HANDSET_KEEPS = 500

__all__ = ["HANDSET_KEEPS", "CarrierSimulator", "Handset", "Sms"]


@dataclass(frozen=True)
class Sms:
    """One SMS as a handset sees it. ``sender``/``to`` are E.164 numbers (or a sender id)."""

    sms_id: str
    sender: str
    to: str
    text: str
    at_ms: int


@dataclass
class Handset:
    number: str
    received: list[Sms] = field(default_factory=list)
    runs_parley: bool = True  # False for the fresh SMS-only phone a number moved to


class CarrierSimulator:
    name = "sim"

    def __init__(self, clock: Callable[[], int], make_id: Callable[[], str]) -> None:
        self._clock = clock
        self._make_id = make_id
        self._handsets: dict[str, Handset] = {}
        self._sink: CarrierSink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.outage = False
        self.reject = False

    # --- the gateway interface ---

    async def start(self, sink: CarrierSink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._sink = None

    async def send(self, sms: OutboundSms) -> str:
        if self.outage:
            raise GatewayError("the simulated carrier is down", temporary=True)
        if self.reject:
            raise GatewayError("the simulated carrier rejected the SMS", temporary=False)
        text = "".join(part.text for part in sms.encoded.parts)
        if text.startswith(REPROOF_PREFIX):
            # A silent re-proof code: not shown to the person. A handset that runs Parley
            # answers it by SMS to the sender; an SMS-only one ignores it.
            if self.handset(sms.to).runs_parley:
                self._later_inbound(CarrierSms(self._make_id(), sms.to, sms.sender, text, self._clock()))
            return self._make_id()
        delivered = self._deliver(sms.sender, sms.to, text)
        if sms.want_report:
            self._later(DeliveryReport(delivered=True, sms_id=sms.sms_id, carrier_ref=delivered.sms_id))
        return delivered.sms_id

    # --- what handsets do ---

    def handset(self, number: str) -> Handset:
        return self._handsets.setdefault(number, Handset(number))

    def inbox(self, number: str) -> list[Sms]:
        handset = self._handsets.get(number)
        return list(handset.received) if handset else []

    async def handset_send(self, sender: str, to: str, text: str) -> Sms:
        """The handset of ``sender`` texts ``to``: it reaches that handset and the server."""
        sms = self._deliver(sender, to, text)
        if self._sink is not None:
            await self._sink.inbound(CarrierSms(sms.sms_id, sender, to, text, sms.at_ms))
        return sms

    async def carrier_event(self, kind: EventKind, number: str) -> None:
        """A carrier event for ``number`` (issue 4 drives these from the command line)."""
        if kind == "move":
            self._handsets[number] = Handset(number, runs_parley=False)  # the SIM goes into a fresh SMS-only phone
        if self._sink is not None:
            await self._sink.event(CarrierEvent(kind, number, self._clock()))

    # --- internals ---

    def _deliver(self, sender: str, to: str, text: str) -> Sms:
        sms = Sms(self._make_id(), sender, to, text, self._clock())
        received = self.handset(to).received
        received.append(sms)
        del received[:-HANDSET_KEEPS]
        return sms

    def _later_inbound(self, sms: CarrierSms) -> None:
        sink = self._sink
        if sink is None:
            return
        task = asyncio.ensure_future(sink.inbound(sms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, report: DeliveryReport) -> None:
        sink = self._sink
        if sink is None:
            return
        task = asyncio.ensure_future(sink.report(report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
