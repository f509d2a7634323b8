"""The store interface: every read and write agentdur makes, written once for both dialects.

`SqlStore` holds the logic of each operation; the dialect modules (`sqlite.py`,
`postgres.py`) hold the SQL text as module constants under identical names, plus the
connection mechanics and value conversions (JSON as TEXT or JSONB, time as text or
TIMESTAMPTZ). Nothing outside `agentdur/store/` writes SQL.

Invariants live in the statements: a step write or a run's final write names the epoch
it was started with and touches no row when another executor took the run over since, in
which case the store raises `FencedError`.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import datetime
from importlib import resources
from types import ModuleType
from typing import Any, Protocol

from typing_extensions import LiteralString

from agentdur.errors import FencedError, SchemaVersionError

logger = logging.getLogger(__name__)

UNFINISHED = ("PENDING", "ENQUEUED", "RUNNING", "WAITING", "NEEDS_ATTENTION")
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """One run as recorded."""

    run_id: str
    workflow: str
    status: str
    """PENDING, ENQUEUED, RUNNING, WAITING, NEEDS_ATTENTION, SUCCEEDED, FAILED or CANCELLED."""
    input: Any
    """`{"args": [...], "kwargs": {...}}` as JSON."""
    output: Any = None
    error: Any = None
    """`{"type", "message", "traceback", ...}` when the run failed."""
    parent_run_id: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None
    queue: str | None = None
    priority: int = 0
    dedup_id: str | None = None
    owner: str | None = None
    lease_until: datetime | None = None
    epoch: int = 0
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metadata: Any = None


@dataclass(frozen=True, kw_only=True)
class StepInfo:
    """One recorded step of a run."""

    run_id: str
    step_index: int
    name: str
    kind: str
    """step, llm, tool, sleep, recv, child or transaction."""
    status: str
    """STARTED, WAITING, SUCCEEDED or ERROR."""
    input: Any = None
    output: Any = None
    error: Any = None
    attempts: int = 1
    idempotency_key: str | None = None
    request_hash: str | None = None
    model: str | None = None
    usage: Any = None
    started_at: datetime
    finished_at: datetime | None = None
    inherited_from: str | None = None
    edited: bool = False
    dry_run: bool = False
    deduplicated: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, if finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


RUN_COLUMNS = tuple(f.name for f in fields(RunInfo))
STEP_COLUMNS = tuple(f.name for f in fields(StepInfo))
_RUN_JSON = {"input", "output", "error", "metadata"}
_STEP_JSON = {"input", "output", "error", "usage"}
_RUN_TIME = {"lease_until", "created_at", "started_at", "finished_at"}
_STEP_TIME = {"started_at", "finished_at"}
_STEP_BOOL = {"edited", "dry_run", "deduplicated"}


class Cursor(Protocol):
    """The slice of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def fetchall(self) -> Sequence[Sequence[Any]]: ...
    def fetchone(self) -> Sequence[Any] | None: ...


