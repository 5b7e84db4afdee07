"""Hubs of several nodes over one store, joined by an in-memory broker: routing by
device, stale connections closed, directory caches dropped. No network, no processes
(tests/server/test_nodes.py does the same with real ones)."""

from __future__ import annotations

from collections.abc import Callable

from parley.carrier.simulator import CarrierSimulator
from parley.server.directory import Directory
from parley.server.hub import Hub
from parley.server.keys import KeyDirectory
from parley.server.limits import Limiter
from parley.store.base import DeviceRecord
from parley.store.memory import MemoryStore
from parley.wire import Envelope, NodeForget, NodeFrame, OutEnvelope, SendRequest


class Bus:
    """Pub/sub in memory, recording which node each frame reached."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[tuple[str, Callable[[NodeFrame], None]]]] = {}
        self.received: list[tuple[str, str]] = []  # (node, channel)


class BusBroker:
    def __init__(self, bus: Bus, node_id: str) -> None:
        self.bus = bus
        self.node_id = node_id
        self.connected = True
        self._on_frame: Callable[[NodeFrame], None] = lambda frame: None

    async def start(self, on_frame: Callable[[NodeFrame], None], on_resync: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self.bus.subscribers.setdefault("directory", []).append((self.node_id, on_frame))

    async def stop(self) -> None:
        pass

    async def watch(self, device_id: str) -> None:
        self.bus.subscribers.setdefault(device_id, []).append((self.node_id, self._on_frame))

    def unwatch(self, device_id: str) -> None:
        self.bus.subscribers[device_id] = [s for s in self.bus.subscribers[device_id] if s[0] != self.node_id]

    def to_device(self, device_id: str, frame: NodeFrame) -> None:
        self._publish(device_id, frame)

    def to_all(self, frame: NodeFrame) -> None:
        self._publish("directory", frame)

    def _publish(self, channel: str, frame: NodeFrame) -> None:
        for node, deliver in list(self.bus.subscribers.get(channel, [])):
            self.bus.received.append((node, channel))
            deliver(frame)


class FakeConnection:
    def __init__(self) -> None:
        self.pushed: list[int] = []
        self.pokes = 0
        self.closed = False

    def live(self, envelopes: list[Envelope]) -> None:
        self.pushed += [e.seq for e in envelopes]

    def poke(self) -> None:
        self.pokes += 1

    def close_replaced(self) -> None:
        self.closed = True


class Node:
    def __init__(self, store: MemoryStore, bus: Bus, name: str) -> None:
        clock = lambda: 1_000  # noqa: E731
        counter = iter(range(10**6))
        self.broker = BusBroker(bus, name)
        self.simulator = CarrierSimulator(clock, lambda: "s")
        limiter = Limiter(clock, enabled=False)
        self.directory = Directory(
            store,
            self.simulator,
            limiter,
            KeyDirectory(store, limiter),
            b"secret",
            clock,
            lambda prefix: f"{prefix}{name}{next(counter)}",
            "Parley",
            lambda account, handle: self.broker.to_all(_forget(account, handle, name)),
        )
        self.hub = Hub(store, self.directory, clock, broker=self.broker)

    async def start(self) -> None:
        await self.broker.start(self.hub.on_node_frame, self.hub.on_broker_resync)


def _forget(account: str, handle: str | None, node: str) -> NodeFrame:
    return NodeForget(account, handle or "", node)


async def setup() -> tuple[MemoryStore, Bus, list[Node], DeviceRecord, DeviceRecord]:
    store, bus = MemoryStore(), Bus()
    nodes = [Node(store, bus, f"n{i}") for i in (1, 2, 3)]
    for node in nodes:
        await node.start()
    await store.register_device("tel:+14155550100", "alice", DeviceRecord("dA", "", "a", "h", 1), 10)
    await store.register_device("tel:+14155550111", "bob", DeviceRecord("dB", "", "b", "h", 1), 10)
    alice, bob = await store.get_device("dA"), await store.get_device("dB")
    assert alice and bob
    return store, bus, nodes, alice, bob


def send_to_bob(message_id: str) -> SendRequest:
    return SendRequest(message_id, ["+14155550111"], [OutEnvelope("dB", b"hi")])


async def test_a_send_reaches_only_the_node_holding_the_recipient() -> None:
    _, bus, (n1, n2, _), alice, _ = await setup()
    bob = FakeConnection()
    await n2.hub.attach("dB", bob)
    bus.received.clear()
    await n1.hub.send(alice, send_to_bob("m1"))
    await n1.hub.send(alice, send_to_bob("m2"))
    assert bob.pushed == [1, 2]
    assert {node for node, _ in bus.received} == {"n2"}  # n3 saw nothing


async def test_connecting_on_another_node_closes_the_stale_connection() -> None:
    _, _, (n1, n2, _), _, _ = await setup()
    old, new = FakeConnection(), FakeConnection()
    await n1.hub.attach("dB", old)
    await n2.hub.attach("dB", new)
    assert old.closed and not new.closed
    assert n1.hub.connected == 0 and n2.hub.connected == 1


async def test_unlinking_on_one_node_closes_the_connection_on_another() -> None:
    _, _, (n1, n2, _), _, _ = await setup()
    bob = FakeConnection()
    await n2.hub.attach("dB", bob)
    n1.hub.disconnect("dB")
    assert bob.closed


async def test_a_change_on_one_node_drops_the_account_from_every_cache() -> None:
    store, _, (n1, n2, _), _, _ = await setup()
    assert (await n1.directory.account("bob")).device_ids == ("dB",)  # cached on node 1
    await store.register_device("tel:+14155550111", "bob", DeviceRecord("dB2", "", "b2", "h", 2), 10)
    assert (await n1.directory.account("bob")).device_ids == ("dB",)  # (stale: nobody said)
    await n2.directory.unlink("bob", "dB")  # on node 2: tells every node
    assert (await n1.directory.account("bob")).device_ids == ("dB2",)


async def test_a_broker_reconnect_makes_every_connection_read_its_mailbox() -> None:
    _, _, (_, n2, _), _, _ = await setup()
    bob = FakeConnection()
    await n2.hub.attach("dB", bob)
    n2.hub.on_broker_resync()
    assert bob.pokes == 1
