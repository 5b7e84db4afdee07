"""End-to-end benchmark: a real Parley server process, real WebSocket clients in another.

Phases, each bounded in count and time (bench/README.md says what each figure means):

    idle        N devices connect and stay idle: server RSS growth per connection
    throughput  one sender -> one receiver, pipelined: delivered-and-acked msg/s, server CPU per message
    latency     paced sends at a fixed rate: send -> arrival at the receiver, p50 / p99

Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import psutil
import uvloop
import vodozemac
from websockets.asyncio.client import ClientConnection, connect

from parley import wire
from parley.client.api import ServerApi, ws_url
from parley.client.device import read_code_from_handset
from parley.client.olm import register_request
from parley.core import handles
from parley.errors import InvalidHandle

BODY = os.urandom(100)  # stands in for 100 bytes of ciphertext (random, so incompressible)
REGISTER_CONCURRENCY = 20
CONNECT_CONCURRENCY = 50
REGISTER_CAP_S = 300.0
IDLE_CAP_S = 120.0
DRAIN_CAP_S = 30.0  # after the last send, how long delivery may lag before the phase gives up


class BenchError(Exception):
    """The benchmark could not run to the end; the message says why."""


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the server process, seen from outside ----------------------------------------------------


def raise_fd_limit() -> None:
    # 1,000+ sockets in one process; the server, a child, inherits the raised limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536 if hard == resource.RLIM_INFINITY else hard, hard))


def server_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    times = psutil.Process(pid).cpu_times()  # every thread, the SQLite workers included
    return float(times.user + times.system)


def server_cpu_wait_s(pid: int | None) -> float | None:
    """Seconds the server's threads have spent runnable but waiting for a CPU (Linux).

    On a shared machine this is the honest warning sign: time the server lost to others.
    """
    with contextlib.suppress(OSError, ValueError, TypeError):
        tasks = Path(f"/proc/{pid}/task")
        return sum(int((task / "schedstat").read_text().split()[1]) for task in tasks.iterdir()) / 1e9
    return None


def server_rss(pid: int | None) -> int | None:
    return None if pid is None else int(psutil.Process(pid).memory_info().rss)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(data_dir: str, log_path: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "parley", "serve", "--port", str(port), "--data", data_dir, "--no-rate-limits"]
    with open(log_path, "wb") as server_log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                return process, url
        time.sleep(0.1)
    stop_server(process)
    raise BenchError(f"the server did not start (exit status {process.returncode})")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down cleanly and closes the store
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def filesystem_of(path: str) -> str | None:
    # The durable store's cost is fsync's, which depends on it (tmpfs would make it free).
    mounts = [p for p in psutil.disk_partitions(all=True) if os.path.realpath(path).startswith(p.mountpoint)]
    return max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else None


# --- devices ----------------------------------------------------------------------------------


def phone_numbers(count: int, base: int) -> list[str]:
    """Distinct +1 415 numbers that ``phonenumbers`` accepts, from ``base`` upwards."""
    numbers: list[str] = []
    candidate = base
    while len(numbers) < count:
        with contextlib.suppress(InvalidHandle):
            numbers.append(handles.phone_of(handles.normalise(f"+1415{candidate % 10**7:07d}")))
        candidate += 1
    return numbers


async def register_all(server: str, numbers: list[str]) -> list[wire.Registered]:
    """Register one device per number as a phone does: code by SMS, read it, verify with
    the device's signed keys (no one-time keys: the benchmark starts no Olm sessions)."""
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def one(api: ServerApi, number: str) -> wire.Registered:
        async with gate:
            sent = await api.request_code(number)
            code = await read_code_from_handset(api, number, since_ms=0)
            return await api.register(register_request(vodozemac.Account(), sent.handle, code, "bench", one_time=0))

    async with ServerApi(server) as api:
        return list(await asyncio.gather(*(one(api, number) for number in numbers)))


