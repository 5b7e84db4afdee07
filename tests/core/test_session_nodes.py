"""The push session with several writers (server nodes): live envelopes may arrive out
of order or not at all, and the session must never push past a gap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parley.core.session import Fetch, Push, PushSession, State
from parley.wire import Envelope


def env(seq: int) -> Envelope:
    return Envelope(seq, f"m{seq}", "message", "a", "d", "tel:+1", 0, b"")


def pushed(actions: list[Push | Fetch]) -> list[int]:
    return [e.seq for a in actions if isinstance(a, Push) for e in a.envelopes]


def fetches(actions: list[Push | Fetch]) -> list[Fetch]:
    return [a for a in actions if isinstance(a, Fetch)]


def live_session(up_to: int) -> PushSession:
    session = PushSession(window=64, contiguous=True)
    session.start()
    session.fetched([env(s) for s in range(1, up_to + 1)], more=False)
    assert session.state is State.LIVE
    return session


def test_the_next_seq_is_pushed_at_once() -> None:
    session = live_session(3)
    assert pushed(session.live([env(4), env(5)])) == [4, 5]


def test_a_gap_reads_the_mailbox_instead_of_pushing_past_it() -> None:
    session = live_session(3)
    actions = session.live([env(5)])
    assert pushed(actions) == [] and fetches(actions) == [Fetch(after_seq=3, limit=61)]
    assert session.state is State.CATCHING_UP
    # The late one arrives during the read: it is buffered, then the read covers both.
    assert session.live([env(4)]) == []
    actions = session.fetched([env(4), env(5)], more=False)
    assert pushed(actions) == [4, 5] and session.state is State.LIVE


def test_a_gap_in_what_arrived_during_a_read_reads_again() -> None:
    session = live_session(3)
    session.poke()
    session.live([env(6)])
    actions = session.fetched([env(4)], more=False)
    assert pushed(actions) == [4]
    assert fetches(actions) == [Fetch(after_seq=4, limit=60)]


def test_gaps_in_the_mailbox_itself_are_expired_envelopes_and_are_pushed() -> None:
    session = PushSession(window=64, contiguous=True)
    session.start()
    assert pushed(session.fetched([env(2), env(9)], more=False)) == [2, 9]
    assert pushed(session.live([env(10)])) == [10]


def test_poke_reads_the_mailbox_when_live_and_reads_again_when_reading() -> None:
    session = live_session(2)
    assert fetches(session.poke()) == [Fetch(after_seq=2, limit=62)]
    assert session.poke() == []
    actions = session.fetched([], more=False)
    assert fetches(actions) == [Fetch(after_seq=2, limit=62)]


def test_single_writer_sessions_still_push_whatever_is_newer() -> None:
    session = PushSession(window=64)
    session.start()
    session.fetched([env(1)], more=False)
    assert pushed(session.live([env(7)])) == [7]


@given(st.permutations(list(range(1, 31))), st.sets(st.integers(1, 30)))
def test_whatever_the_arrival_order_and_losses_every_envelope_is_pushed_once_in_order(
    order: list[int], lost: set[int]
) -> None:
    """Envelopes 1..30 are committed; the broker delivers them in any order and loses
    some. Each time the session asks, it reads the mailbox (everything committed)."""
    session = PushSession(window=1000, contiguous=True)
    out: list[int] = []
    pending = session.start()
    committed = 0
    arrivals = [s for s in order if s not in lost]
    while pending or arrivals:
        while pending:
            action = pending.pop(0)
            if isinstance(action, Push):
                out += [e.seq for e in action.envelopes]
            else:
                page = [env(s) for s in range(action.after_seq + 1, committed + 1)]
                pending += session.fetched(page, more=False)
        if arrivals:
            committed = max(committed, arrivals[0])
            pending += session.live([env(arrivals.pop(0))])
    pending = session.poke()  # e.g. the broker reconnected
    committed = 30
    while pending:
        action = pending.pop(0)
        if isinstance(action, Push):
            out += [e.seq for e in action.envelopes]
        else:
            pending += session.fetched([env(s) for s in range(action.after_seq + 1, 31)], more=False)
    assert out == list(range(1, 31))
