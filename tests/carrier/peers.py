"""Real carrier peers for the contract suite: Kannel (bearerbox + smsbox + fakesmsc) and an
SMSC on node-smpp. Each runs on free loopback ports with readiness loops that have a time
limit and check the process is alive. Absent binaries skip locally and fail in CI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import httpx

from parley.carrier.base import CarrierSink
from parley.carrier.kannel import parse_inbound, parse_report
from tests.conftest import REPO, free_port, require_peer

FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
SMSC_DIR = REPO / "tests" / "peers" / "smsc"


@dataclass(frozen=True)
class PhoneSms:
    sender: str
    to: str
    text: str


def _wait(check: object, processes: list[subprocess.Popen[bytes]], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: a process exited early ({process.args!r})")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout_s} s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class CallbackReceiver:
    """Plays Parley's Kannel callback URLs for the contract suite (no Parley server)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.sink: CarrierSink | None = None
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sink: CarrierSink) -> None:
        self.sink = sink
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        target = request.split(" ")[1]
        parts = urlsplit(target)
        params = dict(parse_qsl(parts.query))
        status = "202 Accepted"
        if params.pop("secret", "") != self.secret or self.sink is None:
            status = "401 Unauthorized"
        elif parts.path.endswith("/inbound"):
            await self.sink.inbound(parse_inbound(params, int(time.time() * 1000)))
        else:
            await self.sink.report(parse_report(params))
        writer.write(f"HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()


class KannelPeer:
    """bearerbox + smsbox with fakesmsc as the SMSC, fed from a FIFO held open."""

    def __init__(self, workdir: Path, callback_url: str, secret: str) -> None:
        for binary in ("/usr/sbin/bearerbox", "/usr/sbin/smsbox", FAKESMSC):
            if not os.path.exists(binary):
                require_peer("Kannel", f"{binary} is missing (apt-get install kannel kannel-extras)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin_port, self.box_port, self.smsc_port, self.sendsms_port = (free_port() for _ in range(4))
        self.username, self.password = "parley", "kannel-test-password"
        self.callback_url = callback_url
        self.secret = secret
        self.processes: list[subprocess.Popen[bytes]] = []
        self._fifo_writer: IO[bytes] | None = None
        self.fake_log = self.dir / "fakesmsc.log"

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"

    def config(self, service: str) -> str:
        return (
            f"group = core\nadmin-port = {self.admin_port}\nadmin-password = admin\n"
            f"smsbox-port = {self.box_port}\nbox-allow-ip = 127.0.0.1\nlog-level = 1\n"
            f'log-file = "{self.dir}/bearerbox.log"\ndlr-storage = internal\n\n'
            f"group = smsc\nsmsc = fake\nsmsc-id = fake\nport = {self.smsc_port}\nconnect-allow-ip = 127.0.0.1\n\n"
            f"group = smsbox\nbearerbox-host = 127.0.0.1\nbearerbox-port = {self.box_port}\n"
            f'sendsms-port = {self.sendsms_port}\nlog-level = 1\nlog-file = "{self.dir}/smsbox.log"\n'
            "mo-recode = true\n\n"
            f"group = sendsms-user\nusername = {self.username}\npassword = {self.password}\nmax-messages = 1\n\n"
            + service
        )

    def start(self, service: str) -> None:
        conf = self.dir / "kannel.conf"
        conf.write_text(self.config(service))
        with open(self.dir / "boxes.out", "ab") as out:  # the children keep their own copies
            bearerbox = subprocess.Popen(["/usr/sbin/bearerbox", str(conf)], stdout=out, stderr=out, cwd=self.dir)
            self.processes.append(bearerbox)
            _wait(lambda: _port_open(self.box_port), self.processes, "bearerbox")
            smsbox = subprocess.Popen(["/usr/sbin/smsbox", str(conf)], stdout=out, stderr=out, cwd=self.dir)
            self.processes.append(smsbox)
        fifo = self.dir / "mo.fifo"
        os.mkfifo(fifo)
        # Read-write, so opening never blocks and fakesmsc never sees end of input.
        stdin = os.open(fifo, os.O_RDWR)
        with open(self.fake_log, "ab") as log:
            fake = subprocess.Popen(
                [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.smsc_port)], stdin=stdin, stdout=log, stderr=log
            )
        os.close(stdin)
        self.processes.append(fake)
        self._fifo_writer = open(fifo, "wb", buffering=0)  # noqa: SIM115
        _wait(lambda: _port_open(self.sendsms_port) and self._smsc_online(), self.processes, "Kannel")

    def _smsc_online(self) -> bool:
        try:
            status = httpx.get(f"http://127.0.0.1:{self.admin_port}/status.txt?password=admin", timeout=1).text
        except httpx.HTTPError:
            return False
        return "online" in status and "fake" in status

    def stop(self) -> None:
        if self._fifo_writer is not None:
            self._fifo_writer.close()
        for process in reversed(self.processes):
            _stop(process)

    def phone_send(self, sender: str, to: str, text: str) -> None:
        assert self._fifo_writer is not None
        if all(ord(char) < 128 for char in text):
            line = f"{sender} {to} text {text}\n"
        else:
            encoded = "".join(f"%{byte:02X}" for byte in text.encode("utf-16-be"))
            line = f"{sender} {to} ucs2 {encoded}\n"
        self._fifo_writer.write(line.encode())

    def received(self) -> list[PhoneSms]:
        """Every text fakesmsc (the handsets' side) got, concatenated parts joined."""
        messages: list[PhoneSms] = []
        partial: dict[tuple[str, str, int], dict[int, str]] = {}
        pattern = re.compile(r"Got message \d+: <(\S+) (\S+) (\S+) (.*)>$")
        for line in self.fake_log.read_text(errors="replace").splitlines():
            match = pattern.search(line)
            if not match:
                continue
            sender, to, kind, rest = match.groups()
            if kind == "text":
                messages.append(PhoneSms(sender, to, rest))
                continue
            udh = b""
            if kind == "udh":
                udh_text, kind, rest = rest.split(" ", 2)
                udh = unquote_to_bytes(udh_text)
            raw = unquote_to_bytes(rest.replace("+", "%20"))  # fakesmsc writes a space byte as "+"
            text = raw.decode("utf-16-be") if kind in ("ucs-2", "ucs2") else raw.decode("latin-1")
            if udh and len(udh) >= 6 and udh[1] == 0:
                key = (sender, to, udh[3])
                parts = partial.setdefault(key, {})
                parts[udh[5]] = text
                if len(parts) == udh[4]:
                    messages.append(PhoneSms(sender, to, "".join(parts[i] for i in sorted(parts))))
                    del partial[key]
            else:
                messages.append(PhoneSms(sender, to, text))
        return messages


class SmscPeer:
    """The node-smpp SMSC script (tests/peers/smsc/server.js)."""

    def __init__(self, workdir: Path) -> None:
        node = shutil.which("node")
        if node is None:
            require_peer("node-smpp", "node is not installed")
        if not (SMSC_DIR / "node_modules" / "smpp").exists():
            npm = shutil.which("npm")
            if npm is None:
                require_peer("node-smpp", "npm is not installed")
            result = subprocess.run(
                [str(npm), "ci", "--no-audit", "--no-fund", "--silent"], cwd=SMSC_DIR, capture_output=True
            )
            if result.returncode != 0:
                require_peer("node-smpp", f"npm ci failed: {result.stderr.decode()[-300:]}")
        self.node = str(node)
        self.port = free_port()
        self.system_id, self.password = "parley", "smpp-pw"
        self.log = workdir / "smsc.jsonl"
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.node, str(SMSC_DIR / "server.js"), str(self.port), self.system_id, self.password],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
            )
        _wait(lambda: any(e.get("event") == "listening" for e in self.events()), [self.process], "node-smpp SMSC")

    def stop(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        _stop(self.process)

    def command(self, **command: object) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()

    def phone_send(self, sender: str, to: str, text: str) -> None:
        self.command(cmd="mo", **{"from": sender, "to": to, "text": text})

    def events(self) -> list[dict[str, object]]:
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def received(self) -> list[PhoneSms]:
        return [PhoneSms(str(e["from"]), str(e["to"]), str(e["text"])) for e in self.events() if e.get("event") == "mt"]


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
