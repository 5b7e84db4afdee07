"""Throughput and latency of one node on SQLite, one node on PostgreSQL, and two nodes on
PostgreSQL with the Redis broker (senders on node 1, receivers on node 2), in one run.

    python bench/nodes.py [--database postgresql://postgres@127.0.0.1:5432/test]
                          [--broker redis://127.0.0.1:6379/0] [--pairs 100] [--messages 100]

Real server processes on free loopback ports; the clients run in this process: ``pairs``
senders, each with its own receiver on another account, over WebSockets. Each sender keeps
up to ``window`` sends in flight. A body carries its send time, so latency is measured
send → arrival at the receiver on one clock. Each PostgreSQL run gets a fresh database,
dropped after. Prints one JSON line per configuration, then a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from parley.client.device import Device
from parley.wire import MAX_FRAME_BYTES, Ack, Deliver, OutEnvelope, Send, Sent, frame_encode, server_frame_decoder

REPO = Path(__file__).resolve().parent.parent
PIDS: list[int] = []  # server processes running now


def cpu_seconds(pids: list[int]) -> list[float]:
    return [sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def server(data: Path, *args: str) -> AsyncIterator[str]:
    """A server process; its pid is added to PIDS while it runs (for CPU accounting)."""
    port = free_port()
    log = open(data.parent / f"server-{port}.log", "ab")  # noqa: SIM115
    command = [sys.executable, "-m", "parley", "serve", "--port", str(port), "--data", str(data), "--no-rate-limits"]
    process = subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(400):
                if process.poll() is not None:
                    raise RuntimeError(f"server exited: see {log.name}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz", timeout=1)).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        PIDS.append(process.pid)
        yield url
    finally:
        with contextlib.suppress(ValueError):
            PIDS.remove(process.pid)
        process.terminate()
        process.wait(timeout=30)
        log.close()


@contextlib.asynccontextmanager
async def fresh_database(base: str) -> AsyncIterator[str]:
    name = f"parley_bench_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base.rpartition('/')[0]}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def register(client: httpx.AsyncClient, url: str, phone: str) -> tuple[str, str]:
    """Register a device as the client does (keys and all); return (device_id, credential)."""
    device = await Device.register(url, phone, f"bench-{url.rsplit(':', 1)[1]}-{phone[1:]}")
    try:
        return device.device_id, device.profile.require("credential")
    finally:
        await device.close()


def ws(url: str, credential: str) -> contextlib.AbstractAsyncContextManager[ClientConnection]:
    return connect(
        url.replace("http://", "ws://") + "/v1/ws",
        additional_headers={"authorization": f"Bearer {credential}"},
        max_size=MAX_FRAME_BYTES,
    )


@dataclass
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def receiver(url: str, credential: str, expected: int, results: Results, ready: asyncio.Event) -> None:
    async with ws(url, credential) as connection:
        got = 0
        async for data in connection:
            frame = server_frame_decoder.decode(data)  # type: ignore[arg-type]
            if type(frame) is Deliver:
                now = time.perf_counter()
                for envelope in frame.envelopes:
                    (sent_at,) = struct.unpack_from("<d", envelope.body)
                    results.latencies_ms.append((now - sent_at) * 1000)
                got += len(frame.envelopes)
                results.received += len(frame.envelopes)
                await connection.send(frame_encode(Ack(up_to=frame.envelopes[-1].seq)))
                if got >= expected:
                    return
            elif not ready.is_set():
                ready.set()  # the Hello: connected and subscribed


async def sender(
    url: str, credential: str, to_phone: str, to_device: str, count: int, window: int, start: asyncio.Event
) -> None:
    async with ws(url, credential) as connection:
        await connection.recv()  # Hello
        await start.wait()
        slots = asyncio.Semaphore(window)

        async def confirmations() -> None:
            confirmed = 0
            async for data in connection:
                if type(server_frame_decoder.decode(data)) is Sent:  # type: ignore[arg-type]
                    slots.release()
                    confirmed += 1
                    if confirmed == count:
                        return

        reader = asyncio.create_task(confirmations())
        for n in range(count):
            await slots.acquire()
            body = struct.pack("<d", time.perf_counter()) + b"x" * 120
            frame = Send(message_id=f"m{n}", recipients=[to_phone], envelopes=[OutEnvelope(to_device, body)])
            await connection.send(frame_encode(frame))
        await reader


async def run(name: str, send_url: str, receive_url: str, pairs: int, messages: int, window: int) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=30) as client:
        senders = [await register(client, send_url, f"+1415{2000000 + i:07d}") for i in range(pairs)]
        receivers = [await register(client, receive_url, f"+1415{3000000 + i:07d}") for i in range(pairs)]
    results = Results()
    readies = [asyncio.Event() for _ in range(pairs)]
    start = asyncio.Event()
    receiving = [
        asyncio.create_task(receiver(receive_url, credential, messages, results, ready))
        for (_, credential), ready in zip(receivers, readies, strict=True)
    ]
    sending = [
        asyncio.create_task(
            sender(send_url, credential, f"+1415{3000000 + i:07d}", receivers[i][0], messages, window, start)
        )
        for i, (_, credential) in enumerate(senders)
    ]
    for ready in readies:
        await ready.wait()
    await asyncio.sleep(0.5)  # every connection settled
    servers_before, client_before = cpu_seconds(PIDS), time.process_time()
    began = time.perf_counter()
    start.set()
    await asyncio.wait_for(asyncio.gather(*sending, *receiving), timeout=300)
    elapsed = time.perf_counter() - began
    servers = [after - before for after, before in zip(cpu_seconds(PIDS), servers_before, strict=True)]
    client_cpu = time.process_time() - client_before
    latencies = sorted(results.latencies_ms)
    return {
        "config": name,
        "messages": results.received,
        "msgs_per_s": round(results.received / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "node_cpu_pct": [round(100 * cpu / elapsed) for cpu in servers],  # 100 = one core busy
        "client_cpu_pct": round(100 * client_cpu / elapsed),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--messages", type=int, default=100, help="per sender")
    parser.add_argument("--window", type=int, default=16, help="sends in flight per sender")
    parser.add_argument("--only", choices=["sqlite", "postgresql", "two-nodes"], action="append")
    args = parser.parse_args()
    wanted = args.only or ["sqlite", "postgresql", "two-nodes"]
    lines = []
    work = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    os.environ["PARLEY_HOME"] = str(work / "devices")  # the bench devices' profiles
    try:
        shape = (args.pairs, args.messages, args.window)
        if "sqlite" in wanted:
            async with server(work / "sqlite") as url:
                lines.append(await run("1 node, SQLite", url, url, *shape))
                print(json.dumps(lines[-1]), flush=True)
        if "postgresql" in wanted:
            async with fresh_database(args.database) as db, server(work / "pg", "--database", db) as url:
                lines.append(await run("1 node, PostgreSQL", url, url, *shape))
                print(json.dumps(lines[-1]), flush=True)
        if "two-nodes" in wanted:
            async with fresh_database(args.database) as db:
                options = ("--database", db, "--broker", args.broker)
                async with server(work / "n1", *options) as url1, server(work / "n2", *options) as url2:
                    lines.append(await run("2 nodes, PostgreSQL + Redis", url1, url2, *shape))
                    print(json.dumps(lines[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"summary": {line["config"]: [line["msgs_per_s"], line["p99_ms"]] for line in lines}}))


if __name__ == "__main__":
    asyncio.run(main())
