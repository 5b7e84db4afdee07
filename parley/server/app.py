"""Assembles the server: store, carrier, directory, hub, HTTP and WebSocket routes.

Dependencies are built here once and passed down through constructors; nothing below
reaches for a global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from parley.carrier.base import SmsGateway
from parley.carrier.kannel import KannelGateway
from parley.carrier.simulator import CarrierSimulator
from parley.carrier.smpp import SmppGateway
from parley.errors import ApiError
from parley.server.broker import Broker, RedisBroker
from parley.server.config import ServerConfig
from parley.server.directory import Directory
from parley.server.http_api import Api, error_response
from parley.server.hub import Hub
from parley.server.keys import KeyDirectory
from parley.server.leaving import Exits, LeftSigner
from parley.server.leaving_api import LeavingApi
from parley.server.limits import Limiter
from parley.server.metrics import CONTENT_TYPE_LATEST, CountingGateway, Metrics
from parley.server.openapi import openapi_document
from parley.server.sms import SmsService
from parley.server.ws import DeviceConnection, serve_device
from parley.store.base import Store
from parley.store.factory import store_for
from parley.store.postgres import PostgresStore
from parley.wire import ErrorBody, ErrorInfo, NodeForget, json_encode

log = logging.getLogger("parley.server")

SMS_SENDER = "Parley"  # the alphanumeric sender id codes come from


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def make_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(12)


def load_or_create_secret(path: str) -> bytes:
    """The server's own secret (keys code hashes), made once and kept private."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        secret = secrets.token_bytes(32)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secret)
        return secret


