"""A device's local state: its credential, keys and history, in ``$PARLEY_HOME/<profile>/``.

The folder is 0700 and the files 0600: the credential in them is as good as the device.
The Olm account and sessions are stored as vodozemac pickles, encrypted and
authenticated under a random 32-byte key in ``pickle.key`` (0600) beside the database.
History is keyed by (sender_device, message_id), so an envelope delivered twice (after a
crash between storing and acking) is shown once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
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
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'notice')),
    sender_handle TEXT NOT NULL,
    recipients TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (sender_device, message_id)
);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(sent_at_ms);
CREATE TABLE IF NOT EXISTS olm_sessions (
    peer_key TEXT NOT NULL,
    session_id TEXT NOT NULL,
    pickle TEXT NOT NULL,
    used_ms INTEGER NOT NULL,
    PRIMARY KEY (peer_key, session_id)
);
CREATE TABLE IF NOT EXISTS devices_seen (
    handle TEXT NOT NULL,
    device_id TEXT NOT NULL,
    identity_key TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    PRIMARY KEY (handle, device_id)
);
CREATE INDEX IF NOT EXISTS devices_seen_by_id ON devices_seen(device_id);
CREATE TABLE IF NOT EXISTS sent_to (
    message_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (message_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS control_seen (
    sender_device TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (sender_device, message_id)
);
CREATE TABLE IF NOT EXISTS verified (handle TEXT PRIMARY KEY, identity_keys TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS read_marks (
    message_id TEXT PRIMARY KEY,
    read_at_ms INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS repairs (
    at_ms INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS repairs_by_check ON repairs(check_name, at_ms);
"""
PICKLE_KEY_FILE = "pickle.key"

# States of a message this account sent, in the order they can only move forward. "held":
# written, but not sent, because a verified contact's keys changed. The carrier path's
# come after "delivered": a late "delivered" never hides "Sent as SMS". "sms_due": the
# fallback window passed and this device has yet to hand the text over.
OUT_STATES = (
    "held",
    "sending",
    "sent",
    "delivered",
    "read",
    "sms_due",
    "sms_pending",
    "sms_sent",
    "sms_delivered",
    "sms_failed",
)
# Incoming messages not yet read: their ids are not in ``read_marks``.
UNREAD_STATES = ("received", "received_sms")
MAX_REPAIRS_KEPT = 200
# An incoming message that could not be decrypted is kept as a placeholder in one of these
# states until the sender's device resends it, which fills the placeholder in.
PLACEHOLDER_STATES = ("undecryptable", "resend_requested")
COULD_NOT_DECRYPT = "could not decrypt"


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


