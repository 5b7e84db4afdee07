"""Which store a ``--database`` setting names."""

from __future__ import annotations

from parley.store.base import Store

POSTGRES_SCHEMES = ("postgres://", "postgresql://", "postgresql+asyncpg://")


def is_postgres(database: str) -> bool:
    return database.startswith(POSTGRES_SCHEMES)


def store_for(database: str, sqlite_path: str) -> Store:
    """The store for a database URL; empty means the embedded SQLite file."""
    if not database:
        from parley.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path)
    if is_postgres(database):
        from parley.store.postgres import PostgresStore

        return PostgresStore(database)
    raise ValueError("--database takes a postgresql://... URL (leave it out for SQLite in the data folder)")


def database_name(database: str) -> str:
    """The database's name in a PostgreSQL URL ("" for SQLite)."""
    if not is_postgres(database):
        return ""
    path = database.split("://", 1)[1].split("?", 1)[0]
    return path.rpartition("/")[2] if "/" in path else ""
