"""Receipts, read sync and ``parley doctor`` through the command line on a real server
process: what a person types and sees."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from tests.cli.test_core_story import ALICE, BOB, history, register_everyone
from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow


def test_read_shows_read_to_the_sender_and_clears_the_other_device(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    cli.run("register", "--server", server.url, "--phone", BOB, "--profile", "bob-laptop")
    message_id = cli.run("send", "--profile", "alice-phone", BOB, "Lunch?").stdout.strip()
    assert "•unread" in cli.run("inbox", "--profile", "bob-laptop").stdout
    assert [m["unread"] for m in history(cli, "bob")] == [True]
    assert cli.run("read", "--profile", "bob", ALICE).stdout.strip() == f"Marked 1 message(s) read in tel:{ALICE}."
    assert [m["unread"] for m in history(cli, "bob-laptop")] == [False]
    assert [(m["message_id"], m["state"]) for m in history(cli, "alice-phone")] == [(message_id, "read")]
    assert "[Read]" in cli.run("inbox", "--profile", "alice-laptop").stdout
    # Read receipts off for Alice only: Bob's devices stay in step, Alice sees Delivered.
    off = cli.run("config", "--profile", "bob", "read-receipts", "off", "--with", ALICE).stdout
    assert off.strip() == f"read-receipts with tel:{ALICE}: off (this conversation)"
    assert cli.run("config", "--profile", "bob", "read-receipts").stdout.strip() == "read-receipts: on"
    cli.run("send", "--profile", "alice-phone", BOB, "Dinner?")
    cli.run("read", "--profile", "bob", ALICE)
    assert [m["state"] for m in history(cli, "alice-phone")] == ["read", "delivered"]
    assert [m["unread"] for m in history(cli, "bob-laptop")] == [False, False]


def test_watch_shows_read_and_typing_live(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    message_id = cli.run("send", "--profile", "alice-phone", BOB, "Are you there?").stdout.strip()
    cli.run("inbox", "--profile", "bob")
    cli.run("send", "--profile", "bob", ALICE, "yes")  # a session each way
    cli.run("inbox", "--profile", "alice-phone")
    with cli.popen("watch", "--profile", "alice-phone", "--json") as watcher:
        try:
            assert watcher.stdout is not None
            events: list[dict[str, object]] = []
            told = ""
            for _ in range(50):
                told = cli.run("typing", "--profile", "bob", ALICE).stdout
                if not told.startswith("Told 0"):
                    break
            assert told.startswith("Told 1"), told  # Alice's phone is connected, her laptop not
            cli.run("read", "--profile", "bob", ALICE)
            while not any(e.get("event") == "state" for e in events):
                events.append(json.loads(watcher.stdout.readline()))
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=10)
    assert {"event": "state", "message_id": message_id, "state": "read"} in events
    assert any(e["event"] == "typing" and e["sender"] == f"tel:{BOB}" for e in events)


def test_doctor_repairs_and_names_the_one_command(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    first = cli.run("doctor", "--profile", "bob")  # a new device has not listed its own devices yet
    assert first.returncode == 0 and "needs you" not in first.stdout
    healthy = cli.run("doctor", "--profile", "bob")
    assert all(line.split()[1] == "ok" for line in healthy.stdout.splitlines()[1:10])
    cli.run("send", "--profile", "alice-phone", BOB, "one")
    cli.run("inbox", "--profile", "bob")
    with sqlite3.connect(cli.home / "bob" / "state.db") as db:
        db.execute("UPDATE olm_sessions SET pickle = 'garbage'")
    repaired = cli.run("doctor", "--profile", "bob", "--json")
    assert repaired.returncode == 0
    report = json.loads(repaired.stdout)
    assert {c["check"]: c["status"] for c in report["checks"]}["sessions"] == "repaired"
    assert report["log"][0]["check"] == "sessions" and report["log"][0]["outcome"] == "repaired"
    # The laptop is unlinked from the phone: doctor says what to run, and exits 1.
    laptop = next(
        d for d in cli.json("devices", "--profile", "alice-phone", "--json")["devices"] if "laptop" in d["name"]
    )
    cli.run("unlink", "--profile", "alice-phone", laptop["device_id"])
    needs = cli.run("doctor", "--profile", "alice-laptop", check=False)
    command = f"parley register --server {server.url} --phone {ALICE} --profile alice-laptop"
    assert needs.returncode == 1 and f"run: {command}" in needs.stdout
    error = cli.run("inbox", "--profile", "alice-laptop", check=False)
    assert error.returncode == 1 and command in error.stderr and len(error.stderr.strip().splitlines()) == 1
    cli.run(*command.split()[1:])
    assert cli.run("doctor", "--profile", "alice-laptop").returncode == 0
