"""Alembic's entry point. Parley always hands it an open connection (see
:func:`parley.store.pg_migrate.upgrade`), so there is no engine or ini file here."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
