"""Control sends name a subset of a message's targets (no I/O)."""

from __future__ import annotations

from parley.core import fanout


def test_control_sends_may_name_any_subset_of_the_targets_only() -> None:
    targets = fanout.expected_targets(["a1", "a2"], "a1", {"bob": ["b1", "b2"]})
    assert not fanout.diff_control_set(targets, ["b2"])
    assert not fanout.diff_control_set(targets, ["a2", "b1"])
    wrong = fanout.diff_control_set(targets, ["a1", "c1"])  # itself, and a stranger
    assert wrong.missing == [] and wrong.extra == ["a1", "c1"]
