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
from dataclasses import dataclass, fields, replace
from datetime import datetime
from importlib import resources
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from typing_extensions import LiteralString

from agentdur.errors import FencedError, SchemaVersionError

if TYPE_CHECKING:
    from agentdur.store.audit_queries import ToolCallRecord, UsageRecord

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


@dataclass(frozen=True)
class Effect:
    """One entry of the effect ledger."""

    key: str
    run_id: str
    step_index: int
    tool: str
    status: str
    """STARTED (the call may be under way, or may have happened) or DONE."""
    result: Any = None


RUN_COLUMNS = tuple(f.name for f in fields(RunInfo))
STEP_COLUMNS = tuple(f.name for f in fields(StepInfo))
_RUN_JSON = {"input", "output", "error", "metadata"}
_STEP_JSON = {"input", "output", "error", "usage"}
_STEP_PAYLOAD = {"input", "output", "error"}
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
    def dedicated_transaction(self) -> AbstractContextManager[tuple[Any, Cursor]]:
        """(connection, cursor) of a transaction on a connection of its own.

        For transactional steps: the user's code writes through the connection, the
        step's checkpoint through the cursor, and both commit together or not at all.
        """

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
        params = self._step_params(step, payload=False)
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

    # -- effects, suspension, messages ------------------------------------------------

    def _step_write(
        self,
        cur: Cursor,
        step: StepInfo,
        epoch: int,
        input_json: str | None,
        output_json: str | None,
        error_json: str | None,
    ) -> None:
        params = self._step_params(step, payload=False)
        params.update(
            epoch=epoch,
            input=self._json_param(input_json),
            output=self._json_param(output_json),
            error=self._json_param(error_json),
        )
        cur.execute(self.sql.RECORD_STEP, params)
        if cur.rowcount != 1:
            raise FencedError(step.run_id, epoch)

    def begin_effect(
        self, step: StepInfo, *, epoch: int, key: str, input_json: str, now: datetime
    ) -> Effect | None:
        """Claim the ledger entry of a side effect and record its step STARTED, together.

        Returns None when the entry is ours (new, or from an earlier attempt of this very
        step), else the entry another step holds under the same key (nothing written).
        """
        with self.transaction() as cur:
            cur.execute(
                self.sql.BEGIN_EFFECT,
                {
                    "idempotency_key": key,
                    "run_id": step.run_id,
                    "step_index": step.step_index,
                    "tool": step.name,
                    "now": self._time_param(now),
                },
            )
            if cur.rowcount != 1:
                cur.execute(self.sql.GET_EFFECT, {"idempotency_key": key})
                row = cur.fetchone()
                assert row is not None
                existing = Effect(
                    key=row[0],
                    run_id=row[1],
                    step_index=row[2],
                    tool=row[3],
                    status=row[4],
                    result=self._json_value(row[5]),
                )
                if (existing.run_id, existing.step_index) != (step.run_id, step.step_index):
                    return existing
            self._step_write(cur, step, epoch, input_json, None, None)
        return None

    def finish_effect(
        self,
        step: StepInfo,
        *,
        epoch: int,
        key: str,
        input_json: str | None,
        output_json: str,
        now: datetime,
    ) -> None:
        """Mark the ledger entry DONE with its result and record the step, together."""
        with self.transaction() as cur:
            cur.execute(
                self.sql.FINISH_EFFECT,
                {
                    "idempotency_key": key,
                    "result": self._json_param(output_json),
                    "now": self._time_param(now),
                },
            )
            self._step_write(cur, step, epoch, input_json, output_json, None)

    def release_effect(
        self, step: StepInfo, *, epoch: int, key: str, input_json: str | None, error_json: str
    ) -> None:
        """The tool raised: free the ledger entry and record the step's error, together."""
        with self.transaction() as cur:
            cur.execute(
                self.sql.RELEASE_EFFECT,
                {"idempotency_key": key, "run_id": step.run_id, "step_index": step.step_index},
            )
            self._step_write(cur, step, epoch, input_json, None, error_json)

    def suspend_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: str,
        wake_at: datetime | None,
        error_json: str | None = None,
        step: StepInfo | None = None,
        input_json: str | None = None,
    ) -> None:
        """Release a run as WAITING or NEEDS_ATTENTION (optionally recording a step)."""
        with self.transaction() as cur:
            if step is not None:
                self._step_write(cur, step, epoch, input_json, None, None)
            cur.execute(
                self.sql.SUSPEND_RUN,
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "status": status,
                    "wake_at": self._time_param(wake_at),
                    "error": self._json_param(error_json),
                },
            )
            if cur.rowcount != 1:
                raise FencedError(run_id, epoch)

    def resolve_step(
        self,
        run_id: str,
        step_index: int,
        *,
        action: str,
        output_json: str | None,
        error_json: str | None,
        now: datetime,
    ) -> StepInfo:
        """Apply an operator's decision on a step and make its run runnable again.

        The run must be NEEDS_ATTENTION (or WAITING) and the step STARTED or WAITING;
        otherwise `ValueError` says which. Returns the step as it was.
        """
        with self.transaction() as cur:
            cur.execute(self.sql.LOCK_RUN, {"run_id": run_id})
            run_row = cur.fetchone()
            if run_row is None or run_row[0] not in ("NEEDS_ATTENTION", "WAITING"):
                raise ValueError(f"run is {run_row[0] if run_row else 'missing'}")
            cur.execute(self.sql.GET_STEP, {"run_id": run_id, "step_index": step_index})
            row = cur.fetchone()
            if row is None:
                raise ValueError(f"step {step_index} is not recorded")
            step = self._step(row)
            if step.status not in ("STARTED", "WAITING"):
                raise ValueError(f"step {step_index} is {step.status}, not waiting for a decision")
            keys = {"run_id": run_id, "step_index": step_index}
            effect = {"idempotency_key": step.idempotency_key, **keys}
            if action == "retry":
                cur.execute(self.sql.RELEASE_EFFECT, effect)
                cur.execute(self.sql.DELETE_STARTED_STEP, keys)
            elif action == "result":
                cur.execute(
                    self.sql.FINISH_EFFECT,
                    {
                        **effect,
                        "result": self._json_param(output_json),
                        "now": self._time_param(now),
                    },
                )
                self._resolve(cur, keys, "SUCCEEDED", output_json, None, now)
            else:
                cur.execute(self.sql.RELEASE_EFFECT, effect)
                self._resolve(cur, keys, "ERROR", None, error_json, now)
            cur.execute(self.sql.RELEASE_WAITING_RUN, {"run_id": run_id})
        return step

    def _resolve(
        self,
        cur: Cursor,
        keys: dict[str, Any],
        status: str,
        output_json: str | None,
        error_json: str | None,
        now: datetime,
    ) -> None:
        cur.execute(
            self.sql.RESOLVE_STEP,
            {
                **keys,
                "status": status,
                "output": self._json_param(output_json),
                "error": self._json_param(error_json),
                "now": self._time_param(now),
            },
        )

    def send_message(
        self, run_id: str, topic: str, *, value_json: str, now: datetime
    ) -> str | None:
        """Deliver a message to a run; a WAITING run becomes runnable. Returns its status."""
        with self.transaction() as cur:
            cur.execute(self.sql.LOCK_RUN, {"run_id": run_id})
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(self.sql.NEXT_MESSAGE_SEQ, {"run_id": run_id})
            seq_row = cur.fetchone()
            assert seq_row is not None
            cur.execute(
                self.sql.SEND_MESSAGE,
                {
                    "run_id": run_id,
                    "seq": seq_row[0],
                    "topic": topic,
                    "value": self._json_param(value_json),
                    "now": self._time_param(now),
                },
            )
            if row[0] == "WAITING":
                cur.execute(self.sql.RELEASE_WAITING_RUN, {"run_id": run_id})
            return str(row[0])

    def take_or_wait(
        self,
        step: StepInfo,
        *,
        epoch: int,
        topic: str,
        consume: bool,
        input_json: str | None,
        wake_at: datetime | None,
        wait: bool = True,
    ) -> tuple[bool, Any]:
        """Take a message for a step, or suspend the run WAITING for one, atomically.

        With `consume`, the oldest unconsumed message on `topic` is consumed and the step
        recorded SUCCEEDED with it (recv); without, the newest message is only read (a
        decision such as an approval). When there is none and `wait`, the step is
        recorded WAITING and the run released until a message or `wake_at`. The run row
        is locked first, so a message sent meanwhile is never missed.
        """
        with self.transaction() as cur:
            cur.execute(self.sql.LOCK_RUN, {"run_id": step.run_id})
            keys = {"run_id": step.run_id, "topic": topic}
            cur.execute(self.sql.TAKE_MESSAGE if consume else self.sql.LATEST_MESSAGE, keys)
            row = cur.fetchone()
            if row is not None:
                if not consume:
                    return True, self._json_value(row[0])
                cur.execute(self.sql.CONSUME_MESSAGE, {"run_id": step.run_id, "seq": row[0]})
                value = self._json_value(row[1])
                output = None if row[1] is None else _dumps(value)
                self._step_write(cur, step, epoch, input_json, output, None)
                return True, value
            if wait:
                waiting = replace(step, status="WAITING", finished_at=None)
                self._step_write(cur, waiting, epoch, input_json, None, None)
                cur.execute(
                    self.sql.SUSPEND_RUN,
                    {
                        "run_id": step.run_id,
                        "epoch": epoch,
                        "status": "WAITING",
                        "wake_at": self._time_param(wake_at),
                        "error": None,
                    },
                )
                if cur.rowcount != 1:
                    raise FencedError(step.run_id, epoch)
            return False, None

    def latest_message(self, run_id: str, topic: str) -> tuple[bool, Any]:
        """The newest message on a topic without consuming it (decisions such as approval)."""
        with self.statement() as cur:
            cur.execute(self.sql.LATEST_MESSAGE, {"run_id": run_id, "topic": topic})
            row = cur.fetchone()
        return (False, None) if row is None else (True, self._json_value(row[0]))

    # -- audit (audit_queries.py holds these; they read the views of migration 0002) ---

    def tool_calls(self, **filters: Any) -> list[ToolCallRecord]:
        """Tool calls, oldest first: `audit_queries.tool_calls` names the filters."""
        from agentdur.store import audit_queries

        return audit_queries.tool_calls(self, **filters)

    def llm_usage(self, *, group_by: str, **filters: Any) -> list[UsageRecord]:
        """Tokens per run, agent or model: see `audit_queries.llm_usage`."""
        from agentdur.store import audit_queries

        return audit_queries.llm_usage(self, group_by=group_by, **filters)

    def run_tree(self, run_id: str) -> list[RunInfo]:
        """The run and every run forked from it, recursively, oldest first."""
        from agentdur.store import audit_queries

        return audit_queries.run_tree(self, run_id)

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

    def _step_params(self, step: StepInfo, *, payload: bool = True) -> dict[str, Any]:
        """Statement parameters of a step; without `payload`, input/output/error are
        left for the caller, who has them as JSON text already."""
        params: dict[str, Any] = {}
        for name in STEP_COLUMNS:
            value = getattr(step, name)
            if name in _STEP_TIME:
                value = self._time_param(value)
            elif name in _STEP_PAYLOAD and not payload:
                continue
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
