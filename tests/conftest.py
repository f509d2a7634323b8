"""Shared fixtures: every store-level and end-to-end test runs on SQLite and PostgreSQL.

PostgreSQL comes from AGENTDUR_TEST_POSTGRES_URL, else a server on 127.0.0.1:5432
(user postgres). Each pytest session creates its own database there and drops it at the
end; tables are emptied between tests. With CI=true a missing PostgreSQL fails the run
instead of skipping the tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import agentdur

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = "runs, steps, effects, messages, executors"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _server_url() -> str:
    return os.environ.get("AGENTDUR_TEST_POSTGRES_URL", DEFAULT_SERVER)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session on the PostgreSQL server."""
    server = _server_url()
    name = f"agentdur_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {server}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    url = _with_database(server, name)
    yield url
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for an empty agentdur database, on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'agentdur.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    yield url


def _empty_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = 'agentdur' AND tablename = 'runs'"
        ).fetchone()
        if exists:
            conn.execute(
                "TRUNCATE agentdur.runs, agentdur.steps, agentdur.effects, "
                "agentdur.messages, agentdur.executors, agentdur.step_blobs, agentdur.blobs"
            )


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


@pytest.fixture
def rt(database_url: str) -> Iterator[agentdur.Runtime]:
    """An open Runtime on an empty database of each backend."""
    runtime = agentdur.Runtime(database_url, executor_id=f"test-{uuid.uuid4().hex[:6]}")
    with runtime:
        yield runtime
