"""A connected device's push session: what it has been sent and what to send next.

Everything affecting what a connection pushes lives here. The WebSocket layer feeds it
three events and carries out the actions it returns:

    event                      from                         may return
    start()                    the connection is accepted    Fetch
    fetched(envelopes, more)   a Fetch came back from store  Push, Fetch
    live(envelopes)            the hub committed new ones    Push, Fetch
    poke()                     the store may hold new ones   Fetch
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

With several server nodes, live envelopes for one mailbox come from several writers (this
node's hub, and other nodes over the broker) and may arrive out of seq order or not at
all. Pushing seq 7 before 6 arrived would let the device ack 7 and so delete 6 unseen.
So a session made with ``contiguous=True`` (for stores whose seqs have no gaps within a
mailbox, as the PostgreSQL store's) pushes a live envelope only if it is exactly the next
seq; at a gap it reads the mailbox instead, which holds every committed envelope in order.
What comes from the mailbox itself is pushed as it is: gaps there are envelopes that
expired. ``poke()`` says "the mailbox may hold more than you were told" (a broker
message too large to carry envelopes, or a broker reconnect that may have lost some).
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
    def __init__(self, window: int = DEFAULT_WINDOW, contiguous: bool = False) -> None:
        self.window = window
        self.contiguous = contiguous
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
        self._push_new(envelopes, actions, from_store=True)
        buffered = [envelope for envelope in self._buffer if envelope.seq > self.pushed_up_to]
        self._buffer = []
        if more or self._buffer_overflowed or self.in_flight + len(buffered) > self.window:
            # More in the mailbox than fits now: drop the buffer (it is all in the store).
            self._buffer_overflowed = False
            actions.extend(self._fetch_if_room())
            return actions
        # The store had nothing more when it was read; what arrived live since is newer.
        self.state = State.LIVE
        if not self._push_new(buffered, actions):
            self.state = State.CATCHING_UP
            actions.extend(self._fetch_if_room())
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
        if not self._push_new(envelopes, actions):
            # A gap: an envelope committed before these has not arrived; read the mailbox.
            self.state = State.CATCHING_UP
            actions.extend(self._fetch_if_room())
        return actions

    def poke(self) -> list[Action]:
        if self.state is State.LIVE:
            self.state = State.CATCHING_UP
            return self._fetch_if_room()
        if self._fetching:
            self._buffer_overflowed = True  # read again once this read is back
        return []

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

    def _push_new(self, envelopes: list[Envelope], actions: list[Action], from_store: bool = False) -> bool:
        """Push what is newer than what was pushed; False if a gap stopped it."""
        fresh = [envelope for envelope in envelopes if envelope.seq > self.pushed_up_to]
        complete = True
        if self.contiguous and not from_store:
            fresh = sorted({envelope.seq: envelope for envelope in fresh}.values(), key=lambda e: e.seq)
            run = 0
            while run < len(fresh) and fresh[run].seq == self.pushed_up_to + run + 1:
                run += 1
            complete = run == len(fresh)
            fresh = fresh[:run]
        if not fresh:
            return complete
        self.pushed_up_to = fresh[-1].seq
        self._in_flight.extend(envelope.seq for envelope in fresh)
        actions.append(Push(fresh))
        return complete

    def _fetch_if_room(self) -> list[Action]:
        room = self.window - self.in_flight
        # Wait for half the window to free up, so a slow device gets pages, not trickles.
        if self._fetching or room < max(1, self.window // 2):
            return []
        self._fetching = True
        return [Fetch(after_seq=self.pushed_up_to, limit=room)]
