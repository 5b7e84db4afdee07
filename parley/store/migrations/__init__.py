"""Alembic migrations of the PostgreSQL store (``parley migrate`` runs them; so does
``parley serve`` at start). One file per schema version under ``versions/``."""
