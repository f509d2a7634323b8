"""Retention: `Runtime.gc` and `agentdur gc`, on SQLite and PostgreSQL.

Runs are made at a moved clock (days ago) and checked the way a user would: the report,
and the tables read with plain SQL before and after. The last test runs gc in a loop in
one Runtime while another executes runs, and checks every one of those succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import agentdur
from agentdur.cli import main
from agentdur.models import AssistantMessage, Message, ScriptInfo
from agentdur.testing import Scripted
from tests.apps.effects_db import query

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TABLES = ("runs", "steps", "messages", "effects")


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@agentdur.tool(effect="side_effect", key="refund:{order_id}")
def refund(order_id: str) -> str:
    """Refund an order (a domain key: once per order, across runs)."""
    return f"refunded {order_id}"


@agentdur.tool(effect="side_effect")
def charge(amount: int) -> str:
    """Charge a card (the default key: once per run and step)."""
    return f"charged {amount}"


def _script(messages: list[Message], info: ScriptInfo) -> Any:
    if not any(isinstance(m, AssistantMessage) for m in messages):
        return Scripted.tool_calls([("refund", {"order_id": "A1"}), ("charge", {"amount": 5})])
    return "done"


AGENT = agentdur.Agent("gc-agent", Scripted(_script), tools=[refund, charge])


@agentdur.step
async def bump(i: int) -> int:
    return i + 1


@agentdur.workflow(name="gc.work")
async def work(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await bump(i)
    return total


@agentdur.workflow(name="gc.inbox")
async def inbox() -> Any:
    return await agentdur.recv("go")


@agentdur.workflow(name="gc.boom")
async def boom() -> None:
    await bump(0)
    raise ValueError("boom")


def document(word: str) -> str:
    """A value big enough to be kept once, by content, in the blobs table (> 64 KiB)."""
    return "".join(f"{word}: line {i} of the document\n" for i in range(4000))


@agentdur.step
async def load(word: str) -> str:
    return document(word)


@agentdur.workflow(name="gc.documents")
async def documents(words: list[str]) -> int:
    return sum([len(await load(word)) for word in words])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def crt(database_url: str, clock: Clock) -> Iterator[agentdur.Runtime]:
    """A Runtime on the moved clock."""
    with agentdur.Runtime(database_url, executor_id="gc-test", clock=clock) as runtime:
        yield runtime


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables gc touches, in a stable order."""
    keys = {
        "runs": "run_id, status",
        "steps": "run_id, step_index, status",
        "messages": "run_id, seq",
        "effects": "idempotency_key, run_id, step_index",
    }
    return {
        table: query(url, f"SELECT {keys[table]} FROM {{p}}{table} ORDER BY {keys[table]}")
        for table in TABLES
    }


def count_rows(url: str, table: str, run_ids: list[str]) -> int:
    marks = ", ".join("?" for _ in run_ids)
    sql = f"SELECT count(*) FROM {{p}}{table} WHERE run_id IN ({marks})"
    rows = query(url, sql, tuple(run_ids))
    return int(rows[0][0])


def make_history(rt: agentdur.Runtime, clock: Clock) -> None:
    """Old runs in every finished status and one waiting, then one recent run."""
    rt.run_agent(AGENT, "refund A1 and charge 5", run_id="old-ok")
    with pytest.raises(ValueError, match="boom"):
        rt.run(boom, run_id="old-fail")
    rt.start(inbox, run_id="old-cancel")
    rt.start(inbox, run_id="old-waiting")
    rt.start(inbox, run_id="old-msg")
    for run_id in ("old-cancel", "old-waiting", "old-msg"):
        _wait_status(rt, run_id, "WAITING")
    rt.cancel("old-cancel")
    rt.send("old-msg", "go", {"n": 1})
    assert rt.handle("old-msg").result() == {"n": 1}
    clock.advance(days=30)
    assert rt.run(work, 3, run_id="recent") == 6
    clock.advance(hours=1)


def _wait_status(rt: agentdur.Runtime, run_id: str, status: str) -> None:
    from tests.helpers import wait_for

    wait_for(lambda: rt.get_run(run_id).status == status, what=f"{run_id} {status}")


OLD = ["old-cancel", "old-fail", "old-msg", "old-ok"]


