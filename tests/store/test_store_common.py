"""Store behaviour that must be the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import agentdur
from agentdur.store import RunInfo, SqlStore, StepInfo, open_store
from tests.apps.effects_db import query

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


def _drop_everything(url: str) -> None:
    if url.startswith("postgres"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS agentdur CASCADE")


@pytest.fixture
def store(database_url: str) -> SqlStore:
    _drop_everything(database_url)
    s = open_store(database_url)
    s.open()
    s.ensure_schema(migrate=True)
    yield s
    s.close()


def _run(run_id: str = "r1", **overrides: object) -> RunInfo:
    values: dict[str, object] = dict(
        run_id=run_id,
        workflow="wf",
        status="RUNNING",
        input={"args": [1], "kwargs": {}},
        owner="a",
        lease_until=NOW + timedelta(seconds=30),
        epoch=1,
        created_at=NOW,
        started_at=NOW,
    )
    values.update(overrides)
    return RunInfo(**values)  # type: ignore[arg-type]


def _step(index: int, run_id: str = "r1") -> StepInfo:
    return StepInfo(
        run_id=run_id,
        step_index=index,
        name=f"s{index}",
        kind="step",
        status="SUCCEEDED",
        started_at=NOW,
        finished_at=NOW + timedelta(milliseconds=5),
    )


def test_migrations_apply_once(database_url: str) -> None:
    _drop_everything(database_url)
    store = open_store(database_url)
    store.open()
    assert store.schema_version() == 0
    versions = [version for version, _, _ in store.migrations()]
    assert versions[0] == 1
    assert store.migrate() == versions
    assert store.migrate() == []
    assert store.schema_version() == versions[-1]
    store.close()


def test_concurrent_first_migrations_do_not_race(database_url: str) -> None:
    _drop_everything(database_url)
    errors: list[BaseException] = []
    applied: list[list[int]] = []

    def migrate() -> None:
        store = open_store(database_url)
        try:
            applied.append(store.migrate())
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Each version is applied once, by whichever migrator holds the lock when it comes
    # up: racing migrators may share the chain (one applies 1 and 3, another 2), since
    # each version is its own transaction. None is applied twice, none is missed.
    versions = [version for version, _, _ in open_store(database_url).migrations()]
    assert sorted(v for done in applied for v in done) == versions
    recorded = query(database_url, "SELECT version FROM {p}schema_version ORDER BY version")
    assert [row[0] for row in recorded] == versions


def test_newer_schema_is_refused_without_migrating(store: SqlStore, database_url: str) -> None:
    with store.transaction() as cur:
        cur.execute(store.sql.INSERT_SCHEMA_VERSION, {"version": 99, "name": "9999_future.sql"})
    with pytest.raises(agentdur.SchemaVersionError) as info:
        agentdur.Runtime(database_url).get_run("x")
    assert "schema version 99, made by a newer agentdur" in str(info.value)
    assert (info.value.found, info.value.expected) == (99, store.migrations()[-1][0])


def test_missing_schema_with_auto_migrate_off_says_to_migrate(database_url: str) -> None:
    _drop_everything(database_url)
    rt = agentdur.Runtime(database_url, auto_migrate=False)
    with pytest.raises(agentdur.SchemaVersionError, match="run `agentdur db migrate"):
        rt.list_runs()
    rt.close()


def test_create_run_is_idempotent(store: SqlStore) -> None:
    assert store.create_run(_run(), input_json='{"args":[1],"kwargs":{}}') is True
    again = _run(input={"args": [2], "kwargs": {}})
    assert store.create_run(again, input_json='{"args":[2],"kwargs":{}}') is False
    stored = store.get_run("r1")
    assert stored is not None
    assert stored.input == {"args": [1], "kwargs": {}}
    assert stored.created_at == NOW
    assert stored.lease_until == NOW + timedelta(seconds=30)


def test_step_write_is_fenced_by_epoch(store: SqlStore) -> None:
    store.create_run(_run(), input_json="{}")
    store.record_step(_step(0), epoch=1, input_json=None, output_json="1", error_json=None)
    later = NOW + timedelta(minutes=5)
    taken = store.claim_run("r1", owner="b", now=later, lease_until=later + timedelta(seconds=30))
    assert taken is not None and taken.epoch == 2 and taken.owner == "b"
    with pytest.raises(agentdur.FencedError, match="taken over"):
        store.record_step(_step(1), epoch=1, input_json=None, output_json="2", error_json=None)
    with pytest.raises(agentdur.FencedError):
        store.finish_run(
            "r1", epoch=1, status="SUCCEEDED", output_json="1", error_json=None, now=later
        )
    assert [s.step_index for s in store.steps("r1")] == [0]
    store.record_step(_step(1), epoch=2, input_json=None, output_json="2", error_json=None)
    assert [(s.step_index, s.output) for s in store.steps("r1")] == [(0, 1), (1, 2)]


def test_claim_respects_live_leases(store: SqlStore) -> None:
    store.create_run(_run(), input_json="{}")
    assert store.claim_run("r1", owner="b", now=NOW, lease_until=NOW) is None
    assert store.recoverable_runs(owner="b", now=NOW) == []
    assert store.recoverable_runs(owner="a", now=NOW) == [("r1", "wf")]
    expired = NOW + timedelta(seconds=31)
    assert store.recoverable_runs(owner="b", now=expired) == [("r1", "wf")]


def test_recorded_steps_are_never_overwritten(store: SqlStore) -> None:
    store.create_run(_run(), input_json="{}")
    store.record_step(_step(0), epoch=1, input_json=None, output_json='"first"', error_json=None)
    with pytest.raises(agentdur.FencedError):
        store.record_step(
            _step(0), epoch=1, input_json=None, output_json='"second"', error_json=None
        )
    assert store.steps("r1")[0].output == "first"


def test_heartbeat_extends_only_the_runs_named_at_their_epoch(store: SqlStore) -> None:
    store.create_run(_run("mine"), input_json="{}")
    store.create_run(_run("zombie"), input_json="{}")  # owned on paper, not executing
    store.create_run(_run("stale", epoch=2), input_json="{}")  # taken over since epoch 1
    store.create_run(_run("theirs", owner="z"), input_json="{}")
    later = NOW + timedelta(seconds=20)
    extended = store.heartbeat(
        executor_id="a",
        host="h",
        pid=1,
        process_started="123",
        now=later,
        lease_until=later + timedelta(seconds=30),
        runs=[("mine", 1), ("stale", 1), ("theirs", 1)],
    )
    assert extended == {"mine"}
    assert store.get_run("mine").lease_until == later + timedelta(seconds=30)  # type: ignore[union-attr]
    for other in ("zombie", "stale", "theirs"):
        assert store.get_run(other).lease_until == NOW + timedelta(seconds=30)  # type: ignore[union-attr]
    assert store.executors_on_host("h") == [("a", 1, "123")]


def test_recovery_takes_runs_of_dead_owners_at_once(store: SqlStore) -> None:
    store.create_run(_run("orphan", owner="dead-one"), input_json="{}")
    store.create_run(_run("alive", owner="live-one"), input_json="{}")
    # Leases are live: only naming the dead owner lets another executor take its run.
    assert store.recoverable_runs(owner="me", now=NOW) == []
    assert store.recoverable_runs(owner="me", now=NOW, dead=["dead-one"]) == [("orphan", "wf")]
    assert store.recoverable_runs(owner="me", now=NOW, others=False, dead=["dead-one"]) == []
    claimed = store.claim_run(
        "orphan", owner="me", now=NOW, lease_until=NOW + timedelta(seconds=30), dead=["dead-one"]
    )
    assert claimed is not None and (claimed.owner, claimed.epoch) == ("me", 2)
    assert store.claim_run("alive", owner="me", now=NOW, lease_until=NOW, dead=["dead-one"]) is None


def test_list_runs_filters_and_orders_newest_first(store: SqlStore) -> None:
    for i in range(3):
        store.create_run(
            _run(
                f"r{i}",
                workflow="even" if i % 2 == 0 else "odd",
                created_at=NOW + timedelta(seconds=i),
            ),
            input_json="{}",
        )
    store.finish_run("r2", epoch=1, status="SUCCEEDED", output_json="5", error_json=None, now=NOW)
    assert [r.run_id for r in store.list_runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in store.list_runs(workflow="even")] == ["r2", "r0"]
    assert [r.run_id for r in store.list_runs(status="SUCCEEDED")] == ["r2"]
    assert [r.run_id for r in store.list_runs(limit=1)] == ["r2"]
    done = store.get_run("r2")
    assert done is not None and (done.status, done.output, done.owner) == ("SUCCEEDED", 5, None)


def test_cancel_only_unfinished_runs(store: SqlStore) -> None:
    store.create_run(_run(), input_json="{}")
    assert store.cancel_run("r1", now=NOW) is True
    assert store.cancel_run("r1", now=NOW) is False
    with pytest.raises(agentdur.FencedError):
        store.record_step(_step(0), epoch=1, input_json=None, output_json="1", error_json=None)


def test_driver_errors_become_agentdur_errors_at_the_stores_edge(store: SqlStore) -> None:
    with pytest.raises(agentdur.StoreError) as info, store.statement() as cur:
        cur.execute("SELECT * FROM no_such_table")
    assert not isinstance(info.value, agentdur.StoreUnavailable)  # the statement's own fault
    assert "no_such_table" in str(info.value) and store.url in str(info.value)
    assert type(info.value.__cause__).__module__.split(".")[0] in ("sqlite3", "psycopg")


def test_an_unreachable_database_is_store_unavailable() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(agentdur.StoreUnavailable, match="cannot connect to PostgreSQL"):
        store.open()
