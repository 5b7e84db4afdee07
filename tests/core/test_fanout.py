"""Fan-out: which devices a send must name, and how a stale set is reported."""

from __future__ import annotations

from parley.core.fanout import DeviceSetDiff, diff_device_set, duplicates, expected_targets


def test_targets_are_every_recipient_device_and_the_senders_other_devices() -> None:
    targets = expected_targets(
        sender_devices=["alice-phone", "alice-laptop"],
        sender_device="alice-phone",
        recipient_devices={"bob": ["bob-phone", "bob-tablet"], "carol": ["carol-phone"]},
    )
    assert targets == {"alice-laptop", "bob-phone", "bob-tablet", "carol-phone"}


def test_sender_with_one_device_targets_only_recipients() -> None:
    targets = expected_targets(["alice-phone"], "alice-phone", {"bob": ["bob-phone"]})
    assert targets == {"bob-phone"}


def test_recipient_without_devices_adds_nothing() -> None:
    targets = expected_targets(["alice-phone", "alice-laptop"], "alice-phone", {"bob": []})
    assert targets == {"alice-laptop"}


def test_note_to_self_reaches_the_senders_other_devices_only() -> None:
    own = ["alice-phone", "alice-laptop", "alice-tablet"]
    targets = expected_targets(own, "alice-phone", {"alice": own})
    assert targets == {"alice-laptop", "alice-tablet"}


def test_note_to_self_from_a_single_device_has_no_targets() -> None:
    assert expected_targets(["alice-phone"], "alice-phone", {"alice": ["alice-phone"]}) == set()


def test_exact_device_set_has_an_empty_diff() -> None:
    diff = diff_device_set({"a", "b"}, ["b", "a"])
    assert diff == DeviceSetDiff(missing=[], extra=[])
    assert not diff


def test_diff_lists_missing_devices_sorted() -> None:
    diff = diff_device_set({"c", "a", "b"}, ["b"])
    assert diff == DeviceSetDiff(missing=["a", "c"], extra=[])
    assert diff


def test_diff_lists_extra_devices_sorted() -> None:
    diff = diff_device_set({"a"}, ["a", "z", "removed"])
    assert diff == DeviceSetDiff(missing=[], extra=["removed", "z"])
    assert diff


def test_diff_lists_missing_and_extra_together() -> None:
    assert diff_device_set({"a", "b"}, ["b", "c"]) == DeviceSetDiff(missing=["a"], extra=["c"])


def test_diff_of_an_empty_send_names_every_target_missing() -> None:
    assert diff_device_set({"b", "a"}, []) == DeviceSetDiff(missing=["a", "b"], extra=[])


def test_no_duplicates_in_a_clean_send() -> None:
    assert duplicates(["a", "b", "c"]) == []
    assert duplicates([]) == []


def test_duplicates_are_each_reported_once_sorted() -> None:
    assert duplicates(["b", "a", "b", "c", "a", "b"]) == ["a", "b"]
