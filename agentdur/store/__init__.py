"""Persistence: the store interface and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from agentdur.errors import ConfigurationError
from agentdur.store.base import FINISHED, UNFINISHED, RunInfo, SqlStore, StepInfo
from agentdur.store.postgres import PostgresStore, mask_password
from agentdur.store.sqlite import SqliteStore

__all__ = [
    "FINISHED",
    "UNFINISHED",
    "PostgresStore",
    "RunInfo",
    "SqlStore",
    "SqliteStore",
    "StepInfo",
    "mask_password",
    "open_store",
]


def open_store(url: str) -> SqlStore:
    """Make the store for a database URL (no connection is opened yet).

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`,
    `postgresql://user:password@host:port/database` (also `postgres://`).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ConfigurationError(
                f"database URL {url!r} names no file: use sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return PostgresStore(url.replace("postgresql+psycopg://", "postgresql://", 1))
    raise ConfigurationError(
        f"unsupported database URL {mask_password(url)!r}: use sqlite:///path.db or "
        "postgresql://user:password@host:port/database"
    )
