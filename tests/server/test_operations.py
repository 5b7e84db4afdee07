"""Operations: health and readiness, Prometheus metrics in a registry of each app's own,
JSON logs without message content."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette

from parley.server.app import build_app
from parley.server.config import ServerConfig
from parley.server.logs import JsonFormatter
from parley.server.metrics import Metrics
from parley.store.memory import MemoryStore
from parley.wire import NodeFrame


class AwayBroker:
    """A broker that is never connected (as when Redis is down)."""

    node_id = "n"
    connected = False

    async def start(self, on_frame: Callable[[NodeFrame], None], on_resync: Callable[[], None]) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def watch(self, device_id: str) -> None:
        pass

    def unwatch(self, device_id: str) -> None:
        pass

    def to_device(self, device_id: str, frame: NodeFrame) -> None:
        pass

    def to_all(self, frame: NodeFrame) -> None:
        pass


def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=str(tmp_path / "data"), node_id="test-node")


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as client:
            yield client


async def test_healthz_readyz_and_metrics(tmp_path: Path) -> None:
    app = build_app(config(tmp_path), store=MemoryStore())
    async with running(app) as client:
        assert (await client.get("/healthz")).json()["ok"] is True
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "problems": [], "node": "test-node"}
        assert (await client.post("/v1/codes", json={"handle": "+14155550100"})).status_code == 202
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        for name in ("parley_connections", "parley_messages_total", "parley_store_queue_depth", "parley_errors"):
            assert name in text
        assert 'parley_sms_sent_total{carrier="sim"} 1.0' in text


async def test_two_apps_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    first, second = Metrics(), Metrics()
    app1 = build_app(config(tmp_path / "1"), store=MemoryStore(), metrics=first)
    app2 = build_app(config(tmp_path / "2"), store=MemoryStore(), metrics=second)
    async with running(app1) as client1, running(app2):
        await client1.post("/v1/codes", json={"handle": "+14155550100"})
    assert first.sms_sent.labels(carrier="sim")._value.get() == 1
    assert second.sms_sent.labels(carrier="sim")._value.get() == 0


async def test_not_ready_while_the_broker_is_away(tmp_path: Path) -> None:
    app = build_app(config(tmp_path), store=MemoryStore(), broker=AwayBroker())
    async with running(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["problems"] == ["broker: disconnected"]
        assert (await client.get("/healthz")).status_code == 200  # alive all the same


def test_json_logs_are_one_object_per_line_with_fields() -> None:
    record = logging.LogRecord("parley.hub", logging.INFO, __file__, 1, "device %s acked", ("d1",), None)
    record.device_id = "d1"
    line = JsonFormatter("node-a").format(record)
    entry = json.loads(line)
    assert entry["msg"] == "device d1 acked" and entry["node"] == "node-a" and entry["device_id"] == "d1"
    assert entry["level"] == "info" and entry["logger"] == "parley.hub" and "\n" not in line