def test_gc_deletes_old_finished_runs_and_keeps_the_rest(
    crt: agentdur.Runtime, clock: Clock, database_url: str
) -> None:
    make_history(crt, clock)
    expected_steps = count_rows(database_url, "steps", OLD)
    before = snapshot(database_url)
    assert ("refund:A1", "old-ok", 1) in before["effects"]
    assert ("old-ok:2", "old-ok", 2) in before["effects"]
    assert count_rows(database_url, "messages", OLD) == 1

    report = crt.gc(older_than=timedelta(days=1))

    assert (report.runs, report.steps, report.messages) == (4, expected_steps, 1)
    assert (report.ledger_entries, report.domain_key_entries, report.domain_keys_kept) == (
        1,
        1,
        True,
    )
    assert (report.batches, report.dry_run, report.fork_sources_kept) == (1, False, 0)
    assert report.cutoff == clock.now - timedelta(days=1)
    assert report.statuses == ("SUCCEEDED", "FAILED", "CANCELLED")
    after = snapshot(database_url)
    assert after["runs"] == [("old-waiting", "WAITING"), ("recent", "SUCCEEDED")]
    assert {row[0] for row in after["steps"]} == {"old-waiting", "recent"}
    assert after["messages"] == []
    # the domain key stays, so a later refund of A1 is still deduplicated
    assert after["effects"] == [("refund:A1", "old-ok", 1)]
    assert crt.run_agent(AGENT, "again", run_id="new-ok").output == "done"
    assert crt.steps("new-ok")[1].deduplicated is True


def test_dry_run_writes_nothing_and_reports_the_same_counts(
    crt: agentdur.Runtime, clock: Clock, database_url: str
) -> None:
    make_history(crt, clock)
    before = snapshot(database_url)
    dry = crt.gc(older_than=timedelta(days=1), dry_run=True, batch=3)
    assert snapshot(database_url) == before
    real = crt.gc(older_than=timedelta(days=1), batch=3)
    assert (dry.dry_run, real.dry_run, dry.longest_batch_seconds) == (True, False, 0.0)
    assert {f: getattr(dry, f) for f in COUNTS} == {f: getattr(real, f) for f in COUNTS}
    assert (real.runs, real.batches) == (4, 2)


COUNTS = (
    "runs",
    "steps",
    "messages",
    "ledger_entries",
    "domain_key_entries",
    "batches",
    "blobs",
    "blob_bytes",
)
ORPHAN = document("left by a refused write")


def make_documents(rt: agentdur.Runtime, clock: Clock, url: str) -> dict[str, int]:
    """Old runs whose steps hold big values, a blob no step references, then a recent
    run; the stored bytes of each blob by the word of its document."""
    rt.run(documents, ["only-a", "shared"], run_id="docs-a")
    clock.advance(seconds=1)
    rt.run(documents, ["shared"], run_id="docs-b")  # in another batch than docs-a
    clock.advance(seconds=1)
    rt.run(documents, ["kept"], run_id="docs-c")
    # A step write refused after its blob was saved leaves the blob with no step.
    store = rt.store
    data = ORPHAN.encode()
    digest = hashlib.sha256(data).hexdigest()
    with store.transaction() as cur:
        params = {"hash": digest, "size": len(data), "data": zlib.compress(data)}
        cur.execute(store.sql.SAVE_BLOB, params)
    clock.advance(days=30)
    rt.run(documents, ["kept"], run_id="docs-recent")
    clock.advance(hours=1)
    stored = dict(query(url, "SELECT hash, length(data) FROM {p}blobs"))
    words = ["only-a", "shared", "kept"]
    sizes = {word: stored[hashlib.sha256(document(word).encode()).hexdigest()] for word in words}
    sizes["orphan"] = stored[digest]
    assert len(stored) == 4
    return {word: int(size) for word, size in sizes.items()}


