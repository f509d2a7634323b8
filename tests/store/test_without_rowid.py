"""SQLite migration 0008: queues, rate_events, executors and step_blobs become WITHOUT ROWID.

A database made at schema version 7 (migrations 0001..0007 applied through the store,
rows written through the store's own operations) is migrated: every row survives, the
four tables have no rowid and no sqlite_autoindex, and the store's statements on them
still work. A fresh database has four b-trees fewer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from agentdur.store import RunInfo, SqlStore, StepInfo, open_store
from agentdur.store import sqlite as sqlite_store

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
REBUILT = {
    "queues": "name",
    "rate_events": "limiter, at, event",
    "executors": "executor_id",
    "step_blobs": "run_id, step_index, hash",
}
KEPT = ("runs", "steps", "effects", "messages", "blobs")
BIG = "x" * 70_000  # over the blob threshold (64 KiB): kept in blobs, linked in step_blobs


def store_at(path: Path, version: int | None, monkeypatch: pytest.MonkeyPatch) -> SqlStore:
    """An open store of `path` that knows the migrations up to `version` (None: all)."""
    store = open_store(f"sqlite:///{path}")
    if version is not None:
        chain = [m for m in store.migrations() if m[0] <= version]
        monkeypatch.setattr(store, "migrations", lambda: chain)
    store.open()
    return store


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            for table, key in REBUILT.items()
        }


def table_sql(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        return {name: " ".join(sql.split()) for name, sql in found.fetchall()}


def autoindexes(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE name LIKE 'sqlite_autoindex%'"
        )
        return {row[0] for row in found.fetchall()}


def pages(path: Path) -> tuple[int, int]:
    """(page_count, freelist_count)."""
    with closing(sqlite3.connect(path)) as conn:
        return (
            conn.execute("PRAGMA page_count").fetchone()[0],
            conn.execute("PRAGMA freelist_count").fetchone()[0],
        )


def fill(store: SqlStore) -> None:
    """Rows in the four tables, written the way a runtime writes them."""
    run = RunInfo(
        run_id="r1",
        workflow="wf",
        status="RUNNING",
        input={"args": [], "kwargs": {}},
        owner="host-a:1:abc",
        lease_until=NOW + timedelta(seconds=30),
        epoch=1,
        created_at=NOW,
        started_at=NOW,
    )
    assert store.create_run(run, input_json=json.dumps(run.input))
    for index, value in enumerate([BIG, BIG + "y"]):
        step = StepInfo(
            run_id="r1",
            step_index=index,
            name=f"s{index}",
            kind="step",
            status="SUCCEEDED",
            started_at=NOW,
            finished_at=NOW,
        )
        store.record_step(
            step,
            epoch=1,
            input_json=json.dumps([BIG]),
            output_json=json.dumps(value),
            error_json=None,
        )
    for executor_id, host, started in [
        ("host-a:1:abc", "host-a", "123.45"),
        ("host-a:2:def", "host-a", None),
        ("host-b:7:ghi", "host-b", "9.5"),
    ]:
        store.heartbeat(
            executor_id=executor_id,
            host=host,
            pid=int(executor_id.split(":")[1]),
            process_started=started,
            now=NOW,
            lease_until=NOW + timedelta(seconds=30),
            runs=[],
        )
    store.ensure_queue("emails", now=NOW)
    for second, event in enumerate(["e1", "e2", "e3"]):
        waited = store.rate_acquire(
            "model:gpt",
            now=NOW + timedelta(seconds=second),
            per_seconds=60,
            limit=10,
            token_limit=None,
            tokens=100 * (second + 1),
            event=event,
        )
        assert waited == 0.0
    store.rate_settle("model:gpt", "e2", 250)


@pytest.fixture
def at_version_7(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "v7.db"
    store = store_at(path, 7, monkeypatch)
    assert store.migrate() == [1, 2, 3, 4, 5, 6, 7]
    fill(store)
    store.close()
    yield path


def test_migration_keeps_every_row_and_drops_the_rowid(
    at_version_7: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = rows(at_version_7)
    # model:gpt is a queue row too (its lock); step 0 links one blob (input = output),
    # step 1 two.
    assert [len(before[table]) for table in REBUILT] == [2, 3, 3, 3]
    assert set(REBUILT) <= autoindexes(at_version_7)

    store = store_at(at_version_7, None, monkeypatch)
    store.ensure_schema(migrate=True)
    assert store.schema_version() == 8
    store.close()

    assert rows(at_version_7) == before
    sql = table_sql(at_version_7)
    for table in REBUILT:
        assert sql[table].endswith(") WITHOUT ROWID"), table
    for table in KEPT:
        assert "WITHOUT ROWID" not in sql[table], table
    assert autoindexes(at_version_7) == set(KEPT)
    with closing(sqlite3.connect(at_version_7)) as conn:
        for table in REBUILT:
            # PRAGMA index_list still names the primary key (origin 'pk') of a WITHOUT
            # ROWID table, but it is the table's own b-tree: sqlite_master has no
            # sqlite_autoindex for it (autoindexes() above), and there is no rowid.
            with pytest.raises(sqlite3.OperationalError, match="no such column: rowid"):
                conn.execute(f"SELECT rowid FROM {table}")
        indexes = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'")
        assert {("executors_host", "executors"), ("step_blobs_hash", "step_blobs")} <= set(
            indexes.fetchall()
        )
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT name FROM sqlite_temp_master").fetchall() == []


def test_the_store_works_on_the_migrated_tables(
    at_version_7: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_at(at_version_7, None, monkeypatch)
    store.ensure_schema(migrate=True)
    # step_blobs: both steps load their blobs through the migrated links.
    assert [s.output for s in store.steps("r1")] == [BIG, BIG + "y"]
    assert store.get_step("r1", 1) is not None
    # executors: ON CONFLICT (executor_id) DO UPDATE on a migrated row, and a new one.
    later = NOW + timedelta(seconds=5)
    for executor_id in ("host-a:2:def", "host-a:3:jkl"):
        store.heartbeat(
            executor_id=executor_id,
            host="host-a",
            pid=int(executor_id.split(":")[1]),
            process_started="77.0",
            now=later,
            lease_until=later,
            runs=[],
        )
    assert sorted(store.executors_on_host("host-a")) == [
        ("host-a:1:abc", 1, "123.45"),
        ("host-a:2:def", 2, "77.0"),
        ("host-a:3:jkl", 3, "77.0"),
    ]
    # queues: ON CONFLICT (name) DO NOTHING keeps the migrated row.
    store.ensure_queue("emails", now=later)
    store.ensure_queue("reports", now=later)
    # rate_events: the migrated admissions count in the window, are settled and pruned.
    wait = store.rate_acquire(
        "model:gpt",
        now=NOW + timedelta(seconds=3),
        per_seconds=60,
        limit=3,
        token_limit=None,
        tokens=1,
        event="e4",
    )
    assert wait > 0
    store.rate_settle("model:gpt", "e3", 7)
    assert (
        store.rate_acquire(
            "model:gpt",
            now=NOW + timedelta(seconds=61),
            per_seconds=60,
            limit=3,
            token_limit=None,
            tokens=1,
            event="e5",
        )
        == 0.0
    )
    # step_blobs: a new step links a blob already stored (ON CONFLICT DO NOTHING).
    step = StepInfo(
        run_id="r1",
        step_index=2,
        name="s2",
        kind="step",
        status="SUCCEEDED",
        started_at=NOW,
        finished_at=NOW,
    )
    store.record_step(
        step, epoch=1, input_json=json.dumps([BIG]), output_json=json.dumps(BIG), error_json=None
    )
    assert store.steps("r1")[2].output == BIG
    store.close()

    after = rows(at_version_7)
    assert [q[0] for q in after["queues"]] == ["emails", "model:gpt", "reports"]
    assert after["queues"][0][1] == "2026-11-24 12:00:00.000000"
    # e5's admission, a minute after e1, pruned e1 and e2; e3 was settled at 7 tokens.
    assert [(e[0], e[2], e[3]) for e in after["rate_events"]] == [
        ("model:gpt", "e3", 7),
        ("model:gpt", "e5", 1),
    ]
    assert [link[:2] for link in after["step_blobs"]] == [
        ("r1", 0),
        ("r1", 1),
        ("r1", 1),
        ("r1", 2),
    ]
    with closing(sqlite3.connect(at_version_7)) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (2,)


def test_a_fresh_database_has_four_btrees_fewer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, loaded = tmp_path / "v7.db", tmp_path / "v8.db", tmp_path / "schema.db"
    for path, version in ((old, 7), (new, None)):
        store = store_at(path, version, monkeypatch)
        store.migrate()
        store.close()
    with closing(sqlite3.connect(loaded)) as conn:
        conn.execute(sqlite_store._PAGE_SIZE)  # the page size the store gives a new file
        text = (resources.files("agentdur.store") / "schema" / "sqlite.sql").read_text("utf-8")
        conn.executescript(text)

    assert set(REBUILT) <= autoindexes(old)
    assert autoindexes(new) == autoindexes(loaded) == set(KEPT)
    old_pages, old_free = pages(old)
    assert old_free == 0
    # The migration chain drops the four autoindexes' pages onto the freelist (SQLite
    # reuses them for the first rows written; only VACUUM gives them back to the file).
    new_pages, new_free = pages(new)
    assert new_pages - new_free == old_pages - 4
    # A database made from schema.sql, or the migrated one vacuumed, is at least 4 pages
    # smaller (the schema's own text, which differs between the two, takes a few pages).
    assert pages(loaded)[0] <= old_pages - 4
    with closing(sqlite3.connect(new)) as conn:
        conn.execute("VACUUM")
    vacuumed, free = pages(new)
    assert vacuumed <= old_pages - 4 and free == 0


def test_a_users_view_on_a_rebuilt_table_survives(
    at_version_7: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rebuild creates each table under its own name instead of renaming a copy into
    # place: SQLite refuses that rename while a view names the dropped table.
    with closing(sqlite3.connect(at_version_7)) as conn:
        conn.execute("CREATE VIEW live_hosts AS SELECT DISTINCT host FROM executors")
        conn.commit()
    store = store_at(at_version_7, None, monkeypatch)
    store.ensure_schema(migrate=True)
    store.close()
    with closing(sqlite3.connect(at_version_7)) as conn:
        hosts = conn.execute("SELECT host FROM live_hosts ORDER BY host").fetchall()
    assert hosts == [("host-a",), ("host-b",)]
