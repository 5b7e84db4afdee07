"""Leaving Parley: registration leases, proofs of phone handles, overdue notes (the
liveness rule's evidence) and signed "left" records.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = """
ALTER TABLE devices ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
UPDATE devices SET lease_until_ms = created_at_ms + 1209600000;
CREATE INDEX devices_by_lease ON devices(lease_until_ms);
ALTER TABLE handles ADD COLUMN proven_at_ms BIGINT NOT NULL DEFAULT 0;
UPDATE handles SET proven_at_ms = a.created_at_ms FROM accounts a WHERE a.account_id = handles.account_id;
CREATE INDEX handles_by_proof ON handles(proven_at_ms);
CREATE TABLE overdue (
    recipient_account TEXT NOT NULL,
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    PRIMARY KEY (recipient_account, sender_account, message_id)
);
CREATE INDEX overdue_by_since ON overdue(since_ms);
CREATE TABLE left_handles (
    handle TEXT PRIMARY KEY,
    left_at_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    moved_to TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE left_handles")
    op.execute("DROP TABLE overdue")
    op.execute("ALTER TABLE handles DROP COLUMN proven_at_ms")
    op.execute("ALTER TABLE devices DROP COLUMN lease_until_ms")
