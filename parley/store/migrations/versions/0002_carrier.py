"""The carrier path: the inbox key inbound SMS are sealed to, fallback watches, the SMS outbox.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = """
ALTER TABLE devices ADD COLUMN inbox_key TEXT NOT NULL DEFAULT '';
CREATE TABLE fallbacks (
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient_account TEXT NOT NULL,
    recipient_handle TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (sender_account, message_id, recipient_account)
);
CREATE INDEX fallbacks_by_deadline ON fallbacks(state, deadline_ms);
CREATE TABLE sms_outbox (
    sms_id TEXT PRIMARY KEY,
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    carrier_ref TEXT NOT NULL,
    error TEXT NOT NULL,
    UNIQUE (sender_account, message_id, to_number)
);
CREATE INDEX sms_outbox_due ON sms_outbox(state, next_attempt_ms);
CREATE INDEX sms_outbox_by_ref ON sms_outbox(carrier_ref);
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE sms_outbox")
    op.execute("DROP TABLE fallbacks")
    op.execute("ALTER TABLE devices DROP COLUMN inbox_key")
