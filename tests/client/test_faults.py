"""Fault injection on a real server process: the client recovers by itself, loses and
doubles nothing, or ``parley doctor`` names the one command the person must run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.client.checks import Status
from parley.client.device import Device, Event, Received, Repaired, wall_clock_ms
from parley.client.doctor import examine
from parley.client.profile import COULD_NOT_DECRYPT, Profile
from parley.errors import ParleyError, Rejected
from tests.conftest import ServerProcess, free_port

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
BOB = "+14155550111"


def texts(device: Device, direction: str = "in") -> list[str]:
    return [m.text for m in device.profile.messages() if m.direction == direction]


def statuses(report: object) -> dict[str, Status]:
    return {f.check: f.status for f in report.findings}  # type: ignore[attr-defined]


class Watching:
    """A device's watch loop in the background, collecting its events."""

    def __init__(self, device: Device, heartbeat_s: float = 1.0) -> None:
        self.events: list[Event] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(device.watch(self.events.append, self.stop, heartbeat_s=heartbeat_s))

    def received(self) -> list[str]:
        return [e.message.text for e in self.events if isinstance(e, Received)]

    async def until(self, condition: object, timeout: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():  # type: ignore[operator]
            if self.task.done():
                self.task.result()
            assert asyncio.get_running_loop().time() < deadline, self.events
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def test_server_killed_mid_send_and_restarted(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    watching = Watching(bob)
    await asyncio.sleep(0.3)  # connected

    async def send_all() -> None:
        for n in range(30):
            with contextlib.suppress(ParleyError):  # the server is gone: it stays in the outbox
                await alice.send_text([BOB], f"message {n}")
            await asyncio.sleep(0.02)

    sending = asyncio.create_task(send_all())
    await asyncio.sleep(0.2)
    server.stop(signal.SIGKILL)  # mid-send: no goodbye, no close frames
    await asyncio.sleep(0.5)
    server.start()
    await sending
    await alice.flush_outbox()
    sent = texts(alice, "out")
    assert sent and all(m.state != "sending" for m in alice.profile.messages())
    await watching.until(lambda: len(watching.received()) >= len(sent))
    await asyncio.sleep(0.5)  # nothing more (no duplicates) arrives
    assert sorted(watching.received()) == sorted(sent) == sorted(texts(bob))
    assert any(isinstance(e, Repaired) and e.check == "connection" for e in watching.events)
    assert any(check == "connection" and outcome == "repaired" for _, check, outcome, _ in bob.profile.repairs())
    await watching.close()
    await alice.close()
    await bob.close()


class FreezingProxy:
    """A TCP proxy that can stop forwarding on its open connections without closing them:
    the client's connection is then half-open, as after a NAT drop or a pulled cable."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.frozen: set[asyncio.StreamWriter] = set()
        self.live: set[asyncio.StreamWriter] = set()
        self.upstream: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    def freeze(self) -> None:
        self.frozen |= self.live

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.live.add(writer)
        self.upstream.append(up_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    if writer in self.frozen:
                        continue  # swallow it: neither side hears anything, nobody closes
                    sink.write(data)
                    await sink.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for stream in (writer, up_writer):
                stream.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await stream.wait_closed()

    async def close(self) -> None:
        assert self.server is not None
        for stream in [*self.live, *self.upstream]:
            stream.close()
        self.server.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.1)


@pytest.fixture
def proxy_for(server: ServerProcess) -> Iterator[FreezingProxy]:
    yield FreezingProxy(server.port)


async def test_websocket_dropped_without_a_close_is_found_by_heartbeat(
    server: ServerProcess, proxy_for: FreezingProxy, parley_home: Path
) -> None:
    proxy = proxy_for
    await proxy.start()
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(f"http://127.0.0.1:{proxy.port}", BOB, "bob")
    watching = Watching(bob, heartbeat_s=0.5)
    await alice.send_text([BOB], "before")
    await watching.until(lambda: watching.received() == ["before"])
    proxy.freeze()  # the connection goes quiet; no close frame, no FIN
    await alice.send_text([BOB], "during")
    await watching.until(lambda: watching.received() == ["before", "during"])
    repaired = [e for e in watching.events if isinstance(e, Repaired)]
    assert repaired and "half-open" in repaired[0].detail
    await alice.send_text([BOB], "after")
    await watching.until(lambda: watching.received() == ["before", "during", "after"])
    assert texts(bob) == ["before", "during", "after"]
    await watching.close()
    await proxy.close()
    await alice.close()
    await bob.close()


async def test_revoked_credential_stops_watch_and_doctor_names_the_command(
    server: ServerProcess, parley_home: Path
) -> None:
    phone = await Device.register(server.url, ALICE, "alice-phone")
    laptop = await Device.register(server.url, ALICE, "alice-laptop")
    watching = Watching(laptop)
    await asyncio.sleep(0.3)
    await phone.api.unlink(laptop.device_id)  # revoked on the server
    with pytest.raises(Rejected) as stopped:
        await asyncio.wait_for(watching.task, 10)
    command = f"parley register --server {server.url} --phone {ALICE} --profile alice-laptop"
    assert command in str(stopped.value)
    await laptop.close()
    report = await examine("alice-laptop")
    assert statuses(report)["registration"] is Status.NEEDS_YOU and report.exit_status == 1
    assert [f.command for f in report.findings if f.status is Status.NEEDS_YOU] == [command]
    # The one command works on the same profile and keeps its history.
    again = await Device.register(server.url, ALICE, "alice-laptop")
    assert again.device_id != laptop.device_id
    await phone.send_text([ALICE], "note to self")
    assert texts(again, "out") == ["note to self"] or [m.text for m in again.profile.messages()] == []
    await again.sync()
    assert [m.text for m in again.profile.messages() if m.direction == "out"] == ["note to self"]
    assert (await examine("alice-laptop")).exit_status == 0
    await phone.close()
    await again.close()


async def test_wiped_one_time_keys_are_replenished(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    while not (await alice.api.claim_keys([bob.device_id])).keys[0].fallback:
        pass  # someone claimed every one-time key Bob had
    assert (await bob.api.key_count()).one_time_keys == 0
    report = await examine("bob")
    assert statuses(report)["keys"] is Status.REPAIRED and report.exit_status == 0
    assert (await bob.api.key_count()).one_time_keys >= 10
    await alice.send_text([BOB], "still reaches you")
    await bob.sync()
    assert texts(bob) == ["still reaches you"]
    await alice.close()
    await bob.close()


async def test_a_corrupt_session_is_dropped_and_healed(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")
    await alice.send_text([BOB], "one")
    await bob.sync()
    await bob.close()
    with sqlite3.connect(parley_home / "bob" / "state.db") as db:
        (count,) = db.execute("SELECT count(*) FROM olm_sessions").fetchone()
        assert count == 1
        db.execute("UPDATE olm_sessions SET pickle = 'garbage'")
    report = await examine("bob")
    assert statuses(report)["sessions"] is Status.REPAIRED and report.exit_status == 0
    await alice.send_text([BOB], "two")
    bob = Device.open("bob")
    await bob.sync()  # "two" was sealed on the lost session: asked for again
    await alice.sync()  # Alice's device answers the resend
    await bob.sync()
    assert texts(bob) == ["one", "two"] and COULD_NOT_DECRYPT not in texts(bob)
    await alice.close()
    await bob.close()


async def test_client_clock_ten_minutes_off_is_corrected(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    registered = await Device.register(server.url, BOB, "bob")
    await registered.close()
    behind = Device(Profile.open("bob"), clock=lambda: wall_clock_ms() - 600_000)
    watching = Watching(behind)
    await watching.until(lambda: any(isinstance(e, Repaired) and e.check == "clock" for e in watching.events))
    await watching.close()
    assert abs(behind.now() - wall_clock_ms()) < 5_000
    await behind.send_text([ALICE], "what time is it?")
    (sent,) = behind.profile.messages()
    assert abs(sent.sent_at_ms - wall_clock_ms()) < 5_000  # stamped with the server's time
    await alice.sync()
    assert texts(alice) == ["what time is it?"]
    await behind.close()
    report = await examine("bob", clock=lambda: wall_clock_ms() - 600_000)
    clock = next(f for f in report.findings if f.check == "clock")
    assert clock.status is Status.OK and "10 min behind" in clock.detail and report.exit_status == 0
    await alice.close()


class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


async def test_crash_between_outbox_and_send(server: ServerProcess, parley_home: Path) -> None:
    alice = await Device.register(server.url, ALICE, "alice")
    bob = await Device.register(server.url, BOB, "bob")

    async def die(*args: object, **kwargs: object) -> None:
        raise Crash

    alice.channel.send_sealed = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await alice.send_text([BOB], "written, never sent")
    await alice.close()
    report = await examine("alice")
    assert statuses(report)["outbox"] is Status.REPAIRED and report.exit_status == 0
    assert any(check == "outbox" for _, check, _, _ in report.log)
    assert (await examine("alice")).findings[5].status is Status.OK  # nothing left
    await bob.sync()
    await bob.sync()
    assert texts(bob) == ["written, never sent"]
    await bob.close()
