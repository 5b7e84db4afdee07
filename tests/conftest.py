"""Shared fixtures: real server processes on free loopback ports, and CLI runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import vodozemac

from parley.client.olm import register_request

REPO = Path(__file__).resolve().parent.parent
# The shared PostgreSQL and Redis on this machine and in CI. Tests never touch what they
# did not create: each test gets a database of its own, dropped after.
POSTGRES_URL = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require_peer(name: str, reason: str) -> None:
    """Skip a test whose real peer (PostgreSQL, Kannel, ...) is absent; in CI, fail.

    ``.ci/run`` sets PARLEY_REQUIRE_PEERS=1 so a missing peer can never pass silently.
    """
    if os.environ.get("PARLEY_REQUIRE_PEERS") == "1":
        pytest.fail(f"{name} is required in CI but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


def _run_async(work: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on a loop of its own (fixtures may run inside a test's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def database_url(name: str) -> str:
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped after. Skips (or fails in
    CI) when PostgreSQL is unreachable."""
    name = f"parley_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _run_async(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        require_peer("PostgreSQL", f"{POSTGRES_URL}: {error!r}")
    try:
        yield database_url(name)
    finally:
        _run_async(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    async def ping() -> None:
        import redis.asyncio as redis

        client = redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        _run_async(ping())
    except Exception as error:
        require_peer("Redis", f"{REDIS_URL}: {error!r}")
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``parley serve`` in a child process, on a free port, with its own data folder."""

    def __init__(self, data_dir: Path, *extra_args: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> None:
        command = [sys.executable, "-m", "parley", "serve", "--port", str(self.port), "--data", str(self.data_dir)]
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([*command, *self.extra_args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("server did not become ready in 20 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_server(tmp_path: Path, *extra_args: str) -> Iterator[ServerProcess]:
    """A started server with its own data folder under ``tmp_path``; stopped after."""
    process = ServerProcess(tmp_path / "server-data", *extra_args)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path) as process:
        yield process


@pytest.fixture
def parley_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PARLEY_HOME", str(home))
    return home


class Cli:
    """Runs ``parley`` as a person would, in a child process, with its own PARLEY_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "PARLEY_HOME": str(home)}

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "parley", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"parley {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "parley", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


def registration_keys(one_time: int = 5, account: vodozemac.Account | None = None) -> dict[str, Any]:
    """The key fields of a ``RegisterRequest`` (JSON), made and signed as a device does."""
    request = register_request(account or vodozemac.Account(), "tel:+1", "0", "x", one_time)
    fields: dict[str, Any] = msgspec.to_builtins(request)
    return {k: v for k, v in fields.items() if k not in ("handle", "code", "device_name")}
