"""A connected device's push session: what it has been sent and what to send next.

Everything affecting what a connection pushes lives here. The WebSocket layer feeds it
three events and carries out the actions it returns:

    event                      from                         may return
    start()                    the connection is accepted    Fetch
    fetched(envelopes, more)   a Fetch came back from store  Push, Fetch
    live(envelopes)            the hub committed new ones    Push, Fetch
    acked(up_to)               the device acked              Fetch

States:

    CATCHING_UP --fetched(more=False), buffer intact--> LIVE
    CATCHING_UP --fetched(more=True) or buffer overflowed--> CATCHING_UP (Fetch again)
    LIVE --live() while the window is full--> CATCHING_UP (Fetch once acks make room)

The store is the truth: a mailbox holds every unacked envelope, so a live envelope that
cannot be pushed now is simply dropped from memory and fetched later. ``seq`` grows in
commit order within one device's mailbox, so "pushed up to seq N" is enough to push
every envelope once and in order. At most ``window`` envelopes are in flight (pushed,
not acked): a slow device costs the server a bounded amount of memory.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from parley.wire import Envelope

DEFAULT_WINDOW = 1024


class State(enum.Enum):
    CATCHING_UP = "catching_up"
    LIVE = "live"


@dataclass(frozen=True)
class Push:
    envelopes: list[Envelope]


@dataclass(frozen=True)
class Fetch:
    after_seq: int
    limit: int


Action = Push | Fetch


class AckBeyondPushed(Exception):
    """The device acked a seq it was never sent: a protocol error on its side."""


class PushSession:
    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self.state = State.CATCHING_UP
        self.pushed_up_to = 0
        self.acked_up_to = 0
        self._in_flight: deque[int] = deque()
        self._fetching = False
        self._buffer: list[Envelope] = []  # live envelopes that arrived during a fetch
        self._buffer_overflowed = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def start(self) -> list[Action]:
        return self._fetch_if_room()

    def fetched(self, envelopes: list[Envelope], more: bool) -> list[Action]:
        self._fetching = False
        actions: list[Action] = []
        self._push_new(envelopes, actions)
        buffered = [envelope for envelope in self._buffer if envelope.seq > self.pushed_up_to]
        self._buffer = []
        if more or self._buffer_overflowed or self.in_flight + len(buffered) > self.window:
            # More in the mailbox than fits now: drop the buffer (it is all in the store).
            self._buffer_overflowed = False
            actions.extend(self._fetch_if_room())
            return actions
        # The store had nothing more when it was read; what arrived live since is newer.
        self.state = State.LIVE
        self._push_new(buffered, actions)
        return actions

    def live(self, envelopes: list[Envelope]) -> list[Action]:
        if self.state is State.CATCHING_UP:
            if self._fetching:
                if len(self._buffer) + len(envelopes) > self.window:
                    self._buffer_overflowed = True
                else:
                    self._buffer.extend(envelopes)
            return []
        actions: list[Action] = []
        if self.in_flight + len(envelopes) > self.window:
            # Over the window: stop pushing live and read the mailbox once acks free room.
            self.state = State.CATCHING_UP
            return self._fetch_if_room()
        self._push_new(envelopes, actions)
        return actions

    def acked(self, up_to: int) -> list[Action]:
        if up_to > self.pushed_up_to:
            raise AckBeyondPushed(f"ack up to {up_to} but only {self.pushed_up_to} was sent")
        if up_to <= self.acked_up_to:
            return []  # a repeated or old ack changes nothing
        self.acked_up_to = up_to
        while self._in_flight and self._in_flight[0] <= up_to:
            self._in_flight.popleft()
        if self.state is State.CATCHING_UP:
            return self._fetch_if_room()
        return []

    def _push_new(self, envelopes: list[Envelope], actions: list[Action]) -> None:
        fresh = [envelope for envelope in envelopes if envelope.seq > self.pushed_up_to]
        if not fresh:
            return
        self.pushed_up_to = fresh[-1].seq
        self._in_flight.extend(envelope.seq for envelope in fresh)
        actions.append(Push(fresh))

    def _fetch_if_room(self) -> list[Action]:
        room = self.window - self.in_flight
        # Wait for half the window to free up, so a slow device gets pages, not trickles.
        if self._fetching or room < max(1, self.window // 2):
            return []
        self._fetching = True
        return [Fetch(after_seq=self.pushed_up_to, limit=room)]
