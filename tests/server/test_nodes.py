"""Two real server processes on one PostgreSQL database and the Redis broker: Alice on
node 1, Bob on node 2. Messages both ways arrive at once; while either node restarts
(or loses power) nothing acknowledged is lost; a device resumes on the other node."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.client.profile import Profile
from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


class Watcher:
    """``parley watch --json`` in a child process, its events read on a thread."""

    def __init__(self, cli: Cli, profile: str) -> None:
        self.process = cli.popen("watch", "--profile", profile, "--json")
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def messages(self, count: int, within_s: float) -> list[str]:
        """The texts of the next ``count`` messages received, in arrival order."""
        texts: list[str] = []
        deadline = time.monotonic() + within_s
        while len(texts) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {texts} arrived within {within_s} s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event.get("event") == "message" and event.get("direction") == "in":
                texts.append(event["text"])
        return texts

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    args = ("--database", postgres_url, "--broker", redis_url)
    node1 = ServerProcess(tmp_path / "node1", *args, "--node-id", "node1")
    node2 = ServerProcess(tmp_path / "node2", *args, "--node-id", "node2")
    node1.start()
    node2.start()
    try:
        yield node1, node2
    finally:
        node1.stop()
        node2.stop()


def send(cli: Cli, profile: str, to: str, text: str) -> None:
    cli.run("send", "--profile", profile, to, text)


def history(cli: Cli, profile: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = cli.json("inbox", "--profile", profile, "--json")
    return result


def test_alice_on_node1_and_bob_on_node2_through_restarts(
    cli: Cli, nodes: tuple[ServerProcess, ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    node1, node2 = nodes
    cli.run("register", "--server", node1.url, "--phone", ALICE, "--profile", "alice")
    cli.run("register", "--server", node2.url, "--phone", BOB, "--profile", "bob")
    assert httpx.get(f"{node1.url}/readyz").json()["ready"]

    alice, bob = Watcher(cli, "alice"), Watcher(cli, "bob")
    try:
        time.sleep(1.0)  # both connected and subscribed
        # At once, both ways: each message goes from one node to the other.
        started = time.monotonic()
        send(cli, "alice", BOB, "a1")
        assert bob.messages(1, within_s=5) == ["a1"]
        send(cli, "bob", ALICE, "b1")
        assert alice.messages(1, within_s=5) == ["b1"]
        assert time.monotonic() - started < 10

        # Node 2 loses power while Bob is connected to it; Alice keeps writing on node 1.
        node2.stop(signal.SIGKILL)
        for text in ("a2", "a3", "a4"):
            send(cli, "alice", BOB, text)
        node2.start()
        assert bob.messages(3, within_s=40) == ["a2", "a3", "a4"]
        send(cli, "bob", ALICE, "b2")
        assert alice.messages(1, within_s=5) == ["b2"]

        # Node 1 restarts (SIGTERM: drains) while Bob writes to Alice through node 2.
        node1.stop(signal.SIGTERM)
        send(cli, "bob", ALICE, "b3")
        send(cli, "bob", ALICE, "b4")
        node1.start()
        assert alice.messages(2, within_s=40) == ["b3", "b4"]
        send(cli, "alice", BOB, "a5")
        assert bob.messages(1, within_s=5) == ["a5"]
    finally:
        alice.stop()
        bob.stop()

    # Bob's device resumes on the other node (as behind a load balancer): node 2 is gone.
    node2.stop(signal.SIGKILL)
    send(cli, "alice", BOB, "a6")
    monkeypatch.setenv("PARLEY_HOME", str(cli.home))
    profile = Profile.open("bob")
    profile.set_many({"server": node1.url})
    profile.close()
    bob_texts = [m["text"] for m in history(cli, "bob") if m["direction"] == "in"]
    alice_history = history(cli, "alice")

    # Nothing lost, nothing doubled, everything acknowledged shows "Delivered".
    assert bob_texts == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert [m["text"] for m in alice_history if m["direction"] == "in"] == ["b1", "b2", "b3", "b4"]
    sent = [m for m in alice_history if m["direction"] == "out"]
    assert [m["text"] for m in sent] == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert all(m["state"] == "delivered" for m in sent[:-1]), sent


def test_a_device_added_or_unlinked_on_one_node_is_seen_by_the_other_at_once(
    cli: Cli, nodes: tuple[ServerProcess, ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    node1, node2 = nodes
    cli.run("register", "--server", node1.url, "--phone", ALICE, "--profile", "alice")
    cli.run("register", "--server", node2.url, "--phone", BOB, "--profile", "bob-phone")
    send(cli, "alice", BOB, "one device")  # node 1 now caches Bob's account: one device

    # Bob adds a laptop on node 2. Node 1 must drop its cached device list at once, or
    # Alice's next send (naming both devices) would be refused as stale, again and again.
    cli.run("register", "--server", node2.url, "--phone", BOB, "--profile", "bob-laptop")
    send(cli, "alice", BOB, "two devices")
    laptop = [m["text"] for m in history(cli, "bob-laptop") if m["direction"] == "in"]
    assert laptop == ["two devices"]

    # And unlinks it on node 2: node 1 must stop expecting it.
    monkeypatch.setenv("PARLEY_HOME", str(cli.home))
    profile = Profile.open("bob-laptop")
    laptop_id = profile.require("device_id")
    profile.close()
    cli.run("unlink", "--profile", "bob-phone", laptop_id)
    send(cli, "alice", BOB, "one device again")
    phone = [m["text"] for m in history(cli, "bob-phone") if m["direction"] == "in"]
    assert phone == ["one device", "two devices", "one device again"]


def test_a_node_whose_broker_connection_drops_catches_up(
    cli: Cli, nodes: tuple[ServerProcess, ServerProcess], redis_url: str
) -> None:
    """Redis drops node 2's connections (as in a Redis restart or a network blip): what
    was published meanwhile is lost by pub/sub, but node 2 reconnects, re-subscribes, and
    has every connected device read its mailbox."""
    import asyncio

    import redis.asyncio as redis

    node1, node2 = nodes
    cli.run("register", "--server", node1.url, "--phone", ALICE, "--profile", "alice")
    cli.run("register", "--server", node2.url, "--phone", BOB, "--profile", "bob")
    bob = Watcher(cli, "bob")
    try:
        time.sleep(1.0)
        send(cli, "alice", BOB, "before")
        assert bob.messages(1, within_s=5) == ["before"]

        async def drop_node2() -> int:
            client = redis.from_url(redis_url)
            try:
                killed = 0
                for entry in await client.client_list():
                    if entry.get("name") == "parley-node2":
                        killed += await client.client_kill_filter(_id=entry["id"])
                return killed
            finally:
                await client.aclose()

        assert asyncio.run(drop_node2()) >= 1
        send(cli, "alice", BOB, "during")
        send(cli, "alice", BOB, "after")
        assert bob.messages(2, within_s=15) == ["during", "after"]
        deadline = time.monotonic() + 10
        while not httpx.get(f"{node2.url}/readyz").json()["ready"]:
            assert time.monotonic() < deadline, "node 2 did not reconnect to the broker"
            time.sleep(0.2)
        assert "broker connection restored" in node2.log()
    finally:
        bob.stop()
