"""Runs the server under uvicorn: the real ASGI server, with uvloop and httptools."""

from __future__ import annotations

import uvicorn

from parley.server import logs
from parley.server.app import build_app
from parley.server.config import ServerConfig
from parley.wire import MAX_FRAME_BYTES


def serve(config: ServerConfig) -> None:
    logs.configure(config.log_format, config.node_id)
    app = build_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        # The sans-I/O websockets protocol: the fastest of uvicorn's WebSocket stacks.
        ws="websockets-sansio",
        # Bodies are ciphertext, which does not compress; deflate would only cost CPU and
        # a compressor's memory per connection.
        ws_per_message_deflate=False,
        ws_max_size=MAX_FRAME_BYTES,
        ws_ping_interval=20.0,  # detects half-open connections from the server side
        ws_ping_timeout=20.0,
        log_config=None,  # ours (logs.configure): text or JSON lines, the same for every logger
        log_level="info",
        access_log=False,  # addresses and paths only, but per request is noise at scale
        lifespan="on",
        # SIGTERM: stop accepting, close connections (devices reconnect to another node),
        # commit what is queued, then exit.
        timeout_graceful_shutdown=int(config.drain_timeout_s),
    )