def conversation_key(participants: set[str]) -> str:
    return ",".join(sorted(participants))


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
    def exists(cls, name: str) -> bool:
        return os.path.exists(os.path.join(profile_dir(name), "state.db"))

    @classmethod
    def open(cls, name: str, registered: bool = True) -> Profile:
        """Open a profile; unless ``registered`` is False (its history only: export,
        import), it must hold a registered device."""
        path = profile_dir(name)
        database = os.path.join(path, "state.db")
        if not os.path.exists(database):
            raise ProfileError(f"no profile {name!r} in {home()}; register a device first (parley register)")
        profile = cls._connect(name, path, database)
        if registered and profile.get("credential") is None:
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

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the sibling modules that keep keys and trust in it."""
        return self._db

    def pickle_key(self, create: bool = False) -> bytes:
        """The 32-byte key the Olm pickles are encrypted under, from a 0600 file."""
        path = os.path.join(self.path, PICKLE_KEY_FILE)
        if create and not os.path.exists(path):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(secrets.token_bytes(32))
                file.flush()
                os.fsync(file.fileno())
        try:
            with open(path, "rb") as file:
                key = file.read()
        except FileNotFoundError:
            raise ProfileError(f"profile {self.name!r} has lost its key file {path}; register again") from None
        if len(key) != 32:
            raise ProfileError(f"profile {self.name!r} has a damaged key file {path}; register again")
        return key

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

    def set_out_state(self, message_id: str, state: str) -> None:
        """Set an outgoing message's state even backwards (the server said no SMS needed)."""
        self._db.execute(
            "UPDATE messages SET state = ? WHERE message_id = ? AND direction = 'out'", (state, message_id)
        )

    def fill_placeholder(self, message: StoredMessage) -> bool:
        """Put a resent message in the place of its "could not decrypt" placeholder, or
        store it if there is none; return False if the message was already there."""
        cursor = self._db.execute(
            f"UPDATE messages SET conversation = ?, direction = ?, sender_handle = ?, recipients = ?, text = ?,"
            f" sent_at_ms = ?, state = ? WHERE sender_device = ? AND message_id = ?"
            f" AND state IN ({','.join('?' * len(PLACEHOLDER_STATES))})",
            (
                message.conversation,
                message.direction,
                message.sender_handle,
                json.dumps(message.recipients),
                message.text,
                message.sent_at_ms,
                message.state,
                message.sender_device,
                message.message_id,
                *PLACEHOLDER_STATES,
            ),
        )
        return cursor.rowcount > 0 or self.add_message(message)

    def get_message(self, sender_device: str, message_id: str) -> StoredMessage | None:
        row = self._db.execute(
            "SELECT * FROM messages WHERE sender_device = ? AND message_id = ?", (sender_device, message_id)
        ).fetchone()
        return _message(row) if row else None

    def set_state(self, sender_device: str, message_id: str, state: str) -> None:
        self._db.execute(
            "UPDATE messages SET state = ? WHERE sender_device = ? AND message_id = ?",
            (state, sender_device, message_id),
        )

    def record_targets(self, message_id: str, device_ids: list[str]) -> None:
        """The devices a message of this device was sealed for (who may ask for it again)."""
        self._db.executemany("INSERT OR IGNORE INTO sent_to VALUES (?, ?)", [(message_id, d) for d in device_ids])

    def was_target(self, message_id: str, device_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sent_to WHERE message_id = ? AND device_id = ?", (message_id, device_id)
        ).fetchone()
        return row is not None

    def first_sight_of_control(self, sender_device: str, message_id: str) -> bool:
        """Record a control envelope; False if it was processed before (a redelivery)."""
        cursor = self._db.execute("INSERT OR IGNORE INTO control_seen VALUES (?, ?)", (sender_device, message_id))
        return cursor.rowcount > 0

    def in_state(self, state: str) -> list[StoredMessage]:
        rows = self._db.execute("SELECT * FROM messages WHERE state = ? ORDER BY sent_at_ms", (state,)).fetchall()
        return [_message(row) for row in rows]

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
            "SELECT * FROM messages WHERE sender_device = ? AND state IN ('held', 'sending') ORDER BY sent_at_ms",
            (device_id,),
        ).fetchall()
        return [_message(row) for row in rows]

    # --- read state (parley.client.receipts) ---

    def unread(self, conversation: str | None = None) -> list[StoredMessage]:
        """Incoming messages not yet read on any of this person's devices."""
        query = (
            f"SELECT * FROM messages WHERE direction = 'in' AND state IN ({','.join('?' * len(UNREAD_STATES))})"
            " AND message_id NOT IN (SELECT message_id FROM read_marks)"
        )
        args: tuple[str, ...] = UNREAD_STATES
        if conversation is not None:
            query += " AND conversation = ?"
            args = (*args, conversation)
        rows = self._db.execute(query + " ORDER BY sent_at_ms, message_id", args).fetchall()
        return [_message(row) for row in rows]

    def mark_read(self, message_ids: list[str], at_ms: int, synced: bool) -> list[str]:
        """Record messages as read; return the ids that were not read before."""
        marked = []
        with self.batch():
            for message_id in message_ids:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO read_marks VALUES (?, ?, ?)", (message_id, at_ms, int(synced))
                )
                if cursor.rowcount:
                    marked.append(message_id)
        return marked

    def read_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT message_id FROM read_marks")}

    def unsynced_reads(self) -> list[tuple[StoredMessage, int]]:
        """Reads this device recorded but has not yet told the other devices about (a
        crash, or no connection): each message with the time it was read."""
        rows = self._db.execute(
            "SELECT m.*, r.read_at_ms FROM read_marks r JOIN messages m ON m.message_id = r.message_id"
            " WHERE r.synced = 0 AND m.direction = 'in' ORDER BY r.read_at_ms"
        ).fetchall()
        return [(_message(row[:9]), row[9]) for row in rows]

    def reads_synced(self, message_ids: list[str]) -> None:
        self._db.executemany("UPDATE read_marks SET synced = 1 WHERE message_id = ?", [(m,) for m in message_ids])

    def advance_sent_to(self, message_ids: list[str], state: str, recipient: str) -> list[str]:
        """As :meth:`advance_state`, only for messages that were addressed to ``recipient``
        (a read receipt moves only what its sender was sent)."""
        addressed = [
            message_id
            for message_id in message_ids
            if self._db.execute(
                "SELECT 1 FROM messages WHERE message_id = ? AND direction = 'out' AND instr(recipients, ?) > 0",
                (message_id, json.dumps(recipient)),
            ).fetchone()
        ]
        return self.advance_state(addressed, state) if addressed else []

    # --- the repair log (parley.client.doctor) ---

    def log_repair(self, at_ms: int, check: str, outcome: str, detail: str) -> None:
        """Record what a check found and did; never message text or keys."""
        with self.batch():
            self._db.execute("INSERT INTO repairs VALUES (?, ?, ?, ?)", (at_ms, check, outcome, detail))
            self._db.execute(
                "DELETE FROM repairs WHERE rowid NOT IN (SELECT rowid FROM repairs ORDER BY at_ms DESC, rowid DESC"
                " LIMIT ?)",
                (MAX_REPAIRS_KEPT,),
            )

    def repairs(self, limit: int = 20) -> list[tuple[int, str, str, str]]:
        """The newest entries of the repair log: (at_ms, check, outcome, detail)."""
        rows = self._db.execute(
            "SELECT at_ms, check_name, outcome, detail FROM repairs ORDER BY at_ms DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(int(a), str(c), str(o), str(d)) for a, c, o, d in rows]

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
