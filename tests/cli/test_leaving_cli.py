"""The ways out on the command line: ``parley deregister`` reads its own code against
the simulator, ``parley sms event`` unlinks at once, and bad input (unknown profiles,
corrupt imports, wrong codes) is one line and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


def one_line_error(result: object) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parley: "), stderr
    return lines[0]


def test_deregister_and_carrier_event_from_the_command_line(cli: Cli, server: ServerProcess) -> None:
    for profile, phone in [("alice", ALICE), ("bob", BOB)]:
        cli.run("register", "--server", server.url, "--phone", phone, "--profile", profile)
    wrong = cli.run("deregister", "--server", server.url, "--phone", BOB, "--code", "000000", check=False)
    assert "wrong code" in one_line_error(wrong) or "no code" in one_line_error(wrong)
    assert "\ton Parley" in cli.run("lookup", "--profile", "alice", BOB).stdout
    out = cli.run("deregister", "--server", server.url, "--phone", BOB, "--moved-to", "mailto:bob@example.com").stdout
    assert out.strip() == f"Deregistered tel:{BOB}: 1 device(s) unlinked; moved to mailto:bob@example.com"
    lookup = cli.json("lookup", "--profile", "alice", BOB, "--json")
    assert lookup[0]["on_parley"] is False and lookup[0]["left"]["moved_to"] == "mailto:bob@example.com"
    assert "left Parley" in cli.run("lookup", "--profile", "alice", BOB).stdout
    # Bob comes back, then his number is ported out: unlinked at once.
    cli.run("register", "--server", server.url, "--phone", BOB, "--profile", "bob-again")
    assert "\ton Parley" in cli.run("lookup", "--profile", "alice", BOB).stdout
    assert "port-out" in cli.run("sms", "--server", server.url, "event", "port-out", BOB).stdout
    assert "not on Parley (SMS)" in cli.run("lookup", "--profile", "alice", BOB).stdout
    # A refused credential names the one command to run (issue 5).
    assert "no longer accepts this device; run: parley register" in one_line_error(
        cli.run("inbox", "--profile", "bob-again", check=False)
    )


def test_bad_input_is_one_line_and_changes_nothing(cli: Cli, server: ServerProcess, tmp_path: Path) -> None:
    cli.run("register", "--server", server.url, "--phone", ALICE, "--profile", "alice")
    out = tmp_path / "out.json"
    one_line_error(cli.run("export", "--profile", "nobody", "--format", "json", "--out", str(out), check=False))
    assert not out.exists()
    assert cli.run("export", "--profile", "alice", "--format", "csv", "--out", str(out), check=False).returncode == 2
    assert not out.exists()
    corrupt = [
        "not json at all",
        json.dumps({"format": "parley-export", "version": 2, "handle": "", "exported_at_ms": 0, "messages": []}),
        json.dumps({"format": "parley-export", "version": 1, "handle": "", "exported_at_ms": 0, "messages": [{}]}),
    ]
    for index, text in enumerate(corrupt):
        path = tmp_path / f"corrupt{index}.json"
        path.write_text(text)
        assert "not a Parley JSON export" in one_line_error(
            cli.run("import", "--profile", "fresh", str(path), check=False)
        )
    one_line_error(cli.run("import", "--profile", "fresh", str(tmp_path / "missing.json"), check=False))
    assert not (cli.home / "fresh").exists()  # nothing was created
    cases = [
        ("deregister", "--server", server.url, "--phone", "garbage"),
        ("deregister", "--server", server.url, "--phone", "+14155550177"),  # not on Parley
        ("sms", "--server", server.url, "event", "port-out", "garbage"),
        ("sms", "--server", server.url, "move", "garbage"),
    ]
    for args in cases:
        one_line_error(cli.run(*args, check=False))
    assert "\ton Parley" in cli.run("lookup", "--profile", "alice", ALICE).stdout
