"""Control sends name a subset of a message's targets (no I/O)."""

from __future__ import annotations

from parley.core import fanout


def test_control_sends_may_name_any_subset_of_the_targets_only() -> None:
    targets = fanout.expected_targets(["a1", "a2"], "a1", {"bob": ["b1", "b2"]})
    assert fanout.outside(targets, ["b2"]) == []
    assert fanout.outside(targets, ["a2", "b1"]) == []
    assert fanout.outside(targets, ["a1", "c1"]) == ["a1", "c1"]  # itself, and a stranger
