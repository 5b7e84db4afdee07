"""The "never trapped" story through the command line against a real server process
(simulator, liveness shortened to 3 s). Alice has a phone and a laptop on Parley, Bob a
phone, Carol only an SMS phone; Dave, a friend of Bob's on Parley, is the second sender
the liveness rule asks for. Alice and Bob chat; Alice and Carol chat by SMS. Then Bob's
number moves to an SMS-only phone and his old device goes silent; nobody turns anything
off. Every later message reaches Bob's new phone by SMS exactly once, what was queued for
his old device is re-routed, the directory stops advertising him, he deregisters on the
web page, and exports his history from a backup of his old device. Every message is
counted: each is shown to its recipient exactly once, on some channel."""

from __future__ import annotations

import json
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_carrier_story import Watcher, eventually, handset
from tests.conftest import Cli, ServerProcess, running_server

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"
CAROL = "+14155550122"
DAVE = "+14155550133"
LIVENESS_S = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, "--liveness-seconds", str(LIVENESS_S)) as process:
        yield process


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages]


def test_bob_moves_to_an_sms_phone_and_nothing_is_trapped(cli: Cli, server: ServerProcess, tmp_path: Path) -> None:
    for profile, phone in [("alice-phone", ALICE), ("alice-laptop", ALICE), ("bob", BOB), ("dave", DAVE)]:
        cli.run("register", "--server", server.url, "--phone", phone, "--profile", profile)
    watchers = {p: Watcher(cli, p) for p in ("alice-phone", "alice-laptop", "dave")}
    time.sleep(1.0)
    try:
        # Alice and Bob chat over Parley: Delivered, then Read.
        hi_bob = cli.run("send", "--profile", "alice-phone", BOB, "Hi Bob").stdout.strip()
        assert texts(cli.json("inbox", "--profile", "bob", "--json")) == ["Hi Bob"]
        watchers["alice-phone"].wait_for(lambda e: e.get("message_id") == hi_bob and e.get("state") == "delivered")
        cli.run("read", "--profile", "bob", ALICE)
        watchers["alice-phone"].wait_for(lambda e: e.get("message_id") == hi_bob and e.get("state") == "read")
        cli.run("send", "--profile", "bob", ALICE, "Hi Alice")
        for watcher in (watchers["alice-phone"], watchers["alice-laptop"]):
            watcher.wait_for(lambda e: e.get("event") == "message" and e["text"] == "Hi Alice")
        # Alice and Carol chat by SMS.
        cli.run("send", "--profile", "alice-phone", CAROL, "Hi Carol")
        eventually(lambda: texts(handset(cli, server, CAROL)) == ["Hi Carol"])
        cli.run("sms", "--server", server.url, "send", "--from", CAROL, "--to", ALICE, "Hi Alice, Carol here")
        for watcher in (watchers["alice-phone"], watchers["alice-laptop"]):
            watcher.wait_for(lambda e: e.get("event") == "message" and e["text"] == "Hi Alice, Carol here")

        # Bob keeps a backup of his old device's state, then his number moves to an
        # SMS-only phone. His old device is never run again; nobody turns anything off.
        shutil.copytree(cli.home / "bob", cli.home / "bob-backup")
        cli.run("sms", "--server", server.url, "move", BOB)
        assert "on Parley" in cli.run("lookup", "--profile", "alice-phone", BOB).stdout

        # Two senders write with a 2 s window; one more message is Parley-only (no window).
        started = time.monotonic()
        cli.run("send", "--profile", "alice-phone", "--fallback", "2", BOB, "Bob, lunch?")
        cli.run("send", "--profile", "dave", "--fallback", "2", BOB, "Bob, it's Dave")
        cli.run("send", "--profile", "alice-laptop", "--fallback", "0", BOB, "Parley only, Bob")
        eventually(lambda: {"Bob, lunch?", "Bob, it's Dave"} <= set(texts(handset(cli, server, BOB))))
        assert time.monotonic() - started >= 2

        # The directory stops advertising Bob within the liveness time; the message queued
        # for his old device is re-routed by SMS, not lost.
        def unadvertised() -> bool:
            return "not on Parley (SMS)" in cli.run("lookup", "--profile", "alice-phone", BOB).stdout

        eventually(unadvertised, timeout_s=2 + LIVENESS_S + 5)
        assert "left Parley" in cli.run("lookup", "--profile", "alice-phone", BOB).stdout
        eventually(lambda: "Parley only, Bob" in texts(handset(cli, server, BOB)))

        # Now messages to Bob go straight by SMS, and Carol's SMS reaches his new phone.
        cli.run("send", "--profile", "alice-phone", BOB, "Bob, you moved?")
        cli.run("sms", "--server", server.url, "send", "--from", CAROL, "--to", BOB, "Hi Bob, Carol here")
        eventually(lambda: "Bob, you moved?" in texts(handset(cli, server, BOB)))
        time.sleep(1.5)  # room for a duplicate to show up, were there one

        # Bob deregisters on the web page with a code sent to his new phone.
        page = httpx.get(f"{server.url}/deregister")
        assert page.status_code == 200 and "<form" in page.text
        asked = httpx.post(f"{server.url}/deregister", data={"phone": BOB})
        assert asked.status_code == 200 and "sent a code" in asked.text
        code = re.search(r"\b(\d{6})\b", cli.json("sms", "--server", server.url, "inbox", BOB, "--json")[-1]["text"])
        assert code is not None
        done = httpx.post(f"{server.url}/deregister", data={"phone": BOB, "code": code.group(1)})
        assert done.status_code == 200 and "no longer on Parley" in done.text
        assert "not on Parley (SMS)" in cli.run("lookup", "--profile", "dave", BOB).stdout

        new_phone = texts(handset(cli, server, BOB))
        assert texts(handset(cli, server, CAROL)) == ["Hi Carol"]
        for profile in ("alice-phone", "alice-laptop"):
            received = [m["text"] for m in cli.json("inbox", "--profile", profile, "--json") if m["direction"] == "in"]
            assert sorted(received) == ["Hi Alice", "Hi Alice, Carol here"]
        log = server.log()
        for text in ("Bob, lunch?", "Parley only, Bob", "Hi Bob, Carol here"):
            assert text not in log
    finally:
        for watcher in watchers.values():
            watcher.stop()

    # Bob exports his history from the backup of his old device, in both formats.
    out_json, out_xml = tmp_path / "bob.json", tmp_path / "bob.xml"
    cli.run("export", "--profile", "bob-backup", "--format", "json", "--out", str(out_json))
    cli.run("export", "--profile", "bob-backup", "--format", "sms-backup-xml", "--out", str(out_xml))
    exported = json.loads(out_json.read_text())
    assert exported["format"] == "parley-export" and exported["handle"] == f"tel:{BOB}"
    assert [(m["direction"], m["text"]) for m in exported["messages"]] == [("in", "Hi Bob"), ("out", "Hi Alice")]
    root = ET.parse(out_xml).getroot()
    assert root.tag == "smses" and root.get("count") == "2"
    assert [(s.get("address"), s.get("type"), s.get("body")) for s in root] == [
        (ALICE, "1", "Hi Bob"),
        (ALICE, "2", "Hi Alice"),
    ]

    # Count every message to Bob: each shown exactly once, on his old device (before the
    # move) or on his new phone by SMS (after it).
    old_device = [m["text"] for m in exported["messages"] if m["direction"] == "in"]
    assert Counter(old_device) + Counter(new_phone) == Counter(
        ["Hi Bob", "Bob, lunch?", "Bob, it's Dave", "Parley only, Bob", "Bob, you moved?", "Hi Bob, Carol here"]
    )

    # ... and reads the JSON back into a fresh device.
    cli.run("import", "--profile", "bob-new", str(out_json))
    again = tmp_path / "again.json"
    cli.run("export", "--profile", "bob-new", "--format", "json", "--out", str(again))
    assert json.loads(again.read_text())["messages"] == exported["messages"]
