"""The core story with end-to-end encryption, through the command line on a real server
process: afterwards, not one byte of any message text is in the server's data folder
(database, WAL, secret) or its log. Then verification, a key change, and a held message."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.cli.test_core_story import ALICE, BOB, history, register_everyone
from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow

SECRETS = ["Meet me at the old mill at noon", "Bring the blue folder", "Understood, see you there"]


def server_files(server: ServerProcess) -> list[Path]:
    files = [path for path in server.data_dir.rglob("*") if path.is_file()]
    return [*files, server.log_path]


def hits(files: list[Path], needle: str) -> list[str]:
    found = []
    for path in files:
        data = path.read_bytes()
        for form in {needle.encode(), needle.encode("utf-16-le"), needle.lower().encode()}:
            if form in data:
                found.append(str(path))
    return found


def test_server_keeps_no_message_text(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    with cli.popen("watch", "--profile", "bob", "--json") as watcher:
        try:
            # The first goes to a watching device, the second waits in the mailbox.
            cli.run("send", "--profile", "alice-phone", BOB, SECRETS[0])
            assert watcher.stdout is not None
            assert SECRETS[0] in watcher.stdout.readline()
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=10)
    cli.run("send", "--profile", "alice-phone", BOB, SECRETS[1])
    # Bob's reply is still queued (unread) when the server is cut off, WAL and all.
    cli.run("inbox", "--profile", "bob")
    cli.run("send", "--profile", "bob", ALICE, SECRETS[2])
    server.stop(signal.SIGKILL)
    files = server_files(server)
    assert any(path.name.endswith("-wal") for path in files)
    for text in SECRETS:
        assert hits(files, text) == [], text
    server.start()
    assert [m["text"] for m in history(cli, "bob")] == SECRETS
    assert [m["text"] for m in history(cli, "alice-laptop")] == SECRETS
    assert [m["text"] for m in history(cli, "alice-phone")] == SECRETS


def test_verify_key_change_notice_and_hold(cli: Cli, server: ServerProcess, tmp_path: Path) -> None:
    register_everyone(cli, server)
    alice_view = cli.run("verify", "--profile", "alice-phone", BOB).stdout
    bob_view = cli.run("verify", "--profile", "bob", ALICE).stdout
    number = alice_view.splitlines()[1:3]
    assert number == bob_view.splitlines()[1:3] and "--yes" in alice_view
    wrong = cli.run("verify", "--profile", "alice-phone", BOB, "--number", "1" * 60, check=False)
    assert wrong.returncode == 1 and "numbers differ" in wrong.stderr
    ok = cli.run("verify", "--profile", "alice-phone", BOB, "--number", " ".join(number))
    assert f"Verified tel:{BOB}" in ok.stdout
    assert "verified" in cli.run("lookup", "--profile", "alice-phone", BOB).stdout

    cli.run("register", "--server", server.url, "--phone", BOB, "--profile", "bob-new-phone")
    sent = cli.run("send", "--profile", "alice-phone", BOB, "Are you still you?")
    held_id = sent.stdout.strip()
    assert "held" in sent.stderr and len(sent.stderr.strip().splitlines()) == 1
    inbox = cli.run("inbox", "--profile", "alice-phone", "--with", BOB).stdout
    assert "safety number with" in inbox and "[Held" in inbox
    assert history(cli, "bob-new-phone") == []
    again = cli.run("verify", "--profile", "alice-phone", BOB, "--yes").stdout
    assert f"{held_id}: sent (was held)" in again
    assert [m["text"] for m in history(cli, "bob-new-phone")] == ["Are you still you?"]
    assert cli.run("config", "--profile", "alice-phone", "hold-on-key-change", "off").stdout.strip() == (
        "hold-on-key-change: off"
    )


def test_sas_verification_between_two_terminals(cli: Cli, server: ServerProcess) -> None:
    register_everyone(cli, server)
    alice = cli.popen("verify", "--profile", "alice-phone", "--sas", "--yes", "--timeout", "20", BOB)
    bob = cli.popen("verify", "--profile", "bob", "--sas", "--yes", "--timeout", "20", ALICE)
    alice_out, alice_err = alice.communicate(timeout=30)
    bob_out, bob_err = bob.communicate(timeout=30)
    assert alice.returncode == 0 and bob.returncode == 0, (alice_err, bob_err)
    emoji = [line for line in alice_out.splitlines() if line.startswith("  ")]
    assert len(emoji) == 2 and emoji == [line for line in bob_out.splitlines() if line.startswith("  ")]
    assert f"Verified tel:{BOB}" in alice_out and f"Verified tel:{ALICE}" in bob_out
    assert "verified" in cli.run("lookup", "--profile", "bob", ALICE).stdout


def test_watch_and_send_share_one_profile(cli: Cli, server: ServerProcess) -> None:
    # `parley watch` in one terminal, `parley send` in another, on the same device: each
    # process steps the ratchet the other saved last, so nothing becomes undecryptable.
    register_everyone(cli, server)
    cli.run("send", "--profile", "alice-phone", BOB, "hello")
    with cli.popen("watch", "--profile", "bob", "--json") as watcher:
        try:
            assert watcher.stdout is not None
            assert json.loads(watcher.stdout.readline())["text"] == "hello"
            for n in range(3):
                cli.run("send", "--profile", "bob", ALICE, f"from bob {n}")
                cli.run("inbox", "--profile", "alice-phone")
                cli.run("send", "--profile", "alice-phone", BOB, f"from alice {n}")
                event = json.loads(watcher.stdout.readline())
                while event["event"] != "message" or event["direction"] != "in":
                    event = json.loads(watcher.stdout.readline())
                assert event["text"] == f"from alice {n}", event
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=10)
