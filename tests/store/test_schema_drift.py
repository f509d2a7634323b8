"""schema.sql is the migration chain applied to an empty database, on both backends.

For each dialect, one empty database gets every migration through the store, another
gets `agentdur/store/schema/<dialect>.sql` loaded as a user would (`sqlite3 app.db <
schema.sql`, `psql -1 -f schema.sql`); their tables, columns, constraints, indexes,
views and recorded versions must be equal. Then the SQLite and PostgreSQL table and
column sets are compared with each other.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agentdur.store import open_store

Schema = dict[str, Any]


def schema_text(dialect: str) -> str:
    return (resources.files("agentdur.store") / "schema" / f"{dialect}.sql").read_text("utf-8")


def latest_migration(dialect: str) -> tuple[int, str]:
    """(version, file name) of the newest migration shipped (making a store does not connect)."""
    url = {"sqlite": "sqlite:///:memory:", "postgres": "postgresql://nobody@127.0.0.1/none"}
    version, name, _ = open_store(url[dialect]).migrations()[-1]
    return version, name


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").replace("IF NOT EXISTS ", "").split())


# -- SQLite ------------------------------------------------------------------------------


def sqlite_schema(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        columns = {
            name: conn.execute(f"PRAGMA table_info('{name}')").fetchall()
            for kind, name, _, _ in objects
            if kind in ("table", "view")
        }
        versions = conn.execute("SELECT version, name FROM schema_version ORDER BY 1").fetchall()
    finally:
        conn.close()
    return {
        "objects": [(kind, name, table, _normal(sql)) for kind, name, table, sql in objects],
        "columns": columns,
        "versions": versions,
    }


def test_sqlite_schema_sql_equals_the_migration_chain(tmp_path: Path) -> None:
    migrated, loaded = tmp_path / "migrated.db", tmp_path / "loaded.db"
    store = open_store(f"sqlite:///{migrated}")
    store.open()
    applied = store.migrate()
    store.close()
    assert applied == [version for version, _, _ in store.migrations()]
    conn = sqlite3.connect(loaded)
    conn.executescript(schema_text("sqlite"))
    conn.close()

    chain, schema = sqlite_schema(migrated), sqlite_schema(loaded)
    assert schema["columns"] == chain["columns"]
    assert schema["objects"] == chain["objects"]
    assert schema["versions"] == chain["versions"]
    assert chain["versions"][-1] == latest_migration("sqlite")
    assert {"tool_calls", "llm_calls"} <= {
        name for kind, name, _, _ in chain["objects"] if kind == "view"
    }
    # A database made from schema.sql is ready: the store migrates nothing more.
    ready = open_store(f"sqlite:///{loaded}")
    ready.open()
    assert ready.migrate() == []
    ready.ensure_schema(migrate=False)
    ready.close()


# -- PostgreSQL --------------------------------------------------------------------------


def postgres_schema(url: str) -> Schema:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
            "column_default FROM information_schema.columns WHERE table_schema = 'agentdur' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        relations = conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'agentdur' ORDER BY table_name"
        ).fetchall()
        constraints = conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'agentdur' ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'agentdur' ORDER BY 1, 2"
        ).fetchall()
        views = conn.execute(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = 'agentdur' ORDER BY 1"
        ).fetchall()
        versions = conn.execute(
            "SELECT version, name FROM agentdur.schema_version ORDER BY 1"
        ).fetchall()
    return {
        "columns": columns,
        "relations": relations,
        "constraints": constraints,
        "indexes": indexes,
        "views": views,
        "versions": versions,
    }


@pytest.fixture
def two_empty_databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    """Two throwaway databases on the test server, dropped afterwards."""
    base = postgres_url.rpartition("/")[0]
    names = [f"agentdur_drift_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_schema_sql_equals_the_migration_chain(
    two_empty_databases: tuple[str, str],
) -> None:
    migrated, loaded = two_empty_databases
    store = open_store(migrated)
    store.open()
    applied = store.migrate()
    store.close()
    assert applied == [version for version, _, _ in store.migrations()]
    with psycopg.connect(loaded) as conn:  # one transaction, like `psql -1 -f`
        conn.execute(schema_text("postgres"))

    chain, schema = postgres_schema(migrated), postgres_schema(loaded)
    for part in ("relations", "columns", "constraints", "indexes", "views", "versions"):
        assert schema[part] == chain[part], part
    assert chain["versions"][-1] == latest_migration("postgres")
    assert ("tool_calls", "VIEW") in chain["relations"]
    assert ("llm_calls", "VIEW") in chain["relations"]
    ready = open_store(loaded)
    ready.open()
    assert ready.migrate() == []
    ready.close()


# -- the two dialects --------------------------------------------------------------------


def test_sqlite_and_postgres_have_the_same_tables_and_columns(
    tmp_path: Path, two_empty_databases: tuple[str, str]
) -> None:
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    sqlite_store.open()
    sqlite_store.migrate()
    sqlite_store.close()
    postgres_store = open_store(two_empty_databases[0])
    postgres_store.open()
    postgres_store.migrate()
    postgres_store.close()

    lite = sqlite_schema(tmp_path / "a.db")
    sqlite_sets = {
        name: [column[1] for column in columns] for name, columns in lite["columns"].items()
    }
    postgres_sets: dict[str, list[str]] = {}
    for table, column, *_ in postgres_schema(two_empty_databases[0])["columns"]:
        postgres_sets.setdefault(table, []).append(column)
    assert sqlite_sets == postgres_sets
    assert sqlite_sets["tool_calls"][:4] == ["run_id", "agent", "step_index", "tool"]
    assert "inherited" in sqlite_sets["tool_calls"]
    assert "input_tokens" in sqlite_sets["llm_calls"]
