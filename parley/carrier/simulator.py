"""The built-in carrier simulator: the embedded default carrier.

It plays a phone network on one machine: every number has a handset that holds its SIM
and keeps what reached it by SMS. It carries the server's verification codes, so a
device registering against a simulator reads its own code the way a phone reads its own
SMS. Its handsets are reachable over HTTP only when the server runs with the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from parley.carrier.base import Sms

# A handset keeps its latest messages, like a phone with a full inbox dropping old ones.
HANDSET_KEEPS = 500


@dataclass
class Handset:
    number: str
    received: list[Sms] = field(default_factory=list)


class CarrierSimulator:
    name = "sim"

    def __init__(self, clock: Callable[[], int], make_id: Callable[[], str]) -> None:
        self._clock = clock
        self._make_id = make_id
        self._handsets: dict[str, Handset] = {}

    def handset(self, number: str) -> Handset:
        return self._handsets.setdefault(number, Handset(number))

    async def send_sms(self, sender: str, to: str, text: str) -> str:
        sms = Sms(self._make_id(), sender, to, text, self._clock())
        received = self.handset(to).received
        received.append(sms)
        del received[:-HANDSET_KEEPS]
        return sms.sms_id

    def inbox(self, number: str) -> list[Sms]:
        handset = self._handsets.get(number)
        return list(handset.received) if handset else []
