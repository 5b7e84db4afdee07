"""The server's settings, with the embedded defaults."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field

from parley.store.factory import database_name

DEFAULT_DATA_DIR = os.path.join(".", "parley-data")


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


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
    database: str = ""  # "" = SQLite in data_dir; or postgresql://user@host:port/name
    broker: str = ""  # "" = one node; or redis://host:port/db to run several
    node_id: str = field(default_factory=default_node_id)
    log_format: str = "text"  # or "json": one object per line, for log collectors
    drain_timeout_s: float = 10.0  # on SIGTERM: how long connections get to close
    # --- leaving Parley (see docs/architecture.md, "Ways out") ---
    liveness_s: float = 3600.0  # overdue messages from 2+ senders this long: stop advertising
    lease_days: float = 14.0  # a device's registration lasts this long unless its client renews it
    reproof_days: float = 30.0  # a phone handle proves it still holds the SIM this often
    reproof_answer_s: float = 600.0  # ... answering its silent code within this

    @property
    def database_path(self) -> str:
        return os.path.join(self.data_dir, "parley.db")

    @property
    def secret_path(self) -> str:
        return os.path.join(self.data_dir, "server.secret")

    @property
    def broker_prefix(self) -> str:
        """Nodes sharing one database form one deployment and share channels; another
        deployment on the same broker uses other channels."""
        return f"parley:{database_name(self.database) or 'sqlite'}"

    @property
    def left_key_path(self) -> str:
        return os.path.join(self.data_dir, "left-signing.key")
