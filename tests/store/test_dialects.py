"""Dialect specifics and bad database input."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import agentdur
from agentdur.store import SqliteStore, open_store


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(store, SqliteStore)
    store.open()
    with store.statement() as cur:
        cur.execute("PRAGMA journal_mode")
        assert cur.fetchone()[0] == "wal"  # type: ignore[index]
        cur.execute("PRAGMA synchronous")
        assert cur.fetchone()[0] == 2  # type: ignore[index]  # FULL
    store.close()


def test_a_new_sqlite_database_takes_2_kib_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    """Small pages halve an empty database (issue 13); a database made before keeps its
    4 KiB pages and its rows."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # as an earlier agentdur made it: default pages
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    for path, size in ((tmp_path / "new.db", 2048), (old, 4096)):
        with agentdur.Runtime(f"sqlite:///{path}") as rt:
            rt.run(double, 21, run_id="r")
        with agentdur.Runtime(f"sqlite:///{path}") as rt:
            assert rt.get_run("r").output == 42
            with rt.store.statement() as cur:
                cur.execute("PRAGMA page_size")
                assert cur.fetchone()[0] == size  # type: ignore[index]


@agentdur.workflow
async def double(x: int) -> int:
    return x * 2


def test_relative_and_absolute_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert open_store("sqlite:///rel.db").path == "rel.db"  # type: ignore[attr-defined]
    assert open_store("sqlite:////abs/x.db").path == "/abs/x.db"  # type: ignore[attr-defined]


def test_default_url_is_agentdur_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTDUR_DATABASE_URL", raising=False)
    rt = agentdur.Runtime()
    assert rt.list_runs() == []
    rt.close()
    assert (tmp_path / "agentdur.db").exists()
    monkeypatch.setenv("AGENTDUR_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert agentdur.Runtime().database_url == f"sqlite:///{tmp_path / 'env.db'}"


def test_unsupported_url_is_a_configuration_error() -> None:
    with pytest.raises(
        agentdur.ConfigurationError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h/db'"
    ):
        agentdur.Runtime("mysql://u:pw@h/db")


def test_unreachable_postgres_masks_the_password() -> None:
    rt = agentdur.Runtime("postgresql://user:hunter2@127.0.0.1:1/db")
    with pytest.raises(agentdur.StoreUnavailable) as info:
        rt.list_runs()
    assert "hunter2" not in str(info.value)
    assert "postgresql://user:***@127.0.0.1:1/db" in str(info.value)
    assert info.value.url == "postgresql://user:***@127.0.0.1:1/db"


def test_sqlite_in_missing_folder_is_unavailable(tmp_path: Path) -> None:
    rt = agentdur.Runtime(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")
    with pytest.raises(agentdur.StoreUnavailable, match="does not exist"):
        rt.list_runs()
