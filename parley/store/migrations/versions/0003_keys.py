"""Public halves of end-to-end keys: one-time keys (deleted when claimed) and fallback keys.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE one_time_keys (
    upload_order BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    key TEXT NOT NULL,
    signature TEXT NOT NULL,
    UNIQUE (device_id, key_id)
);
CREATE INDEX one_time_keys_by_device ON one_time_keys(device_id, upload_order);
CREATE TABLE fallback_keys (
    device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    key TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE fallback_keys")
    op.execute("DROP TABLE one_time_keys")
