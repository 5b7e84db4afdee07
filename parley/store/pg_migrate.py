"""Schema migrations of the PostgreSQL store, with Alembic.

``parley migrate --database URL`` and every ``parley serve`` on PostgreSQL call
:func:`upgrade`. Several nodes may start at once: a transaction-scoped advisory lock
makes them take turns, so the schema is migrated once and the others find it current.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = "parley.store:migrations"
MIGRATION_LOCK = 0x7061726C6579  # "parley": one advisory lock key for every node


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy names the asyncpg driver."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql+asyncpg://{rest}"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def head() -> str:
    """The schema version this Parley needs."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    assert len(heads) == 1, "the migrations must form one line"
    return heads[0]


async def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database's schema up to :func:`head`; return (before, after)."""
    engine = create_async_engine(sqlalchemy_url(url), poolclass=None)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            return await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


async def current(url: str) -> str | None:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> tuple[str | None, str]:
    before = _current(connection)
    target = head()
    known = {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}
    if before is not None and before not in known:
        raise RuntimeError(f"database schema {before} is newer than this Parley ({target})")
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    return before, target
