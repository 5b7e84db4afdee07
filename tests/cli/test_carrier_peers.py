"""The outbound and inbound SMS path through a real server process on real carrier peers:
Kannel (bearerbox + smsbox + fakesmsc) and an SMPP SMSC (node-smpp). Registration codes,
a text to Carol's SMS-only phone with its delivery report, and Carol's reply reaching
Alice's device, all through the command line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from parley.carrier.kannel import KannelGateway
from tests.carrier.peers import KannelPeer, PhoneSms, SmscPeer
from tests.conftest import Cli, ServerProcess

pytestmark = pytest.mark.slow

ALICE = "+14155550100"
CAROL = "+14155550122"
SECRET = "callback-secret-for-tests"


class Peer(Protocol):
    def received(self) -> list[PhoneSms]: ...

    def phone_send(self, sender: str, to: str, text: str) -> None: ...


def eventually(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not within the time limit")


@pytest.fixture(params=["kannel", "smpp"])
def carrier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServerProcess, Peer]]:
    data = tmp_path / "server-data"
    if request.param == "kannel":
        server = ServerProcess(data)
        kannel = KannelPeer(tmp_path / "kannel", server.url, SECRET)
        gateway = KannelGateway(kannel.sendsms_url, kannel.username, kannel.password, server.url, SECRET, lambda: 0)
        kannel.start(gateway.service_config())
        server.extra_args = (
            "--carrier", "kannel", "--carrier-secret", SECRET, "--kannel-sendsms-url", kannel.sendsms_url,
            "--kannel-username", kannel.username, "--kannel-password", kannel.password,
        )  # fmt: skip
        try:
            server.start()
            yield server, kannel
        finally:
            server.stop()
            kannel.stop()
    else:
        smsc = SmscPeer(tmp_path / "smsc")
        smsc.start()
        server = ServerProcess(
            data, "--carrier", "smpp", "--smpp-port", str(smsc.port),
            "--smpp-system-id", smsc.system_id, "--smpp-password", smsc.password,
        )  # fmt: skip
        try:
            server.start()
            eventually(lambda: any(e.get("event") == "bound" for e in smsc.events()))
            yield server, smsc
        finally:
            server.stop()
            smsc.stop()


def register(cli: Cli, server: ServerProcess, peer: Peer, profile: str) -> None:
    first = cli.run("register", "--server", server.url, "--phone", ALICE, "--profile", profile, check=False)
    assert first.returncode == 1 and "run again with --code" in first.stderr
    eventually(lambda: any(s.to == ALICE and "Parley code" in s.text for s in peer.received()))
    code = [s for s in peer.received() if s.to == ALICE and "Parley code" in s.text][-1].text.split("code is ")[1][:6]
    cli.run("register", "--server", server.url, "--phone", ALICE, "--profile", profile, "--code", code)


def test_sms_out_with_report_and_reply_in(cli: Cli, carrier: tuple[ServerProcess, Peer]) -> None:
    server, peer = carrier
    register(cli, server, peer, "alice")
    texts = ["Hi Carol, from Parley", "Long " + "and longer " * 30, "Привет, Кэрол"]
    sent = [cli.run("send", "--profile", "alice", CAROL, text).stdout.strip() for text in texts]
    eventually(lambda: all(any(r.text == t for r in peer.received()) for t in texts))
    for text in texts:
        assert [r for r in peer.received() if r.text == text] == [PhoneSms(ALICE, CAROL, text)]

    def states() -> dict[str, str]:
        return {m["message_id"]: m["state"] for m in cli.json("inbox", "--profile", "alice", "--json")}

    eventually(lambda: all(states().get(message_id) == "sms_delivered" for message_id in sent))

    peer.phone_send(CAROL, ALICE, "Hi Alice, got it")

    def replies() -> list[str]:
        history = cli.json("inbox", "--profile", "alice", "--json", "--with", CAROL)
        return [m["text"] for m in history if m["direction"] == "in"]

    eventually(lambda: replies() == ["Hi Alice, got it"])
    time.sleep(0.5)
    assert replies() == ["Hi Alice, got it"]
    assert "Hi Alice, got it" not in server.log()
