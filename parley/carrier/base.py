"""The gateway interface every SMS carrier adapter implements, and what crosses it.

    server ──send(OutboundSms)──▶ gateway ──▶ carrier        (returns a carrier ref)
    server ◀──sink.inbound(CarrierSms)── gateway ◀── carrier (an SMS to one of our numbers)
    server ◀──sink.report(DeliveryReport)── gateway          (delivered / failed)
    server ◀──sink.event(CarrierEvent)── gateway             (ported out, SIM changed, ...)

Implementations: :mod:`parley.carrier.simulator` (built in, the default),
:mod:`parley.carrier.kannel` (Kannel's smsbox HTTP interface) and
:mod:`parley.carrier.smpp` (SMPP v3.4, ESME side). One contract suite,
``tests/carrier/test_contract.py``, runs over all three.

Text encoding and the split into concatenated parts happen once, before a gateway sees
the SMS (:mod:`parley.core.sms_text`): a gateway sends the parts it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from parley.core.sms_text import EncodedSms

# What issue 4's carrier events will carry; the interface has the slot now.
EventKind = Literal["port-out", "sim-change", "recycle", "move"]


@dataclass(frozen=True)
class OutboundSms:
    sms_id: str  # Parley's own id: gateways that can carry it (Kannel's dlr-url) do
    sender: str  # E.164, or an alphanumeric sender id ("Parley" for codes)
    to: str  # E.164
    encoded: EncodedSms
    want_report: bool = True


@dataclass(frozen=True)
class CarrierSms:
    """An SMS the carrier delivered to one of the server's numbers (mobile-originated)."""

    carrier_id: str  # unique per SMS at this carrier: redeliveries repeat it
    sender: str  # E.164
    to: str  # E.164
    text: str
    received_at_ms: int


@dataclass(frozen=True)
class DeliveryReport:
    delivered: bool
    sms_id: str = ""  # Parley's id, when the gateway carried it
    carrier_ref: str = ""  # else the carrier's reference returned by ``send``
    detail: str = ""


@dataclass(frozen=True)
class CarrierEvent:
    kind: EventKind
    number: str
    at_ms: int


class GatewayError(Exception):
    """``send`` could not hand the SMS over. ``temporary``: try again later."""

    def __init__(self, message: str, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class CarrierSink(Protocol):
    """What a gateway calls when the carrier speaks (the server's SMS service)."""

    async def inbound(self, sms: CarrierSms) -> bool:
        """Deliver an SMS; False if no Parley account owns ``sms.to``."""
        ...

    async def report(self, report: DeliveryReport) -> None: ...

    async def event(self, event: CarrierEvent) -> None: ...


class SmsGateway(Protocol):
    name: str

    async def start(self, sink: CarrierSink) -> None:
        """Connect (or get ready to be called back); reports and inbound go to ``sink``."""
        ...

    async def stop(self) -> None: ...

    async def send(self, sms: OutboundSms) -> str:
        """Hand one SMS (all its parts) to the carrier; return the carrier's reference for
        it (the one its delivery report will name). Raise :class:`GatewayError`."""
        ...