async def open_ws(args: argparse.Namespace, me: wire.Registered) -> ClientConnection:
    ws = await connect(
        ws_url(args.server),
        additional_headers={"authorization": f"Bearer {me.credential}"},
        max_size=wire.MAX_FRAME_BYTES,
        compression=None if args.no_deflate else "deflate",  # "deflate" is what the Parley client offers
        ping_interval=None,  # the server pings; the library answers by itself
        proxy=None,  # loopback only, whatever the environment says
        open_timeout=15,
    )
    if not isinstance(wire.server_frame_decoder.decode(await ws.recv(decode=False)), wire.Hello):
        raise BenchError("the server's first frame was not hello")
    return ws


class Peer:
    """One connected device: reads every frame, acks every Deliver at once, counts.

    The sender and the receiver share ``sent_at`` (one process, so one clock).
    """

    def __init__(self, me: wire.Registered, ws: ClientConnection, sent_at: dict[str, float]) -> None:
        self.me, self.ws, self.sent_at = me, ws, sent_at
        self.refused: list[str] = []  # error codes, over the whole run
        self.duplicates = 0  # message envelopes seen twice, over the whole run: must stay 0
        self.acked_at = 0.0
        self.reset(1)
        self.reader = asyncio.create_task(self._read())

    def reset(self, in_flight: int) -> None:
        self.slots = asyncio.Semaphore(in_flight)  # sends not yet answered with sent/refused
        self.confirmed = self.received = self.receipted = self.frames = 0
        self.latencies: list[float] = []  # send -> arrival here, in seconds

    async def send(self, to: wire.Registered, message_id: str) -> None:
        await self.slots.acquire()
        envelopes = [wire.OutEnvelope(device_id=to.device_id, body=BODY)]
        data = wire.frame_encode(wire.Send(message_id=message_id, recipients=[to.handle], envelopes=envelopes))
        self.sent_at[message_id] = perf_counter()
        await self.ws.send(data)

    async def _read(self) -> None:
        async for data in self.ws:
            frame = wire.server_frame_decoder.decode(data)  # type: ignore[arg-type]
            if type(frame) is wire.Deliver and frame.envelopes:
                await self._deliver(frame)
            elif type(frame) is wire.Sent:
                self.confirmed += 1
                self.slots.release()
            elif type(frame) is wire.Refused:
                self.refused.append(frame.error.code)
                self.slots.release()

    async def _deliver(self, frame: wire.Deliver) -> None:
        now = perf_counter()
        messages = 0
        for envelope in frame.envelopes:
            if envelope.kind != "message":
                self.receipted += len(wire.receipt_decoder.decode(envelope.body).message_ids)
                continue
            messages += 1
            sent = self.sent_at.pop(envelope.message_id, None)
            if sent is None:
                self.duplicates += 1
            else:
                self.latencies.append(now - sent)
        await self.ws.send(wire.frame_encode(wire.Ack(up_to=frame.envelopes[-1].seq)))
        self.received += messages  # received counts envelopes; frames, the Deliver frames
        self.frames += 1
        self.acked_at = perf_counter()

    def check(self) -> None:
        if self.reader.done():
            error = None if self.reader.cancelled() else self.reader.exception()
            closed = f"{self.ws.close_code} {self.ws.close_reason!r}"
            raise BenchError(f"{self.me.handle} lost its connection ({closed}; {error!r})")


async def wait_until(done: Callable[[], bool], timeout_s: float, peers: list[Peer]) -> bool:
    # Polling every 5 ms is cheaper than waking a waiter on each of 50,000 frames.
    deadline = perf_counter() + timeout_s
    while not done():
        for peer in peers:
            peer.check()
        if perf_counter() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def percentile_ms(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000, 3)


# --- phases -----------------------------------------------------------------------------------


async def idle_phase(args: argparse.Namespace, ids: list[wire.Registered]) -> dict[str, Any]:
    if not ids:
        return {"idle_connections": 0, "idle_conn_kb": None}
    rss_before = server_rss(args.server_pid)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sockets: list[ClientConnection] = []

    async def one(me: wire.Registered) -> None:
        async with gate:
            sockets.append(await open_ws(args, me))

    started = perf_counter()
    try:
        async with asyncio.timeout(IDLE_CAP_S):
            failures = [o for o in await asyncio.gather(*map(one, ids), return_exceptions=True) if o is not None]
        if failures:
            raise BenchError(f"{len(failures)} idle connections failed, e.g. {failures[0]!r}")
        log(f"idle: {len(sockets)} connected in {perf_counter() - started:.1f} s; idling 1 s")
        await asyncio.sleep(1.0)
        rss_after = server_rss(args.server_pid)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.sleep(1.0)  # the server tears them down now, not in the next phase's figures
    per_kb = None
    if rss_before is not None and rss_after is not None:
        per_kb = round((rss_after - rss_before) / len(sockets) / 1024, 2)
        log(f"idle: server RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB = {per_kb} KB per connection")
    return {
        "idle_connections": len(sockets),
        "idle_conn_kb": per_kb,
        "server_rss_mb": None if rss_after is None else round(rss_after / 2**20, 1),
    }


