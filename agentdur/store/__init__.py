"""Persistence: the store interface and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

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


def open_store(url: str, *, write_retry_seconds: float = 60.0) -> SqlStore:
    """Make the store for a database URL (no connection is opened yet).

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`,
    `postgresql://user:password@host:port/database` (also `postgres://`). A SQLite URL
    takes `?busy_timeout=SECONDS` (how long one attempt waits for another process's
    write lock, default 30) and `?synchronous=FULL|NORMAL|OFF` (default FULL).
    `write_retry_seconds` bounds how long a write is retried through database faults.
    """
    if url.startswith("sqlite:///"):
        path, _, query = url[len("sqlite:///") :].partition("?")
        if not path:
            raise ConfigurationError(
                f"database URL {url!r} names no file: use sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        options = _sqlite_options(url, query)
        return SqliteStore(path, write_retry_seconds=write_retry_seconds, **options)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return PostgresStore(
            url.replace("postgresql+psycopg://", "postgresql://", 1),
            write_retry_seconds=write_retry_seconds,
        )
    raise ConfigurationError(
        f"unsupported database URL {mask_password(url)!r}: use sqlite:///path.db or "
        "postgresql://user:password@host:port/database"
    )


def _sqlite_options(url: str, query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        if name == "busy_timeout":
            try:
                options[name] = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"busy_timeout in {url!r} must be a number of seconds, not {value!r}"
                ) from None
        elif name == "synchronous":
            options[name] = value.upper()
        else:
            raise ConfigurationError(
                f"unknown option {name!r} in SQLite URL {url!r}: use busy_timeout or synchronous"
            )
    return options