class SqlStore(ABC):
    """The operations of a store, over a dialect's SQL constants and connection."""

    sql: ModuleType
    """The dialect module whose constants hold the statements."""
    dialect: str
    url: str
    """The database URL with its password masked."""

    # -- dialect mechanics -------------------------------------------------------------

    @abstractmethod
    def open(self) -> None:
        """Connect (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (idempotent)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error."""

    @abstractmethod
    def statement(self) -> AbstractContextManager[Cursor]:
        """A cursor for one statement that is its own transaction (the cheap path)."""

    @abstractmethod
    def _json_param(self, text: str | None) -> Any:
        """A JSON text as the dialect's parameter (SQL casts it where needed)."""

    @abstractmethod
    def _json_value(self, value: Any) -> Any:
        """A JSON column as Python data."""

    @abstractmethod
    def _time_param(self, when: datetime | None) -> Any: ...

    @abstractmethod
    def _time_value(self, value: Any) -> datetime | None: ...

    @abstractmethod
    def _lock_migrations(self, cur: Cursor) -> None:
        """Serialise concurrent migrators inside the migration transaction."""

    # -- schema ------------------------------------------------------------------------

    def migrations(self) -> list[tuple[int, str, str]]:
        """(version, file name, SQL) of every migration shipped for this dialect."""
        folder = resources.files("agentdur.store") / "migrations" / self.dialect
        found = []
        for entry in folder.iterdir():
            match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
            if match:
                found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
        return sorted(found)

    def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty database."""
        with self.statement() as cur:
            cur.execute(self.sql.SCHEMA_VERSION_TABLE_EXISTS)
            if not cur.fetchone():
                return 0
            cur.execute(self.sql.SCHEMA_VERSION)
            row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def ensure_schema(self, *, migrate: bool) -> None:
        """Check the schema version; apply pending migrations when `migrate` is true."""
        expected = self.migrations()[-1][0]
        found = self.schema_version()
        if found > expected:
            raise SchemaVersionError(
                f"the database at {self.url} has schema version {found}, made by a newer "
                f"agentdur; this one knows up to version {expected}. Upgrade agentdur; "
                "nothing was migrated.",
                found=found,
                expected=expected,
            )
        if found == expected:
            return
        if not migrate:
            raise SchemaVersionError(
                f"the database at {self.url} has schema version {found}, this agentdur needs "
                f"{expected}: run `agentdur db migrate --database-url ...` (automatic "
                "migration is turned off)",
                found=found,
                expected=expected,
            )
        self.migrate()

    def migrate(self) -> list[int]:
        """Apply every pending migration, each in one transaction with its version row."""
        applied = []
        for version, name, text in self.migrations():
            with self.transaction() as cur:
                self._lock_migrations(cur)
                cur.execute(self.sql.CREATE_SCHEMA_VERSION)
                cur.execute(self.sql.SCHEMA_VERSION)
                row = cur.fetchone()
                current = int(row[0]) if row and row[0] is not None else 0
                if current >= version:
                    continue
                for statement in split_statements(text):
                    cur.execute(statement)
                cur.execute(self.sql.INSERT_SCHEMA_VERSION, {"version": version, "name": name})
                applied.append(version)
                logger.info("applied migration %s to %s", name, self.url)
        return applied

    # -- runs --------------------------------------------------------------------------

    def create_run(self, run: RunInfo, *, input_json: str) -> bool:
        """Insert a new run; False when a run with that id exists already (nothing written)."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.statement() as cur:
            cur.execute(self.sql.CREATE_RUN, params)
            return cur.rowcount == 1

    def get_run(self, run_id: str) -> RunInfo | None:
        with self.statement() as cur:
            cur.execute(self.sql.GET_RUN, {"run_id": run_id})
            row = cur.fetchone()
        return self._run(row) if row else None

    def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        params = {"status": status, "workflow": workflow, "limit": limit}
        with self.statement() as cur:
            cur.execute(self.sql.LIST_RUNS, params)
            rows = cur.fetchall()
        return [self._run(row) for row in rows]

    def finish_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: str,
        output_json: str | None,
        error_json: str | None,
        now: datetime,
    ) -> None:
        """Write a run's outcome; `FencedError` if the run is no longer ours at `epoch`."""
        params = {
            "run_id": run_id,
            "epoch": epoch,
            "status": status,
            "output": self._json_param(output_json),
            "error": self._json_param(error_json),
            "now": self._time_param(now),
        }
        with self.statement() as cur:
            cur.execute(self.sql.FINISH_RUN, params)
            if cur.rowcount != 1:
                raise FencedError(run_id, epoch)

    def claim_run(
        self, run_id: str, *, owner: str, now: datetime, lease_until: datetime
    ) -> RunInfo | None:
        """Take a run this executor may run (its own, unowned, or with an expired lease).

        Bumps the epoch, so any earlier owner's later writes are refused.
        """
        params = {
            "run_id": run_id,
            "owner": owner,
            "now": self._time_param(now),
            "lease_until": self._time_param(lease_until),
        }
        with self.statement() as cur:
            cur.execute(self.sql.CLAIM_RUN, params)
            row = cur.fetchone()
        return self._run(row) if row else None

    def recoverable_runs(self, *, owner: str, now: datetime) -> list[tuple[str, str]]:
        """(run_id, workflow) of unfinished runs this executor may take, oldest first."""
        with self.statement() as cur:
            cur.execute(self.sql.RECOVERABLE_RUNS, {"owner": owner, "now": self._time_param(now)})
            return [(row[0], row[1]) for row in cur.fetchall()]

    def heartbeat(
        self, *, executor_id: str, host: str, pid: int, now: datetime, lease_until: datetime
    ) -> set[str]:
        """Record that the executor lives and extend its leases; returns the runs it owns."""
        params = {
            "executor_id": executor_id,
            "host": host,
            "pid": pid,
            "now": self._time_param(now),
            "lease_until": self._time_param(lease_until),
        }
        with self.transaction() as cur:
            cur.execute(self.sql.UPSERT_EXECUTOR, params)
            cur.execute(self.sql.EXTEND_LEASES, params)
            return {row[0] for row in cur.fetchall()}

    def cancel_run(self, run_id: str, *, now: datetime) -> bool:
        """Mark an unfinished run CANCELLED; False if it had finished already."""
        with self.statement() as cur:
            cur.execute(self.sql.CANCEL_RUN, {"run_id": run_id, "now": self._time_param(now)})
            return cur.rowcount == 1

    # -- steps -------------------------------------------------------------------------

    def steps(self, run_id: str) -> list[StepInfo]:
        """Every recorded step of a run in index order: one query."""
        with self.statement() as cur:
            cur.execute(self.sql.LOAD_STEPS, {"run_id": run_id})
            rows = cur.fetchall()
        return [self._step(row) for row in rows]

    def record_step(
        self,
        step: StepInfo,
        *,
        epoch: int,
        input_json: str | None,
        output_json: str | None,
        error_json: str | None,
        cur: Cursor | None = None,
    ) -> None:
        """Write a finished step: one statement, refused (`FencedError`) unless we own the run.

        With `cur`, the write joins that transaction (transactional steps).
        """
        params = self._step_params(step)
        params.update(
            epoch=epoch,
            input=self._json_param(input_json),
            output=self._json_param(output_json),
            error=self._json_param(error_json),
        )
        if cur is not None:
            cur.execute(self.sql.RECORD_STEP, params)
            if cur.rowcount != 1:
                raise FencedError(step.run_id, epoch)
            return
        with self.statement() as own:
            own.execute(self.sql.RECORD_STEP, params)
            if own.rowcount != 1:
                raise FencedError(step.run_id, epoch)

    def create_forked_run(
        self, run: RunInfo, *, input_json: str, steps: Sequence[StepInfo]
    ) -> bool:
        """Insert a new run with copied steps in one transaction; False if the id is taken."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.transaction() as cur:
            cur.execute(self.sql.CREATE_RUN, params)
            if cur.rowcount != 1:
                return False
            for step in steps:
                cur.execute(self.sql.COPY_STEP, self._step_params(step))
        return True

    # -- row mapping -------------------------------------------------------------------

    def _run_params(self, run: RunInfo) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name in RUN_COLUMNS:
            value = getattr(run, name)
            if name in _RUN_TIME:
                value = self._time_param(value)
            elif name in _RUN_JSON:
                value = self._json_param(None if value is None else _dumps(value))
            params[name] = value
        return params

    def _step_params(self, step: StepInfo) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name in STEP_COLUMNS:
            value = getattr(step, name)
            if name in _STEP_TIME:
                value = self._time_param(value)
            elif name in _STEP_JSON:
                value = self._json_param(None if value is None else _dumps(value))
            params[name] = value
        return params

    def _run(self, row: Sequence[Any]) -> RunInfo:
        values = dict(zip(RUN_COLUMNS, row, strict=True))
        for name in _RUN_JSON:
            values[name] = self._json_value(values[name])
        for name in _RUN_TIME:
            values[name] = self._time_value(values[name])
        return RunInfo(**values)

    def _step(self, row: Sequence[Any]) -> StepInfo:
        values = dict(zip(STEP_COLUMNS, row, strict=True))
        for name in _STEP_JSON:
            values[name] = self._json_value(values[name])
        for name in _STEP_TIME:
            values[name] = self._time_value(values[name])
        for name in _STEP_BOOL:
            values[name] = bool(values[name])
        return StepInfo(**values)


def _dumps(value: Any) -> str:
    from agentdur.codec import dumps

    return dumps(value)


def split_statements(text: str) -> Iterator[LiteralString]:
    """Split a migration file into statements at semicolons that end a line."""
    statement: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("--") and not statement:
            continue
        statement.append(line)
        if line.rstrip().endswith(";"):
            sql = "\n".join(statement).strip()
            statement = []
            if sql:
                yield sql  # type: ignore[misc]
    rest = "\n".join(statement).strip()
    if rest:
        yield rest  # type: ignore[misc]
