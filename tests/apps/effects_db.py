"""Plain SQL on an agentdur database, the way a user checks it with sqlite3 or psql.

The effect and transaction tests read the ledger, the messages and the application's own
tables through a connection of their own (sqlite3 or psycopg), not through the store.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import psycopg


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql`, written with `?` placeholders and `{p}` before agentdur's table names
    (`FROM {p}effects`): on PostgreSQL they become `%s` and `agentdur.effects`."""
    if is_sqlite(url):
        lite = sqlite3.connect(sqlite_path(url), timeout=30)
        try:
            return [tuple(row) for row in lite.execute(sql.format(p=""), params).fetchall()]
        finally:
            lite.close()
    text = sql.format(p="agentdur.").replace("?", "%s")
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(text, params).fetchall()]  # type: ignore[call-overload]


def execute(url: str, sql: str) -> None:
    """Run one statement (DDL for the application's tables) in its own transaction."""
    if is_sqlite(url):
        lite = sqlite3.connect(sqlite_path(url), timeout=30)
        try:
            lite.execute(sql)
            lite.commit()
        finally:
            lite.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def _json(url: str, value: Any) -> Any:
    """A JSON column as Python data (TEXT on SQLite, JSONB decoded by psycopg)."""
    return json.loads(value) if is_sqlite(url) and value is not None else value


def ledger(url: str) -> list[tuple[str, str, int, str, str, Any]]:
    """Every effect ledger row: (key, run_id, step_index, tool, status, result)."""
    rows = query(
        url,
        "SELECT idempotency_key, run_id, step_index, tool, status, result FROM {p}effects "
        "ORDER BY idempotency_key",
    )
    return [(r[0], r[1], r[2], r[3], r[4], _json(url, r[5])) for r in rows]


def messages(url: str, run_id: str) -> list[tuple[int, str, Any, bool]]:
    """A run's messages: (seq, topic, value, consumed)."""
    rows = query(
        url,
        "SELECT seq, topic, value, consumed FROM {p}messages WHERE run_id = ? ORDER BY seq",
        (run_id,),
    )
    return [(r[0], r[1], _json(url, r[2]), bool(r[3])) for r in rows]
