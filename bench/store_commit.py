"""How should the PostgreSQL store commit? Measures one group-commit writer against one
transaction per send on a pool, for a busy mailbox (every send to one device) and for
spread traffic (each sender to its own peer). Prints one JSON line per case.

    python bench/store_commit.py --database postgresql://postgres@127.0.0.1:5432/test

It creates a scratch database next to the one named, and drops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time

import asyncpg

from parley.store.base import DeviceRecord, NewEnvelope
from parley.store.pg_writer import WriteCall
from parley.store.postgres import PostgresStore, write_batch


async def run_case(url: str, mode: str, traffic: str, senders: int, per_sender: int) -> dict[str, object]:
    connections = min(senders, 32)  # PostgreSQL allows 100 clients by default
    store = PostgresStore(url, pool_size=connections + 4)
    await store.open()
    try:
        devices = [f"d{i}" for i in range(senders)]
        for i, device_id in enumerate(devices):
            await store.register_device(f"tel:+1{i:09d}", f"a{i}", DeviceRecord(device_id, "", "n", "h", 1), 10)
        pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)

        async def one_transaction(key: tuple[str, str], envelopes: list[NewEnvelope]) -> None:
            """A send as its own transaction, on a pool connection (the alternative)."""
            future = asyncio.get_running_loop().create_future()
            async with pool.acquire() as connection, connection.transaction():
                await write_batch(connection, [WriteCall(key, envelopes, 1, future)])

        async def sender(index: int) -> None:
            target = devices[0] if traffic == "one-mailbox" else devices[(index + 1) % senders]
            for n in range(per_sender):
                message_id = f"s{index}-{n}"
                envelopes = [NewEnvelope(target, message_id, "message", "a", f"x{index}", "tel:+1", 1, b"x" * 200)]
                if mode == "pool":
                    await one_transaction((f"x{index}", message_id), envelopes)
                else:
                    await store.submit(f"x{index}", message_id, envelopes, 1)

        started = time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(senders)))
        elapsed = time.perf_counter() - started
        await pool.close()
        total = senders * per_sender
        return {"mode": mode, "traffic": traffic, "senders": senders, "msgs_per_s": round(total / elapsed)}
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--per-sender", type=int, default=100)
    args = parser.parse_args()
    admin = await asyncpg.connect(args.database)
    for mode in ("group-commit", "pool"):
        for traffic in ("one-mailbox", "spread"):
            name = f"parley_bench_{secrets.token_hex(4)}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = args.database.rpartition("/")[0] + "/" + name
                print(json.dumps(await run_case(url, mode, traffic, args.senders, args.per_sender)), flush=True)
            finally:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
