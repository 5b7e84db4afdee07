"""The core story through the command line against a real server process: Alice (two
devices) and Bob (one). Bob and Alice's laptop both get the message; Alice sees
"Delivered"; an unacked message survives a server restart, and a power cut."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


def register_everyone(cli: Cli, server: ServerProcess) -> None:
    for profile, phone in [("alice-phone", ALICE), ("alice-laptop", ALICE), ("bob", BOB)]:
        out = cli.run("register", "--server", server.url, "--phone", phone, "--profile", profile).stdout
        assert "Registered device" in out


def history(cli: Cli, profile: str) -> list[dict[str, object]]:
    result: list[dict[str, object]] = cli.json("inbox", "--profile", profile, "--json")
    return result


def test_message_reaches_recipient_and_senders_other_device_and_shows_delivered(
    cli: Cli, server: ServerProcess
) -> None:
    register_everyone(cli, server)
    devices = cli.run("devices", "--profile", "alice-phone").stdout
    assert devices.count("alice-") == 2 and "(this device)" in devices

    lookup = cli.run("lookup", "--profile", "alice-phone", BOB, "+14155550199").stdout
    assert "tel:+14155550111\ton Parley\t1 device(s)" in lookup
    assert "tel:+14155550199\tnot on Parley" in lookup

    message_id = cli.run("send", "--profile", "alice-phone", BOB, "Hello Bob").stdout.strip()
    assert message_id

    bob = history(cli, "bob")
    assert [(m["message_id"], m["direction"], m["text"], m["sender"]) for m in bob] == [
        (message_id, "in", "Hello Bob", f"tel:{ALICE}")
    ]
    laptop = history(cli, "alice-laptop")
    assert [(m["message_id"], m["direction"], m["conversation"]) for m in laptop] == [(message_id, "out", f"tel:{BOB}")]
    phone = history(cli, "alice-phone")
    assert [(m["message_id"], m["state"]) for m in phone] == [(message_id, "delivered")]
    assert "[Delivered]" in cli.run("inbox", "--profile", "alice-phone").stdout

    # Fetching again shows each message once: acked envelopes are gone from the server.
    assert len(history(cli, "bob")) == 1


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "power-cut"])
def test_unacked_message_survives_server_restart(cli: Cli, server: ServerProcess, stop_signal: int) -> None:
    register_everyone(cli, server)
    message_id = cli.run("send", "--profile", "alice-phone", BOB, "Still there?").stdout.strip()
    # "send" returned, so the message is committed; kill the server before Bob fetches.
    server.restart(stop_signal)
    bob = history(cli, "bob")
    assert [(m["message_id"], m["text"]) for m in bob] == [(message_id, "Still there?")]


def test_watch_receives_at_once_while_connected(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    with cli.popen("watch", "--profile", "bob", "--json") as watcher:
        try:
            time.sleep(1.0)  # let it connect; what arrives before is delivered on connect anyway
            sent_at = time.monotonic()
            message_id = cli.run("send", "--profile", "alice-phone", BOB, "Are you there?").stdout.strip()
            assert watcher.stdout is not None
            event = json.loads(watcher.stdout.readline())
            assert (event["event"], event["message_id"], event["text"]) == ("message", message_id, "Are you there?")
            assert time.monotonic() - sent_at < 10
        finally:
            watcher.send_signal(signal.SIGINT)
            try:
                watcher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                watcher.kill()
        assert watcher.returncode == 0, watcher.stderr.read() if watcher.stderr else ""
    # The watcher stored and acked it: the sender now sees it delivered.
    assert history(cli, "alice-phone")[0]["state"] == "delivered"


def test_errors_are_one_line_without_traceback(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    cases = [
        ("send", "--profile", "nobody", BOB, "hi"),
        ("send", "--profile", "alice-phone", "not-a-number", "hi"),
        # A number not on Parley now goes by SMS (the carrier path); an address cannot.
        ("send", "--profile", "alice-phone", "mailto:nobody@example.com", "hi"),
        ("register", "--server", server.url, "--phone", "+1234", "--profile", "x"),
        ("register", "--server", server.url, "--phone", BOB, "--profile", "y", "--code", "000000"),
        ("register", "--server", "http://127.0.0.1:9", "--phone", BOB, "--profile", "z"),
    ]
    for args in cases:
        result = cli.run(*args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("parley: "), (args, result.stderr)
