"""The carrier story through the command line against a real server process (simulator):
Alice (two devices, both watching) writes to Carol, an SMS-only phone; Carol's phone gets
it once; Carol's reply reaches both of Alice's devices. Then Bob's device is silent, and
Alice's message to Bob with a 2-second window reaches Bob's number by SMS exactly once,
though both of Alice's devices are told and both hand it over; Bob's late ack changes
nothing."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"
CAROL = "+14155550122"


class Watcher:
    """``parley watch --json`` in the background, its events read on a thread."""

    def __init__(self, cli: Cli, profile: str) -> None:
        self.process = cli.popen("watch", "--profile", profile, "--json")
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 15) -> dict[str, Any]:
        for event in self.seen:
            if match(event):
                return event
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(event)
            if match(event):
                return event
        raise AssertionError(f"no matching event within {timeout_s} s; saw {self.seen}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def watchers(cli: Cli, server: ServerProcess) -> Iterator[dict[str, Watcher]]:
    for profile, phone in [("alice-phone", ALICE), ("alice-laptop", ALICE), ("bob", BOB)]:
        cli.run("register", "--server", server.url, "--phone", phone, "--profile", profile)
    running = {profile: Watcher(cli, profile) for profile in ("alice-phone", "alice-laptop")}
    time.sleep(1.0)  # let both connect
    try:
        yield running
    finally:
        for watcher in running.values():
            watcher.stop()


def handset(cli: Cli, server: ServerProcess, number: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = cli.json("sms", "--server", server.url, "inbox", number, "--json")
    return [sms for sms in result if "Parley code" not in sms["text"]]


def eventually(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("not within the time limit")


def test_sms_to_carol_reply_to_both_devices_and_fallback_to_bob_exactly_once(
    cli: Cli, server: ServerProcess, watchers: dict[str, Watcher]
) -> None:
    # Carol is not on Parley: the message goes out by SMS at once, from Alice's number.
    lookup = cli.run("lookup", "--profile", "alice-phone", CAROL).stdout
    assert "not on Parley (SMS)" in lookup
    to_carol = cli.run("send", "--profile", "alice-phone", CAROL, "Hi Carol, it's Alice").stdout.strip()
    eventually(lambda: len(handset(cli, server, CAROL)) == 1)
    [sms] = handset(cli, server, CAROL)
    assert (sms["sender"], sms["to"], sms["text"]) == (ALICE, CAROL, "Hi Carol, it's Alice")
    # The laptop has the sent copy; the state reaches "Delivered by SMS" on both.
    for watcher in watchers.values():
        watcher.wait_for(lambda e: e.get("message_id") == to_carol and e.get("state") == "sms_delivered")
    copy = watchers["alice-laptop"].wait_for(lambda e: e.get("event") == "message" and e["message_id"] == to_carol)
    assert (copy["direction"], copy["conversation"]) == ("out", f"tel:{CAROL}")

    # Carol replies from her SMS-only phone: both of Alice's devices get it, in her thread.
    cli.run("sms", "--server", server.url, "send", "--from", CAROL, "--to", ALICE, "Hi Alice! Carol here")
    for watcher in watchers.values():
        reply = watcher.wait_for(lambda e: e.get("event") == "message" and e["text"] == "Hi Alice! Carol here")
        assert (reply["sender"], reply["conversation"], reply["direction"]) == (f"tel:{CAROL}", f"tel:{CAROL}", "in")
    thread = cli.json("inbox", "--profile", "alice-laptop", "--json", "--with", CAROL)
    assert [m["text"] for m in thread] == ["Hi Carol, it's Alice", "Hi Alice! Carol here"]

    # Bob is on Parley but his device is silent: after 2 s the message goes by SMS, once.
    assert "on Parley" in cli.run("lookup", "--profile", "alice-phone", BOB).stdout
    started = time.monotonic()
    to_bob = cli.run("send", "--profile", "alice-phone", "--fallback", "2", BOB, "Bob, are you there?").stdout.strip()
    eventually(lambda: len(handset(cli, server, BOB)) >= 1)
    assert time.monotonic() - started >= 2
    for watcher in watchers.values():
        watcher.wait_for(lambda e: e.get("message_id") == to_bob and e.get("state") == "sms_due")
        watcher.wait_for(lambda e: e.get("message_id") == to_bob and e.get("state") == "sms_delivered")
    time.sleep(1.5)  # room for a duplicate to show up, were there one
    assert [(s["sender"], s["text"]) for s in handset(cli, server, BOB)] == [(ALICE, "Bob, are you there?")]

    # Bob's device comes back and acks the Parley copy late: no second SMS, and Alice
    # still sees "Sent as SMS"-family state, not a regression.
    bob = cli.json("inbox", "--profile", "bob", "--json")
    assert [m["text"] for m in bob] == ["Bob, are you there?"]
    time.sleep(1.0)
    assert len(handset(cli, server, BOB)) == 1
    history = {m["message_id"]: m for m in cli.json("inbox", "--profile", "alice-phone", "--json")}
    assert history[to_bob]["state"] == "sms_delivered"
    assert history[to_carol]["state"] == "sms_delivered"
    assert "[Delivered by SMS]" in cli.run("inbox", "--profile", "alice-phone").stdout
    # Nothing of the texts is in the server's log.
    log = server.log()
    for text in ("Hi Carol, it's Alice", "Hi Alice! Carol here", "Bob, are you there?"):
        assert text not in log


def test_fallback_handed_over_by_a_device_that_was_offline_when_the_window_passed(
    cli: Cli, server: ServerProcess
) -> None:
    for profile, phone in [("alice-phone", ALICE), ("bob", BOB)]:
        cli.run("register", "--server", server.url, "--phone", phone, "--profile", profile)
    to_bob = cli.run("send", "--profile", "alice-phone", "--fallback", "1", BOB, "Later is fine").stdout.strip()
    time.sleep(2.0)
    assert handset(cli, server, BOB) == []  # no sender device was online to hand it over
    server.restart()  # the watch and its notice survive a restart
    cli.run("inbox", "--profile", "alice-phone")  # the device connects, is told, hands it over
    eventually(lambda: len(handset(cli, server, BOB)) == 1)
    cli.run("inbox", "--profile", "alice-phone")
    time.sleep(1.0)
    assert [s["text"] for s in handset(cli, server, BOB)] == ["Later is fine"]
    states = {m["message_id"]: m["state"] for m in cli.json("inbox", "--profile", "alice-phone", "--json")}
    assert states[to_bob] in ("sms_sent", "sms_delivered")


def test_carrier_errors_are_one_line(cli: Cli, server: ServerProcess) -> None:
    cli.run("register", "--server", server.url, "--phone", ALICE, "--profile", "alice")
    cases = [
        ("send", "--profile", "alice", "+442079460000", "hi"),  # a London landline: no SMS
        ("send", "--profile", "alice", CAROL, "a" * 1531),  # 11 SMS parts
        ("send", "--profile", "alice", "--fallback", "-1", BOB, "hi"),
        ("send", "--profile", "alice", "mailto:carol@example.com", "hi"),
        ("sms", "--server", server.url, "send", "--from", "garbage", "--to", ALICE, "hi"),
        ("sms", "--server", server.url, "inbox", "garbage"),
        ("sms", "--server", "http://127.0.0.1:9", "inbox", CAROL),
        ("serve", "--carrier", "kannel", "--port", "9"),  # no secret, no sendsms user
        ("serve", "--carrier", "smpp", "--port", "9"),  # no system id
    ]
    for args in cases:
        result = cli.run(*args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("parley: "), (args, result.stderr)
    assert handset(cli, server, CAROL) == []