@pytest.mark.parametrize("batch", [1, 2, 500])
def test_dry_run_counts_the_blobs_a_real_gc_deletes(
    crt: agentdur.Runtime, clock: Clock, database_url: str, batch: int
) -> None:
    sizes = make_documents(crt, clock, database_url)
    nothing = crt.gc(older_than=timedelta(days=60), dry_run=True)
    assert (nothing.runs, nothing.blobs, nothing.blob_bytes) == (0, 0, 0)

    dry = crt.gc(older_than=timedelta(days=1), dry_run=True, batch=batch)
    real = crt.gc(older_than=timedelta(days=1), batch=batch)

    assert {f: getattr(dry, f) for f in COUNTS} == {f: getattr(real, f) for f in COUNTS}
    # a blob shared by two deleted runs is counted once, whichever batches they are in;
    # one a kept run references too is not; one no step references goes with the runs
    expected = sizes["only-a"] + sizes["shared"] + sizes["orphan"]
    assert (real.runs, real.blobs, real.blob_bytes) == (3, 3, expected)
    assert real.blob_bytes < len(document("only-a")) + len(document("shared")) + len(ORPHAN)
    remaining = query(database_url, "SELECT hash FROM {p}blobs")
    assert remaining == [(hashlib.sha256(document("kept").encode()).hexdigest(),)]
    assert [s.output for s in crt.steps("docs-recent")] == [document("kept")]
    again = crt.gc(older_than=timedelta(days=1), dry_run=True)
    assert (again.runs, again.blobs, again.blob_bytes) == (0, 0, 0)
    # its last reference gone, the kept blob goes too (and the database is left empty)
    last = crt.gc(older_than=timedelta(0))
    assert (last.runs, last.blobs, last.blob_bytes) == (1, 1, sizes["kept"])
    assert query(database_url, "SELECT count(*) FROM {p}blobs") == [(0,)]


def test_recent_and_unfinished_runs_are_kept_and_status_narrows(
    crt: agentdur.Runtime, clock: Clock, database_url: str
) -> None:
    make_history(crt, clock)
    assert crt.gc(older_than=timedelta(days=40)).runs == 0
    report = crt.gc(older_than=timedelta(days=1), statuses=["failed", "CANCELLED"])
    assert (report.runs, report.statuses) == (2, ("FAILED", "CANCELLED"))
    remaining = [row[0] for row in snapshot(database_url)["runs"]]
    assert remaining == ["old-msg", "old-ok", "old-waiting", "recent"]
    # 0s: everything finished by now, still never a waiting run
    assert crt.gc(older_than=timedelta(0)).runs == 3
    assert snapshot(database_url)["runs"] == [("old-waiting", "WAITING")]


def test_domain_key_entries_are_deleted_only_when_asked(
    crt: agentdur.Runtime, clock: Clock, database_url: str
) -> None:
    make_history(crt, clock)
    report = crt.gc(older_than=timedelta(days=1), domain_keys=True)
    assert (report.domain_key_entries, report.domain_keys_kept) == (1, False)
    assert snapshot(database_url)["effects"] == []


@pytest.mark.parametrize(("runs", "batch", "batches"), [(7, 3, 3), (6, 3, 2), (5, 10, 1)])
def test_runs_are_deleted_in_batches(
    crt: agentdur.Runtime, clock: Clock, database_url: str, runs: int, batch: int, batches: int
) -> None:
    for i in range(runs):
        crt.run(work, 2, run_id=f"w{i}")
        clock.advance(seconds=1)
    clock.advance(days=2)
    dry = crt.gc(older_than=timedelta(days=1), batch=batch, dry_run=True)
    report = crt.gc(older_than=timedelta(days=1), batch=batch)
    assert (dry.runs, dry.batches, dry.steps) == (runs, batches, 2 * runs)
    assert (report.runs, report.batches, report.steps) == (runs, batches, 2 * runs)
    assert report.longest_batch_seconds > 0
    assert snapshot(database_url)["runs"] == []


def test_a_fork_source_is_kept_while_its_fork_is_kept(
    crt: agentdur.Runtime, clock: Clock, database_url: str
) -> None:
    crt.run(work, 3, run_id="source")
    crt.run(work, 2, run_id="plain")
    clock.advance(days=10)
    assert crt.fork("source", at_step=2, new_run_id="fork").result() == 6
    crt.fork("fork", at_step=1, new_run_id="fork-of-fork").result()
    clock.advance(days=1)
    report = crt.gc(older_than=timedelta(days=5), dry_run=True)
    assert (report.runs, report.fork_sources_kept) == (1, 1)
    report = crt.gc(older_than=timedelta(days=5))
    assert (report.runs, report.fork_sources_kept) == (1, 1)
    assert [row[0] for row in snapshot(database_url)["runs"]] == ["fork", "fork-of-fork", "source"]
    # the forks' own steps do not need the source: they replay from their copies
    assert crt.replay("fork-of-fork") == 6
    clock.advance(days=10)
    report = crt.gc(older_than=timedelta(days=5), batch=1)
    assert (report.runs, report.batches, report.fork_sources_kept) == (3, 3, 0)
    assert snapshot(database_url)["runs"] == []


