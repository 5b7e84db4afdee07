"""The server's settings, with the embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATA_DIR = os.path.join(".", "parley-data")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = DEFAULT_DATA_DIR
    carrier: str = "sim"
    rate_limits: bool = True  # off only for benchmarks that register thousands of devices
    message_ttl_days: float = 30.0  # queued envelopes older than this are dropped
    push_window: int = 1024  # envelopes in flight per connection
    expiry_interval_s: float = 3600.0
    # --- the carrier path (see docs/carrier.md) ---
    carrier_secret: str = ""  # shared secret gateway callbacks must carry (kannel)
    callback_url: str = ""  # this server as the gateway reaches it; default http://host:port
    kannel_sendsms_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    kannel_username: str = ""
    kannel_password: str = ""
    smpp_host: str = "127.0.0.1"
    smpp_port: int = 2775
    smpp_system_id: str = ""
    smpp_password: str = ""
    smpp_system_type: str = ""

    @property
    def database_path(self) -> str:
        return os.path.join(self.data_dir, "parley.db")

    @property
    def secret_path(self) -> str:
        return os.path.join(self.data_dir, "server.secret")
