"""The core of the store: the row types, the dialect mechanics and the schema chain.

`StoreCore` is what every group of operations (base.py: runs and steps; effects.py:
the effect ledger, suspension and messages; queueing.py: queues and rate limits)
builds on: a dialect's SQL constants, its connection mechanics, its value conversions
and the mapping between rows and `RunInfo` / `StepInfo`.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from importlib import resources
from types import ModuleType
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from typing_extensions import LiteralString

from agentdur.errors import FencedError, SchemaVersionError, StoreError, StoreUnavailable
from agentdur.store.writer import GroupWriter

logger = logging.getLogger(__name__)

UNFINISHED = ("PENDING", "ENQUEUED", "RUNNING", "WAITING", "NEEDS_ATTENTION")
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
T = TypeVar("T")


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


R = TypeVar("R")
P = ParamSpec("P")
S = TypeVar("S", bound="StoreCore")


def retrying_read(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A read retried through transient faults (a dropped connection, a restart).

    Reads are idempotent, so the store retries them itself, with backoff, for up to
    `write_retry_seconds`, as the writer does for writes; a caller (a handle waiting on
    a run, the scheduler, the CLI) then meets `StoreUnavailable` only when the database
    stays away. Inside a writer group the writer handles faults instead.
    """

    @functools.wraps(method)
    def read(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._group_cursor() is not None:
            return method(self, *args, **kwargs)
        deadline = time.monotonic() + self.write_retry_seconds
        delay = 0.02
        while True:
            try:
                return method(self, *args, **kwargs)
            except StoreUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                self._after_fault()
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 1.0)

    return read


