"""PushSession: every envelope pushed once, in order, within the window."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.core.session import AckBeyondPushed, Action, Fetch, Push, PushSession, State
from parley.wire import Envelope


def env(seq: int) -> Envelope:
    return Envelope(
        seq=seq,
        message_id=f"m{seq}",
        kind="message",
        sender_account="alice",
        sender_device="alice-phone",
        sender_handle="tel:+14155550100",
        sent_at_ms=0,
        body=b"",
    )


def envs(*seqs: int) -> list[Envelope]:
    return [env(seq) for seq in seqs]


def pushed(actions: list[Action]) -> list[int]:
    return [envelope.seq for action in actions if isinstance(action, Push) for envelope in action.envelopes]


def fetches(actions: list[Action]) -> list[Fetch]:
    return [action for action in actions if isinstance(action, Fetch)]


def live_session(window: int, *seqs: int) -> PushSession:
    """A session that has caught up, with ``seqs`` pushed and unacked."""
    session = PushSession(window)
    session.start()
    session.fetched(envs(*seqs), more=False)
    assert session.state is State.LIVE
    return session


# --- catching up ------------------------------------------------------------------------


def test_start_fetches_from_the_beginning_with_the_whole_window() -> None:
    session = PushSession(window=8)
    assert session.start() == [Fetch(after_seq=0, limit=8)]
    assert session.state is State.CATCHING_UP


def test_last_page_is_pushed_and_the_session_goes_live() -> None:
    session = PushSession(window=8)
    session.start()
    assert session.fetched(envs(1, 2, 3), more=False) == [Push(envs(1, 2, 3))]
    assert session.state is State.LIVE
    assert session.pushed_up_to == 3
    assert session.in_flight == 3


def test_empty_mailbox_goes_live_without_pushing() -> None:
    session = PushSession(window=8)
    session.start()
    assert session.fetched([], more=False) == []
    assert session.state is State.LIVE


def test_page_with_more_is_pushed_and_fetches_again_after_it() -> None:
    session = PushSession(window=8)
    session.start()
    actions = session.fetched(envs(1, 2, 3), more=True)
    assert actions == [Push(envs(1, 2, 3)), Fetch(after_seq=3, limit=5)]
    assert session.state is State.CATCHING_UP


def test_page_that_fills_the_window_waits_for_acks_before_fetching_more() -> None:
    session = PushSession(window=4)
    session.start()
    assert session.fetched(envs(1, 2, 3, 4), more=True) == [Push(envs(1, 2, 3, 4))]
    assert session.acked(1) == []  # room for 1 is less than half the window
    assert session.acked(2) == [Fetch(after_seq=4, limit=2)]


def test_no_second_fetch_while_one_is_outstanding() -> None:
    session = PushSession(window=4)
    session.start()
    session.fetched(envs(1, 2, 3, 4), more=True)
    assert fetches(session.acked(2)) == [Fetch(after_seq=4, limit=2)]
    assert session.acked(4) == []


# --- live envelopes while catching up ------------------------------------------------------


def test_live_envelopes_during_a_fetch_are_buffered_and_pushed_after_the_page() -> None:
    session = PushSession(window=8)
    session.start()
    assert session.live(envs(4, 5)) == []
    assert session.fetched(envs(1, 2, 3), more=False) == [Push(envs(1, 2, 3)), Push(envs(4, 5))]
    assert session.state is State.LIVE


def test_buffered_envelopes_already_in_the_page_are_not_pushed_twice() -> None:
    session = PushSession(window=8)
    session.start()
    session.live(envs(3))
    session.live(envs(4))
    assert pushed(session.fetched(envs(1, 2, 3), more=False)) == [1, 2, 3, 4]


def test_buffer_is_dropped_when_more_remains_and_the_next_page_brings_it() -> None:
    session = PushSession(window=16)
    session.start()
    session.live(envs(9))
    actions = session.fetched(envs(1, 2, 3, 4), more=True)
    assert pushed(actions) == [1, 2, 3, 4]
    assert fetches(actions) == [Fetch(after_seq=4, limit=12)]
    assert pushed(session.fetched(envs(5, 6, 7, 8, 9), more=False)) == [5, 6, 7, 8, 9]
    assert session.state is State.LIVE


def test_buffer_overflow_fetches_again_instead_of_going_live() -> None:
    session = PushSession(window=4)
    session.start()
    session.live(envs(1, 2, 3))
    session.live(envs(4, 5))  # the buffer would exceed the window
    actions = session.fetched(envs(1, 2), more=False)
    assert actions == [Push(envs(1, 2)), Fetch(after_seq=2, limit=2)]
    assert session.state is State.CATCHING_UP


def test_live_envelopes_are_dropped_while_waiting_for_acks() -> None:
    session = PushSession(window=4)
    session.start()
    session.fetched(envs(1, 2, 3, 4), more=True)  # no room to fetch: waiting for acks
    assert session.live(envs(5)) == []
    assert session.acked(4) == [Fetch(after_seq=4, limit=4)]
    assert pushed(session.fetched(envs(5), more=False)) == [5]


# --- live -------------------------------------------------------------------------------


def test_live_envelopes_are_pushed_at_once() -> None:
    session = live_session(8, 1, 2)
    assert session.live(envs(3, 4)) == [Push(envs(3, 4))]
    assert session.pushed_up_to == 4
    assert session.in_flight == 4


def test_live_envelopes_already_pushed_are_skipped() -> None:
    session = live_session(8, 1, 2, 3)
    assert session.live(envs(3, 4)) == [Push(envs(4))]
    assert session.live(envs(2)) == []


def test_full_window_switches_to_catching_up_and_drops_live_envelopes() -> None:
    session = live_session(4, 1, 2, 3, 4)
    assert session.live(envs(5)) == []
    assert session.state is State.CATCHING_UP
    assert session.live(envs(6)) == []
    assert session.pushed_up_to == 4


def test_acks_that_free_half_the_window_fetch_what_was_dropped() -> None:
    session = live_session(4, 1, 2, 3, 4)
    session.live(envs(5))
    session.live(envs(6))
    assert session.acked(1) == []
    assert session.acked(2) == [Fetch(after_seq=4, limit=2)]
    assert session.fetched(envs(5, 6), more=False) == [Push(envs(5, 6))]
    assert session.state is State.LIVE


def test_overflowing_batch_fetches_at_once_when_half_the_window_is_free() -> None:
    session = live_session(4, 1)
    assert session.live(envs(2, 3, 4, 5)) == [Fetch(after_seq=1, limit=3)]
    assert session.state is State.CATCHING_UP


# --- acks -------------------------------------------------------------------------------


def test_ack_beyond_what_was_pushed_raises() -> None:
    session = live_session(8, 1, 2, 3)
    with pytest.raises(AckBeyondPushed):
        session.acked(4)


def test_ack_before_anything_was_pushed_raises() -> None:
    session = PushSession(window=8)
    session.start()
    with pytest.raises(AckBeyondPushed):
        session.acked(1)


def test_repeated_and_older_acks_are_no_ops() -> None:
    session = live_session(8, 1, 2, 3)
    assert session.acked(2) == []
    assert session.in_flight == 1
    assert session.acked(2) == []
    assert session.acked(1) == []
    assert session.acked(0) == []
    assert session.acked_up_to == 2
    assert session.in_flight == 1


def test_ack_between_seqs_releases_everything_below_it() -> None:
    session = live_session(8, 10, 20, 30)
    session.acked(25)
    assert session.in_flight == 1
    assert session.acked_up_to == 25


# --- whole runs -------------------------------------------------------------------------


def test_scripted_run_pushes_every_envelope_once_and_in_order() -> None:
    session = PushSession(window=4)
    log: list[int] = []
    log += pushed(session.start())
    log += pushed(session.live(envs(5)))  # buffered during the first fetch
    log += pushed(session.fetched(envs(1, 2, 3, 4), more=True))  # buffer dropped, window full
    log += pushed(session.live(envs(6)))  # dropped: waiting for acks
    log += pushed(session.acked(3))  # fetch after 4
    log += pushed(session.live(envs(7)))  # buffered
    log += pushed(session.fetched(envs(5, 6, 7), more=False))  # goes live
    log += pushed(session.acked(7))
    log += pushed(session.live(envs(7, 8)))  # 7 is old news
    log += pushed(session.live(envs(9, 10, 11, 12)))  # window full: fetch after 8
    log += pushed(session.fetched(envs(9, 10, 11), more=True))  # window full again
    log += pushed(session.acked(11))  # fetch after 11
    log += pushed(session.live(envs(13)))  # buffered
    log += pushed(session.fetched(envs(12), more=False))  # goes live
    log += pushed(session.live(envs(13)))  # old news
    assert log == list(range(1, 14))
    assert session.state is State.LIVE


def test_buffered_envelopes_never_push_past_the_window() -> None:
    session = PushSession(window=4)
    session.start()
    session.live(envs(5, 6, 7, 8))  # fits the buffer, which is bounded by the window alone
    session.fetched(envs(1, 2, 3, 4), more=False)
    assert session.in_flight <= session.window


# --- property: any interleaving of commits, live pushes, fetches and acks ----------------


class Harness:
    """A PushSession against a model mailbox, with the store and the hub as slow as they like.

    A commit adds envelopes to the mailbox; its live() call comes later (in commit order).
    A Fetch is read from the mailbox at some moment after it is issued and completes later.
    """

    def __init__(self, window: int) -> None:
        self.session = PushSession(window)
        self.committed: list[int] = []
        self.next_seq = 1
        self.undelivered: deque[list[int]] = deque()
        self.fetch: Fetch | None = None
        self.page: tuple[list[int], bool] | None = None  # what the store read for self.fetch
        self.pushed: list[int] = []
        self.apply(self.session.start())

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Push):
                for envelope in action.envelopes:
                    assert not self.pushed or envelope.seq > self.pushed[-1], "pushed out of order or twice"
                    self.pushed.append(envelope.seq)
            else:
                assert self.fetch is None, "a second fetch while one is outstanding"
                assert action.after_seq == self.session.pushed_up_to
                assert action.limit >= 1
                self.fetch, self.page = action, None

    def commit(self, size: int, gap: int) -> None:
        self.next_seq += gap  # seqs are shared by all mailboxes, so one device's have gaps
        seqs = list(range(self.next_seq, self.next_seq + size))
        self.next_seq += size
        self.committed += seqs
        self.undelivered.append(seqs)

    def deliver(self) -> None:
        if self.undelivered:
            self.apply(self.session.live(envs(*self.undelivered.popleft())))

    def read(self) -> None:
        if self.fetch is not None and self.page is None:
            rest = [seq for seq in self.committed if seq > self.fetch.after_seq]
            self.page = (rest[: self.fetch.limit], len(rest) > self.fetch.limit)

    def complete(self) -> None:
        if self.fetch is None:
            return
        self.read()
        assert self.page is not None
        seqs, more = self.page
        self.fetch = self.page = None
        self.apply(self.session.fetched(envs(*seqs), more))

    def ack(self, pick: int) -> None:
        if self.pushed:
            self.apply(self.session.acked(self.pushed[pick % len(self.pushed)]))

    def drain(self) -> None:
        while self.undelivered:
            self.deliver()
        for _ in range(10_000):
            if self.fetch is not None:
                self.complete()
            elif self.session.pushed_up_to > self.session.acked_up_to:
                self.apply(self.session.acked(self.session.pushed_up_to))
            else:
                return
        raise AssertionError("the session never settled")


operations = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.integers(1, 6), st.integers(0, 2)),
        st.tuples(st.just("deliver"), st.just(0), st.just(0)),
        st.tuples(st.just("read"), st.just(0), st.just(0)),
        st.tuples(st.just("complete"), st.just(0), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 10_000), st.just(0)),
    ),
    max_size=150,
)


@settings(max_examples=400, deadline=None)
@given(window=st.integers(1, 10), ops=operations)
def test_any_interleaving_pushes_every_committed_envelope_once_and_in_order(
    window: int, ops: list[tuple[str, int, int]]
) -> None:
    harness = Harness(window)
    for name, a, b in ops:
        if name == "commit":
            harness.commit(a, b)
        elif name == "deliver":
            harness.deliver()
        elif name == "read":
            harness.read()
        elif name == "complete":
            harness.complete()
        else:
            harness.ack(a)
    harness.drain()
    assert harness.pushed == harness.committed