def build_app(
    config: ServerConfig,
    store: Store | None = None,
    gateway: SmsGateway | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    metrics: Metrics | None = None,
    broker: Broker | None = None,
) -> Starlette:
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    store = store or store_for(config.database, config.database_path)
    metrics = metrics or Metrics()
    if broker is None and config.broker:
        broker = RedisBroker(
            config.broker, config.node_id, config.broker_prefix, lambda where: metrics.errors.labels(where).inc()
        )
    gateway = gateway or build_gateway(config, clock)
    simulator = gateway if isinstance(gateway, CarrierSimulator) else None
    kannel_secret = config.carrier_secret if isinstance(gateway, KannelGateway) else None
    gateway = CountingGateway(gateway, metrics)
    limiter = Limiter(clock, enabled=config.rate_limits)
    secret = load_or_create_secret(config.secret_path)
    key_directory = KeyDirectory(store, limiter)

    def directory_changed(account_id: str, handle: str | None) -> None:
        if broker is not None:
            broker.to_all(NodeForget(account_id, handle or "", broker.node_id))

    lease_ms = int(config.lease_days * 86_400_000)
    directory = Directory(
        store, gateway, limiter, key_directory, secret, clock, make_id, SMS_SENDER, directory_changed, lease_ms
    )
    hub = Hub(store, directory, clock, metrics, broker)
    signer = LeftSigner(config.left_key_path, secret)
    exits = Exits(
        store,
        directory,
        hub,
        signer,
        clock,
        int(config.liveness_s * 1000),
        lease_ms,
        int(config.reproof_days * 86_400_000),
        int(config.reproof_answer_s * 1000),
    )
    sms = SmsService(store, directory, hub, gateway, clock, make_id, limiter, exits, SMS_SENDER)
    api = Api(
        directory, hub, key_directory, store, clock, gateway.name, simulator, sms, kannel_secret, signer.public_key
    )
    leaving_api = LeavingApi(exits, simulator, signer.public_key, config.carrier_secret or None)
    metrics.sample(
        lambda: hub.connected,
        lambda: store.pending_writes,
        lambda: broker.pending if isinstance(broker, RedisBroker) else 0,
    )
    state = {"draining": False}

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve_device(websocket, directory, hub, store, clock, config.push_window, metrics)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def healthz(request: Request) -> Response:
        """Liveness: the process is up and serving HTTP."""
        return JSONResponse({"ok": True, "connected_devices": hub.connected})

    async def readyz(request: Request) -> Response:
        """Readiness: send traffic here (the store answers, the broker is connected)."""
        problems = []
        if state["draining"]:
            problems.append("shutting down")
        try:
            await asyncio.wait_for(store.ping(), 2.0)
        except Exception as error:
            problems.append(f"store: {type(error).__name__}")
        if broker is not None and not broker.connected:
            problems.append("broker: disconnected")
        body = {"ready": not problems, "problems": problems, "node": config.node_id}
        return JSONResponse(body, status_code=503 if problems else 200)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def expire_loop() -> None:
        ttl_ms = int(config.message_ttl_days * 86_400_000)
        while True:
            dropped = await store.expire(clock() - ttl_ms)
            if dropped:
                log.info("expired %d queued envelopes older than %s days", dropped, config.message_ttl_days)
            await asyncio.sleep(config.expiry_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if isinstance(store, PostgresStore):
            directory.use_secret(await store.server_secret())
        if broker is not None:
            await broker.start(hub.on_node_frame, hub.on_broker_resync)
        await sms.start()
        await exits.start()
        expiry = asyncio.create_task(expire_loop())
        log.info("node %s ready (%s store%s)", config.node_id, type(store).__name__, ", broker" if broker else "")
        try:
            yield
        finally:
            state["draining"] = True
            closed = hub.close_all(lambda connection: _going_away(connection))
            if closed:
                log.info("closing %d connections for shutdown", closed)
                await _wait_until(lambda: hub.connected == 0, config.drain_timeout_s)
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            await exits.stop()
            await sms.stop()
            if broker is not None:
                await broker.stop()
            await store.close()  # commits whatever sends are still queued
            log.info("node %s stopped", config.node_id)

    handlers = {**api.handlers(), **leaving_api.handlers()}
    routes: list[Route | WebSocketRoute] = []
    for path in dict.fromkeys(path for _, path in handlers):
        methods = {method: handler for (method, route_path), handler in handlers.items() if route_path == path}
        routes.append(Route(path, _dispatch(methods), methods=list(methods)))
    routes += [
        Route("/openapi.json", openapi),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/deregister", leaving_api.page, methods=["GET", "POST"]),
        WebSocketRoute("/v1/ws", websocket_endpoint),
    ]

    async def on_api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        metrics.errors.labels("http").inc()
        body = ErrorBody(ErrorInfo(code="internal", message="the server failed; it has been logged"))
        return Response(json_encode(body), status_code=500, media_type="application/json")

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: on_api_error, Exception: on_unexpected},
    )


def build_gateway(config: ServerConfig, clock: Callable[[], int]) -> SmsGateway:
    """The SMS gateway ``config.carrier`` names: sim (default), kannel or smpp."""
    if config.carrier == "sim":
        return CarrierSimulator(clock, lambda: make_id("s"))
    if config.carrier == "kannel":
        if not config.carrier_secret or not config.kannel_username:
            raise ValueError("--carrier kannel needs --carrier-secret and --kannel-username/--kannel-password")
        callback = config.callback_url or f"http://{config.host}:{config.port}"
        return KannelGateway(
            config.kannel_sendsms_url,
            config.kannel_username,
            config.kannel_password,
            callback,
            config.carrier_secret,
            clock,
        )
    if config.carrier == "smpp":
        if not config.smpp_system_id:
            raise ValueError("--carrier smpp needs --smpp-system-id (and usually --smpp-password)")
        return SmppGateway(
            config.smpp_host,
            config.smpp_port,
            config.smpp_system_id,
            config.smpp_password,
            clock,
            system_type=config.smpp_system_type,
        )
    raise ValueError(f"unknown carrier {config.carrier!r}; choose sim, kannel or smpp")


def _going_away(connection: object) -> None:
    if isinstance(connection, DeviceConnection):
        connection.close_going_away()


async def _wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    # Polled: connections end on their own tasks, and this runs once, at shutdown.
    while not done() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _dispatch(
    methods: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        handler = methods.get(request.method) or methods["GET"]  # HEAD is answered as GET
        return await handler(request)

    return endpoint