class Cursor(Protocol):
    """The slice of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def fetchall(self) -> Sequence[Sequence[Any]]: ...
    def fetchone(self) -> Sequence[Any] | None: ...


class StoreCore(ABC):
    """A dialect's statements, connection and conversions, shared by every operation."""

    sql: ModuleType
    """The dialect module whose constants hold the statements."""
    dialect: str
    url: str
    """The database URL with its password masked."""
    writer_threads = 1
    """Writer threads, each with a connection of its own (writer.py)."""
    max_value_bytes: int = 16 * 1024 * 1024
    """The cap on one recorded value as JSON (UTF-8 bytes), which the callers encoding
    values check (`codec.dumps(..., limit=...)`); `Runtime(max_value_bytes=...)` sets it."""

    def __init__(self, *, write_retry_seconds: float) -> None:
        self.write_retry_seconds = write_retry_seconds
        """How long the writer retries a group through transient faults (writer.py)."""
        self._local = threading.local()
        self._writer: GroupWriter | None = None
        self._writer_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Connect (idempotent); the writer thread starts with the first write through it."""
        self._open_connections()

    def close(self) -> None:
        """Commit queued writes, stop the writer and release connections (idempotent)."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self._close_connections()

    @property
    def writer(self) -> GroupWriter:
        """The one write path of executing runs (see writer.py)."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = GroupWriter(
                    self, retry_seconds=self.write_retry_seconds, threads=self.writer_threads
                )
            return self._writer

    async def awrite(self, fn: Callable[[], T]) -> T:
        """Execute a blocking store write in the writer's next group, from an event loop."""
        return await self.writer.acall(fn)

    def write(self, fn: Callable[[], T]) -> T:
        """Blocking form of `awrite`, for threads other than an event loop's."""
        return self.writer.call(fn)

    # -- dialect mechanics -------------------------------------------------------------

    @abstractmethod
    def _open_connections(self) -> None:
        """Connect (idempotent)."""

    @abstractmethod
    def _close_connections(self) -> None:
        """Release connections (idempotent)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        In the writer thread, the group's transaction under a savepoint.
        """

    @abstractmethod
    def statement(self) -> AbstractContextManager[Cursor]:
        """A cursor for one statement that is its own transaction (the cheap path).

        In the writer thread, the group's cursor.
        """

    @abstractmethod
    def dedicated_transaction(self) -> AbstractContextManager[tuple[Any, Cursor]]:
        """(connection, cursor) of a transaction on a connection of its own.

        For transactional steps: the user's code writes through the connection, the
        step's checkpoint through the cursor, and both commit together or not at all.
        """

    @abstractmethod
    def _group_transaction(self) -> AbstractContextManager[Cursor]:
        """The writer's transaction for one group, on the writer's own connection."""

    @abstractmethod
    def _close_writer(self) -> None:
        """Drop the writer's connection (after a fault; the next group reconnects)."""

    def _after_fault(self) -> None:
        """After a transient fault: let go of connections the fault may have broken.

        A pooled connection killed while idle is only found out when used; without
        this, a retry could take another dead one, and the next, for as long as the
        fault lasts (connections dropped every 200 ms outlive no backoff). Nothing to
        do without a pool (SQLite).
        """
        return None

    @abstractmethod
    def _is_driver_error(self, exc: BaseException) -> bool:
        """The driver raised it (or the store translated it): the transaction it happened
        in may be unusable."""

    @abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """A fault of the database or the connection, worth retrying the same work."""

    def _translate(self, exc: BaseException) -> BaseException:
        """A driver error as the agentdur error a caller can act on (the cause chained):
        `StoreUnavailable` for a fault worth retrying, `StoreError` for a refusal."""
        if isinstance(exc, StoreError) or not self._is_driver_error(exc):
            return exc
        detail = " ".join(str(exc).split())
        error: StoreError
        if self._is_transient(exc):
            error = StoreUnavailable(
                f"the database at {self.url} is unreachable: {type(exc).__name__}: {detail}",
                url=self.url,
            )
        else:
            error = StoreError(f"the database at {self.url} refused: {detail}")
        error.__cause__ = exc
        return error

    @contextmanager
    def _edge(self) -> Iterator[None]:
        """Where driver errors become agentdur errors (outside the writer's groups, whose
        faults the writer handles itself)."""
        try:
            yield
        except BaseException as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _group_cursor(self) -> Cursor | None:
        """The writer group's cursor when called inside a group, else None."""
        return getattr(self._local, "cursor", None)

    @contextmanager
    def _savepoint(self, cur: Cursor) -> Iterator[None]:
        """Undo one job alone inside a group (a job that raises leaves no partial write)."""
        cur.execute("SAVEPOINT agentdur_job")
        try:
            yield
        except BaseException:
            cur.execute("ROLLBACK TO SAVEPOINT agentdur_job")
            cur.execute("RELEASE SAVEPOINT agentdur_job")
            raise
        else:
            cur.execute("RELEASE SAVEPOINT agentdur_job")

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

    # -- writing steps inside a transaction -------------------------------------------

    def _step_write(
        self,
        cur: Cursor,
        step: StepInfo,
        epoch: int,
        input_json: str | None,
        output_json: str | None,
        error_json: str | None,
    ) -> None:
        input_json, output_json, error_json, blobs = extract_blobs(
            input_json, output_json, error_json
        )
        params = self._step_params(step, payload=False)
        params.update(
            epoch=epoch,
            input=self._json_param(input_json),
            output=self._json_param(output_json),
            error=self._json_param(error_json),
        )
        self._save_blobs(cur, blobs)
        cur.execute(self.sql.RECORD_STEP, params)
        if cur.rowcount != 1:
            raise FencedError(step.run_id, epoch)
        self._link_blobs(cur, step, blobs)

    def _save_blobs(self, cur: Cursor, blobs: dict[str, tuple[int, bytes]]) -> None:
        """Keep each blob once (a blob already there is shared)."""
        for digest, (size, data) in sorted(blobs.items()):
            cur.execute(self.sql.SAVE_BLOB, {"hash": digest, "size": size, "data": data})

    def _link_blobs(self, cur: Cursor, step: StepInfo, blobs: dict[str, tuple[int, bytes]]) -> None:
        """Record which blobs the step references (what loading and gc read)."""
        for digest in sorted(blobs):
            keys = {"run_id": step.run_id, "step_index": step.step_index, "hash": digest}
            cur.execute(self.sql.LINK_BLOB, keys)

    def _stored_step(self, cur: Cursor, run_id: str, step_index: int) -> StepInfo | None:
        """One step as stored (tool calls packed), its blobs resolved."""
        from agentdur.store import payloads

        keys = {"run_id": run_id, "step_index": step_index}
        cur.execute(self.sql.GET_STEP, keys)
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(self.sql.GET_STEP_BLOBS, keys)
        blobs = payloads.hashes(cur.fetchall())
        return StepInfo(**payloads.with_blobs(self._step_values(row), blobs.get(step_index, {})))

    def unpacked(self, steps: Sequence[StepInfo]) -> list[StepInfo]:
        """Stored steps (blobs resolved) as recorded before packing, reading the LLM steps
        their tool calls name when those are not among them."""
        from agentdur.store import payloads

        present = {(s.run_id, s.step_index) for s in steps}
        wanted = {
            (s.run_id, int(s.input["llm"])) for s in steps if payloads.is_tool_reference(s)
        } - present
        others: dict[tuple[str, int], StepInfo] = {}
        if wanted:
            with self.statement() as cur:
                for run_id, index in sorted(wanted):
                    found = self._stored_step(cur, run_id, index)
                    if found is not None:
                        others[(run_id, index)] = found
        return payloads.expand(steps, others)

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
        return StepInfo(**self._step_values(row))

    def _step_values(self, row: Sequence[Any]) -> dict[str, Any]:
        """A step row as StepInfo's field values (JSON decoded, times and flags typed)."""
        values = dict(zip(STEP_COLUMNS, row, strict=True))
        for name in _STEP_JSON:
            values[name] = self._json_value(values[name])
        for name in _STEP_TIME:
            values[name] = self._time_value(values[name])
        for name in _STEP_BOOL:
            values[name] = bool(values[name])
        return values


def _dumps(value: Any) -> str:
    from agentdur.codec import dumps

    return dumps(value)


def extract_blobs(
    *texts: str | None,
) -> tuple[str | None, str | None, str | None, dict[str, tuple[int, bytes]]]:
    """A step's input, output and error JSON with big strings replaced by blob references,
    and those blobs (hash -> (size, zlib bytes)); see payloads.py."""
    from agentdur.store.payloads import extract_blobs as extract

    blobs: dict[str, tuple[int, bytes]] = {}
    out: list[str | None] = []
    for text in texts:
        packed, found = extract(text)
        out.append(packed)
        blobs.update(found)
    return out[0], out[1], out[2], blobs


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