def test_bad_arguments_are_usage_errors(crt: agentdur.Runtime) -> None:
    with pytest.raises(agentdur.UsageError) as info:
        crt.gc(older_than=timedelta(days=1), statuses=["RUNNING"])
    assert str(info.value) == (
        "gc deletes finished runs only: statuses must be among SUCCEEDED, FAILED, "
        "CANCELLED, not RUNNING"
    )
    with pytest.raises(agentdur.UsageError, match="older_than must be a timedelta of 0 or more"):
        crt.gc(older_than=timedelta(days=-1))
    with pytest.raises(agentdur.UsageError, match="batch must be a whole number of at least 1"):
        crt.gc(older_than=timedelta(0), batch=0)


@pytest.mark.anyio
async def test_agc_is_the_async_twin(crt: agentdur.Runtime, clock: Clock) -> None:
    crt.run(work, 1, run_id="a")
    clock.advance(days=2)
    report = await crt.agc(older_than=timedelta(days=1))
    assert (report.runs, report.steps) == (1, 1)


# -- the command -----------------------------------------------------------------------


@pytest.fixture
def old_db(database_url: str) -> str:
    """A database with the history of `make_history`, ending 30 minutes ago."""
    clock = Clock(datetime.now(timezone.utc) - timedelta(days=30, hours=1, minutes=30))
    with agentdur.Runtime(database_url, executor_id="old", clock=clock) as rt:
        make_history(rt, clock)
    return database_url


