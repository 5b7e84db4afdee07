"""The first schema: accounts, handles, devices, codes, idempotency keys, mailboxes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE handles (
    handle TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id)
);
CREATE INDEX handles_by_account ON handles(account_id);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    identity_key TEXT NOT NULL DEFAULT '',
    signing_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX devices_by_account ON devices(account_id);
CREATE TABLE codes (
    handle TEXT NOT NULL,
    purpose TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    attempts_left INTEGER NOT NULL,
    PRIMARY KEY (handle, purpose)
);
CREATE TABLE sent_ids (
    sender_device TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (sender_device, message_id)
);
CREATE INDEX sent_ids_by_time ON sent_ids(created_at_ms);
-- One counter row per device, locked by every transaction that writes to its mailbox:
-- seqs are handed out in commit order, contiguously, and never reused.
CREATE TABLE mailbox_heads (
    device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE mailbox (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sender_account TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    sender_handle TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX mailbox_by_time ON mailbox(sent_at_ms);
-- The deployment's own secret (it keys code hashes): one for every node, made here once.
CREATE TABLE server_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret BYTEA NOT NULL
);
"""

TABLES = ["server_secret", "mailbox", "mailbox_heads", "sent_ids", "codes", "devices", "handles", "accounts"]


def upgrade() -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)
    op.execute(sa.text("INSERT INTO server_secret VALUES (1, :secret)").bindparams(secret=secrets.token_bytes(32)))


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE {table}")