async def throughput_phase(args: argparse.Namespace, sender: Peer, receiver: Peer) -> dict[str, Any]:
    sender.reset(args.in_flight)
    receiver.reset(1)
    cpu_before, own_before = server_cpu_s(args.server_pid), time.process_time()
    wait_before = server_cpu_wait_s(args.server_pid)
    sent = 0
    started = perf_counter()
    with contextlib.suppress(TimeoutError):  # the time cap: stop sending, count what was sent
        async with asyncio.timeout(args.time_cap):
            for i in range(args.messages):
                if i % 1000 == 0:  # a lost connection fails now, not at the time cap
                    sender.check()
                    receiver.check()
                await sender.send(receiver.me, f"t{i}")
                sent += 1
    if not await wait_until(lambda: receiver.received >= sent, DRAIN_CAP_S, [sender, receiver]):
        log(f"throughput: only {receiver.received} of {sent} delivered {DRAIN_CAP_S:.0f} s after the last send")
    delivered, elapsed = receiver.received, receiver.acked_at - started
    # A message costs the server until its receipt has reached the sender and been acked too.
    settled = await wait_until(
        lambda: sender.receipted >= delivered and sender.confirmed + len(sender.refused) >= sent,
        DRAIN_CAP_S,
        [sender, receiver],
    )
    await asyncio.sleep(0.3)  # the sender's last ack reaches the server
    cpu_after, own_after = server_cpu_s(args.server_pid), time.process_time()
    wait_after = server_cpu_wait_s(args.server_pid)
    rate = delivered / elapsed if delivered and elapsed > 0 else 0.0
    cpu_us = None
    if cpu_before is not None and cpu_after is not None and delivered:
        cpu_us = round((cpu_after - cpu_before) * 1e6 / delivered, 1)
    cpu_wait = None if wait_before is None or wait_after is None else round(wait_after - wait_before, 2)
    log(f"throughput: {delivered} delivered+acked in {elapsed:.2f} s = {rate:,.0f} msg/s; server CPU {cpu_us} us/msg")
    if cpu_wait:
        log(f"throughput: the server's threads waited {cpu_wait} s in all for a CPU (other load on the machine?)")
    return {
        "msgs_per_s": round(rate, 1),
        "server_cpu_us_per_msg": cpu_us,
        "client_cpu_us_per_msg": round((own_after - own_before) * 1e6 / delivered, 1) if delivered else None,
        "messages": delivered,
        "throughput_s": round(elapsed, 3),
        "in_flight": args.in_flight,
        "receipts_settled": settled,
        "server_cpu_wait_s": cpu_wait,
        "envelopes_per_frame": round(delivered / receiver.frames, 1) if receiver.frames else None,
    }


async def latency_phase(args: argparse.Namespace, sender: Peer, receiver: Peer) -> dict[str, Any]:
    total = int(args.rate * args.latency_seconds)
    sender.reset(max(total, 1))  # pacing, not the window, limits this phase
    receiver.reset(1)
    started = perf_counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.latency_seconds + DRAIN_CAP_S):
            for i in range(total):
                delay = started + i / args.rate - perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sender.send(receiver.me, f"l{i}")
    sending_s = perf_counter() - started
    await wait_until(lambda: receiver.received >= total, DRAIN_CAP_S, [sender, receiver])
    ordered = sorted(receiver.latencies)
    result = {f"p{p}_ms": percentile_ms(ordered, p) for p in (50, 90, 99)}
    log(f"latency: {len(ordered)} of {total} at {args.rate}/s: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return result | {
        "max_ms": percentile_ms(ordered, 100),
        "rate": args.rate,
        "achieved_rate": round(total / sending_s, 1) if sending_s > 0 else None,
        "latency_messages": len(ordered),
    }