def test_cli_dry_run_then_gc(old_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(old_db)
    code = main(["gc", "--older-than", "1d", "--dry-run", "--database-url", old_db])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert snapshot(old_db) == before
    lines = out.splitlines()
    assert lines[0].startswith("would delete 4 runs that finished before ")
    assert lines[0].endswith(" UTC (SUCCEEDED, FAILED, CANCELLED) in 1 batch:")
    assert lines[1:8] == [
        "WHAT                                     COUNT",
        "runs                                         4",
        "steps                                        7",
        "messages                                     1",
        "ledger entries (run_id:index keys)           1",
        "ledger entries (domain keys)        0 (1 kept)",
        "blobs (big values kept once)                 0",
    ]
    assert lines[-1] == (
        "would keep 1 ledger entry under domain keys: deleting one would let that effect "
        "(a refund, say) happen again in a later run with the same key; "
        "--include-domain-keys deletes them"
    )

    code = main(["gc", "--older-than", "1d", "--json", "--database-url", old_db])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (code, err) == (0, "")
    assert (report["runs"], report["messages"], report["ledger_entries"]) == (4, 1, 1)
    assert (report["domain_key_entries"], report["domain_keys_kept"]) == (1, True)
    assert [row[0] for row in snapshot(old_db)["runs"]] == ["old-waiting", "recent"]

    code = main(["gc", "--older-than", "0s", "--status", "SUCCEEDED", "--database-url", old_db])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("deleted 1 run that finished before ")
    assert "(SUCCEEDED) in 1 batch:" in out
    assert "longest batch: " in out


def blob_row(out: str) -> str:
    """The blobs row of a gc report, its columns one space apart."""
    return " ".join(next(line for line in out.splitlines() if line.startswith("blobs")).split())


def test_cli_reports_blobs(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock(datetime.now(timezone.utc) - timedelta(days=30, hours=2))
    with agentdur.Runtime(database_url, executor_id="old", clock=clock) as rt:
        sizes = make_documents(rt, clock, database_url)
    stored = sizes["only-a"] + sizes["shared"] + sizes["orphan"]
    assert 1024 < stored < 1024 * 1024
    args = ["gc", "--older-than", "1d", "--batch", "1", "--database-url", database_url]
    code = main([*args, "--dry-run"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert blob_row(out) == f"blobs (big values kept once) 3 ({stored / 1024:.1f} KiB stored)"
    code = main([*args, "--json"])
    report = json.loads(capsys.readouterr()[0])
    assert (code, report["dry_run"], report["runs"]) == (0, False, 3)
    assert (report["blobs"], report["blob_bytes"]) == (3, stored)
    assert main(["gc", "--older-than", "0s", "--database-url", database_url]) == 0
    kept = sizes["kept"] / 1024
    assert (
        blob_row(capsys.readouterr()[0])
        == f"blobs (big values kept once) 1 ({kept:.1f} KiB stored)"
    )
    assert query(database_url, "SELECT count(*) FROM {p}blobs") == [(0,)]


def test_cli_include_domain_keys(old_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["gc", "--older-than", "2d", "--include-domain-keys", "--batch", "2"]
    code = main([*args, "--database-url", old_db])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "in 2 batches:" in out
    assert "\nledger entries (domain keys)            1\n" in out
    assert "under domain keys" not in out
    assert snapshot(old_db)["effects"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--older-than", "30x"],
            "argument --older-than: expected a duration such as 30d, 12h, 15m or 0s, "
            "got '30x' (see `agentdur gc --help`)",
        ),
        (
            ["--older-than=-1d"],
            "argument --older-than: expected a duration such as 30d, 12h, 15m or 0s, "
            "got '-1d' (see `agentdur gc --help`)",
        ),
        (
            ["--older-than", "1d", "--status", "RUNNING"],
            "argument --status: invalid choice: 'RUNNING' (choose from 'SUCCEEDED', 'FAILED', "
            "'CANCELLED') (see `agentdur gc --help`)",
        ),
        (
            ["--older-than", "1d", "--batch", "0"],
            "argument --batch: expected a positive whole number, got '0' "
            "(see `agentdur gc --help`)",
        ),
        ([], "the following arguments are required: --older-than (see `agentdur gc --help`)"),
    ],
)
def test_cli_bad_arguments(
    database_url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["gc", *args, "--database-url", database_url])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"agentdur: error: {message}\n"


def test_cli_missing_sqlite_database(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    code = main(["gc", "--older-than", "1d", "--database-url", url])
    _, err = capsys.readouterr()
    assert code == 2
    assert err == (
        f"agentdur: error: no SQLite database at {tmp_path / 'none.db'}: give --database-url "
        "or set AGENTDUR_DATABASE_URL\n"
    )
    assert not (tmp_path / "none.db").exists()


# -- beside live executors -------------------------------------------------------------

GATE: list[str] = []
"""The database URL: a live run's step waits until gc has deleted the first old run."""


@agentdur.step
async def tick(i: int) -> int:
    if i == 5:
        while query(GATE[0], "SELECT 1 FROM {p}runs WHERE run_id = ?", ("old-000",)):
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.002)
    return i + 1


@agentdur.workflow(name="gc.live")
async def live_work(steps: int) -> int:
    return sum([await tick(i) for i in range(steps)])


def test_gc_beside_a_live_runtime_executing_runs(database_url: str, backend: str) -> None:
    GATE[:] = [database_url]
    old = Clock(datetime.now(timezone.utc) - timedelta(days=10))
    with agentdur.Runtime(database_url, executor_id="past", clock=old) as past:
        handles = [past.start(work, 5, run_id=f"old-{i:03}") for i in range(400)]
        assert [h.result(timeout=120) for h in handles] == [15] * 400
    reports: list[agentdur.GcReport] = []
    stop = threading.Event()

    def collect() -> None:
        with agentdur.Runtime(database_url, executor_id="cron") as cron:
            while not stop.is_set():
                reports.append(cron.gc(older_than=timedelta(days=1), batch=5))

    collector = threading.Thread(target=collect)
    with agentdur.Runtime(database_url, executor_id="live") as live:
        # every live run is under way (and stays so until gc has deleted a first batch)
        handles = [live.start(live_work, 30, run_id=f"live-{i:02}") for i in range(40)]
        collector.start()
        try:
            results = [h.result(timeout=120) for h in handles]
        finally:
            stop.set()
            collector.join(timeout=120)
        assert results == [sum(range(1, 31))] * 40
        assert {live.get_run(f"live-{i:02}").status for i in range(40)} == {"SUCCEEDED"}
        assert all(len(live.steps(f"live-{i:02}")) == 30 for i in range(40))
    assert sum(r.runs for r in reports) == 400
    assert sum(r.steps for r in reports) == 2000
    assert sum(r.batches for r in reports) == 80
    assert [row[0] for row in snapshot(database_url)["runs"]] == [f"live-{i:02}" for i in range(40)]
    longest = max(r.longest_batch_seconds for r in reports)
    print(f"\n[gc beside live runs, {backend}] longest batch {longest * 1000:.2f} ms")
