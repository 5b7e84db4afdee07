"""A device's local state: its credential and its history, in ``$PARLEY_HOME/<profile>/``.

The folder is 0700 and the database 0600: the credential in it is as good as the device.
History is keyed by (sender_device, message_id), so an envelope delivered twice (after a
crash between storing and acking) is shown once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from parley.errors import ProfileError

DEFAULT_HOME = os.path.join(os.path.expanduser("~"), ".parley")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    sender_device TEXT NOT NULL,
    message_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    sender_handle TEXT NOT NULL,
    recipients TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (sender_device, message_id)
);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(sent_at_ms);
"""

# States of a message this account sent, in the order they can only move forward. The
# carrier path's come after "delivered": a late "delivered" never hides "Sent as SMS".
# "sms_due": the fallback window passed and this device has yet to hand the text over.
OUT_STATES = (
    "sending",
    "sent",
    "delivered",
    "sms_due",
    "sms_pending",
    "sms_sent",
    "sms_delivered",
    "sms_failed",
)


@dataclass(frozen=True)
class StoredMessage:
    sender_device: str
    message_id: str
    conversation: str
    direction: str
    sender_handle: str
    recipients: list[str]
    text: str
    sent_at_ms: int
    state: str


def home() -> str:
    return os.environ.get("PARLEY_HOME") or DEFAULT_HOME


def profile_dir(name: str) -> str:
    if not _NAME.match(name):
        raise ProfileError(f"profile names use letters, digits, '.', '_' and '-': {name!r}")
    return os.path.join(home(), name)


class Profile:
    def __init__(self, name: str, db: sqlite3.Connection, path: str) -> None:
        self.name = name
        self.path = path
        self._db = db

    @classmethod
    def create(cls, name: str) -> Profile:
        path = profile_dir(name)
        os.makedirs(home(), mode=0o700, exist_ok=True)
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        database = os.path.join(path, "state.db")
        descriptor = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(descriptor)
        os.chmod(database, 0o600)
        return cls._connect(name, path, database)

    @classmethod
    def open(cls, name: str) -> Profile:
        path = profile_dir(name)
        database = os.path.join(path, "state.db")
        if not os.path.exists(database):
            raise ProfileError(f"no profile {name!r} in {home()}; register a device first (parley register)")
        profile = cls._connect(name, path, database)
        if profile.get("credential") is None:
            raise ProfileError(f"profile {name!r} has no registered device; run parley register again")
        return profile

    @classmethod
    def _connect(cls, name: str, path: str, database: str) -> Profile:
        try:
            db = sqlite3.connect(database, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise ProfileError(f"profile {name!r} cannot be read ({error}): {database}") from None
        return cls(name, db, path)

    def close(self) -> None:
        self._db.close()

    # --- settings ---

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise ProfileError(f"profile {self.name!r} lacks {key!r}; register again")
        return value

    def set_many(self, values: dict[str, str]) -> None:
        with self.batch():
            self._db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", values.items())

    # --- history ---

    def add_message(self, message: StoredMessage) -> bool:
        """Store a message once; return False if it was already there."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.sender_device,
                message.message_id,
                message.conversation,
                message.direction,
                message.sender_handle,
                json.dumps(message.recipients),
                message.text,
                message.sent_at_ms,
                message.state,
            ),
        )
        return cursor.rowcount > 0

    def advance_state(self, message_ids: list[str], state: str) -> list[str]:
        """Move outgoing messages forward to ``state`` (never back); return those moved."""
        rank = OUT_STATES.index(state)
        earlier = OUT_STATES[:rank]
        moved = []
        with self.batch():
            for message_id in message_ids:
                cursor = self._db.execute(
                    f"UPDATE messages SET state = ? WHERE message_id = ? AND direction = 'out'"
                    f" AND state IN ({','.join('?' * len(earlier))})",
                    (state, message_id, *earlier),
                )
                if cursor.rowcount:
                    moved.append(message_id)
        return moved

    def sms_due(self) -> list[StoredMessage]:
        """Messages this account sent whose fallback window passed: to send as SMS now."""
        rows = self._db.execute(
            "SELECT * FROM messages WHERE direction = 'out' AND state = 'sms_due' ORDER BY sent_at_ms"
        ).fetchall()
        return [_message(row) for row in rows]

    def set_state(self, message_id: str, state: str) -> None:
        """Set an outgoing message's state even backwards (the server said no SMS needed)."""
        self._db.execute(
            "UPDATE messages SET state = ? WHERE message_id = ? AND direction = 'out'", (state, message_id)
        )

    def messages(self, conversation: str | None = None) -> list[StoredMessage]:
        query = "SELECT * FROM messages"
        args: tuple[str, ...] = ()
        if conversation is not None:
            query += " WHERE conversation = ?"
            args = (conversation,)
        rows = self._db.execute(query + " ORDER BY sent_at_ms, message_id", args).fetchall()
        return [_message(row) for row in rows]

    def outbox(self) -> list[StoredMessage]:
        """Messages this device wrote but the server has not confirmed (e.g. after a crash)."""
        device_id = self.require("device_id")
        rows = self._db.execute(
            "SELECT * FROM messages WHERE sender_device = ? AND state = 'sending' ORDER BY sent_at_ms", (device_id,)
        ).fetchall()
        return [_message(row) for row in rows]

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction (one fsync) around many writes; inside another, joins it."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _message(row: tuple[str, str, str, str, str, str, str, int, str]) -> StoredMessage:
    sender_device, message_id, conversation, direction, sender_handle, recipients, text, sent_at_ms, state = row
    return StoredMessage(
        sender_device,
        message_id,
        conversation,
        direction,
        sender_handle,
        json.loads(recipients),
        text,
        sent_at_ms,
        state,
    )