async def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    numbers = phone_numbers(args.idle + 2, args.number_base)
    log(f"registering {len(numbers)} devices ({numbers[0]}...)")
    started = perf_counter()
    async with asyncio.timeout(REGISTER_CAP_S):
        ids = await register_all(args.server, numbers)
    register_s = perf_counter() - started
    log(f"registered {len(ids)} devices in {register_s:.1f} s")
    sent_at: dict[str, float] = {}
    sender = Peer(ids[0], await open_ws(args, ids[0]), sent_at)
    receiver = Peer(ids[1], await open_ws(args, ids[1]), sent_at)
    try:
        # Idle first, before 50,000 messages have churned the server's heap: memory the
        # allocator kept from them would be reused by the connections and hide their cost.
        result = await idle_phase(args, ids[2:])
        result |= await throughput_phase(args, sender, receiver)
        result |= await latency_phase(args, sender, receiver)
    finally:
        for peer in (sender, receiver):
            await peer.ws.close()
            peer.reader.cancel()
    if sender.refused:
        log(f"{len(sender.refused)} sends refused, e.g. {sender.refused[0]}")
    return result | {
        # What the server accepted, not what was offered: it may decline deflate.
        "ws_compression": ", ".join(e.name for e in sender.ws.protocol.extensions) or None,
        "refused": len(sender.refused),
        "duplicates": receiver.duplicates,
        "register_s": round(register_s, 2),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark a Parley server end to end (see bench/README.md).")
    parser.add_argument("--messages", type=int, default=50_000, help="throughput: messages to send")
    parser.add_argument("--in-flight", type=int, default=1000, help="throughput: sends allowed unanswered")
    parser.add_argument("--time-cap", type=float, default=120.0, help="throughput: stop sending after this (s)")
    parser.add_argument("--idle", type=int, default=1000, help="idle: connections to open")
    parser.add_argument("--rate", type=int, default=1000, help="latency: messages per second")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="latency: how long to send")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 messages, 100 idle, 2 s latency")
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    parser.add_argument("--server", help="use this running server (http://host:port) instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --server: its pid, for the CPU and RSS figures")
    parser.add_argument("--data-parent", help="where the started server's temporary data folder goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.idle, args.latency_seconds = 2000, 100, 2.0
    if min(args.messages, args.in_flight, args.rate, args.time_cap, args.latency_seconds) <= 0 or args.idle < 0:
        parser.error("counts, rates and times must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "server": args.server or "spawned",
        "loadavg_1m_start": round(os.getloadavg()[0], 2),  # other work on the machine skews every figure
    }
    budget_s = REGISTER_CAP_S + IDLE_CAP_S + args.time_cap + args.latency_seconds + 4 * DRAIN_CAP_S
    with tempfile.TemporaryDirectory(prefix="parley-bench-", dir=args.data_parent) as tmp:
        server, server_log = None, os.path.join(tmp, "server.log")
        try:
            if args.server:
                args.server = args.server.rstrip("/")
                args.number_base = random.randrange(2_000_000, 9_000_000)  # it may know the usual numbers
            else:
                server, args.server = start_server(os.path.join(tmp, "data"), server_log)
                args.server_pid, args.number_base = server.pid, 5_550_000
                meta["data_fs"] = filesystem_of(tmp)
                log(f"server pid {server.pid} at {args.server}, data in {tmp}/data")
            # The clients run here, in this process; the server is its own process. uvloop, as
            # the server uses, so that the clients' overhead is not what gets measured.
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(asyncio.wait_for(run_clients(args), budget_s))
        except Exception as error:
            traceback.print_exc()
            log(f"failed: {type(error).__name__}: {error}")
            if os.path.exists(server_log):
                with open(server_log, errors="replace") as file:
                    log("server log (tail):\n" + file.read()[-3000:])
            return 1
        finally:
            if server is not None:
                stop_server(server)
    print(json.dumps(result | meta | {"loadavg_1m_end": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
