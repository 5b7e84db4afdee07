"""Prometheus metrics of one server node, in a registry of its own (no global default
registry: tests and benchmarks build several apps in one process).

Served at ``/metrics``. Counts and ids only: no handle, no message content.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from parley.carrier.base import CarrierSink, OutboundSms, SmsGateway

__all__ = ["CONTENT_TYPE_LATEST", "CountingGateway", "Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("parley_connections", "Device WebSocket connections open on this node", registry=r)
        self.messages = Counter("parley_messages", "Messages stored (duplicates not counted)", registry=r)
        self.duplicates = Counter("parley_duplicate_sends", "Sends of an already-stored message id", registry=r)
        self.envelopes_stored = Counter(
            "parley_envelopes_stored", "Envelopes written to mailboxes", ["kind"], registry=r
        )
        self.envelopes_pushed = Counter("parley_envelopes_pushed", "Envelopes pushed to live connections", registry=r)
        self.acked = Counter("parley_envelopes_acked", "Envelopes removed by device acks", registry=r)
        self.sms_sent = Counter("parley_sms_sent", "SMS handed to the carrier", ["carrier"], registry=r)
        self.errors = Counter("parley_errors", "Errors, by where they happened", ["where"], registry=r)
        self.queue_depth = Gauge(
            "parley_store_queue_depth", "Mailbox writes waiting for the next group commit", registry=r
        )
        self.broker_queue = Gauge("parley_broker_queue_depth", "Broker messages waiting to be published", registry=r)
        self.broker_frames = Counter(
            "parley_broker_frames", "Frames to and from other nodes", ["direction"], registry=r
        )
        self.commit_seconds = Histogram(
            "parley_commit_seconds",
            "Time to commit one send to every target mailbox",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )

    def sample(self, connections: Callable[[], int], queue_depth: Callable[[], int], broker: Callable[[], int]) -> None:
        """Read these gauges from their owners whenever /metrics is scraped."""
        self.connections.set_function(lambda: float(connections()))
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.broker_queue.set_function(lambda: float(broker()))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountingGateway:
    """Counts every SMS any part of the server hands to the gateway (``parley_sms_sent``),
    so code that sends SMS needs nothing more than the gateway it was given."""

    def __init__(self, inner: SmsGateway, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._sent = metrics.sms_sent.labels(carrier=inner.name)

    async def start(self, sink: CarrierSink) -> None:
        await self.inner.start(sink)

    async def stop(self) -> None:
        await self.inner.stop()

    async def send(self, sms: OutboundSms) -> str:
        reference = await self.inner.send(sms)
        self._sent.inc()
        return reference
