"""SQLite store: stdlib sqlite3 in WAL mode, safe for several processes on one machine.

One connection per store, shared by the runtime's threads under a lock; each write is
one short transaction (`BEGIN IMMEDIATE` when it spans statements, so concurrent writers
queue on SQLite's lock instead of failing). `synchronous=FULL` by default: a recorded
step survives power loss, not only a crash of the process.

The statements below carry the same names as in postgres.py, so the dialects can be read
side by side.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agentdur import codec
from agentdur.errors import ConfigurationError, StoreError, StoreUnavailable
from agentdur.store.base import Cursor, SqlStore

RUN_COLUMNS_SQL = (
    "run_id, workflow, status, input, output, error, parent_run_id, forked_from, forked_at, "
    "queue, priority, dedup_id, owner, lease_until, epoch, attempts, created_at, started_at, "
    "finished_at, metadata"
)
STEP_COLUMNS_SQL = (
    "run_id, step_index, name, kind, status, input, output, error, attempts, idempotency_key, "
    "request_hash, model, usage, started_at, finished_at, inherited_from, edited, dry_run, "
    "deduplicated"
)

SCHEMA_VERSION_TABLE_EXISTS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
)
SCHEMA_VERSION = "SELECT max(version) FROM schema_version"
CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
)"""
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (version, name) VALUES (:version, :name)"

CREATE_RUN = (
    "INSERT INTO runs (" + RUN_COLUMNS_SQL + ") VALUES (:run_id, :workflow, :status, :input, "
    ":output, :error, :parent_run_id, :forked_from, :forked_at, :queue, :priority, :dedup_id, "
    ":owner, :lease_until, :epoch, :attempts, :created_at, :started_at, :finished_at, "
    ":metadata) ON CONFLICT (run_id) DO NOTHING"
)
GET_RUN = "SELECT " + RUN_COLUMNS_SQL + " FROM runs WHERE run_id = :run_id"
LIST_RUNS = (
    "SELECT " + RUN_COLUMNS_SQL + " FROM runs"
    " WHERE (:status IS NULL OR status = :status) AND (:workflow IS NULL OR workflow = :workflow)"
    " ORDER BY created_at DESC, run_id LIMIT :limit"
)
FINISH_RUN = """
UPDATE runs SET status = :status, output = :output, error = :error, finished_at = :now,
    owner = NULL, lease_until = NULL
WHERE run_id = :run_id AND epoch = :epoch AND status = 'RUNNING'"""
# Which runs an executor may take: its own (released by a database fault), due wake-ups
# of runs outside queues, and with `others` any unowned run, any whose lease expired and
# any whose owner is a dead process on this host (`dead`, a JSON list of executor ids).
_TAKEABLE = """(
    (status IN ('PENDING', 'RUNNING') AND (owner = :owner OR (:others AND (owner IS NULL
        OR lease_until < :now OR owner IN (SELECT value FROM json_each(:dead))))))
    OR (status = 'WAITING' AND queue IS NULL AND lease_until < :now))"""
CLAIM_RUN = (
    "UPDATE runs SET owner = :owner, epoch = epoch + 1, lease_until = :lease_until,"
    " status = 'RUNNING', started_at = coalesce(started_at, :now), attempts = attempts + 1"
    " WHERE run_id = :run_id AND " + _TAKEABLE + " RETURNING " + RUN_COLUMNS_SQL
)
RECOVERABLE_RUNS = "SELECT run_id, workflow FROM runs WHERE " + _TAKEABLE + " ORDER BY created_at"
WAKE_QUEUED = """
UPDATE runs SET status = 'ENQUEUED', lease_until = NULL
WHERE status = 'WAITING' AND queue IS NOT NULL AND lease_until < :now"""
UPSERT_EXECUTOR = """
INSERT INTO executors (executor_id, host, pid, heartbeat_at, process_started)
VALUES (:executor_id, :host, :pid, :now, :process_started)
ON CONFLICT (executor_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    heartbeat_at = excluded.heartbeat_at, process_started = excluded.process_started"""
EXECUTORS_ON_HOST = """
SELECT executor_id, pid, process_started FROM executors WHERE host = :host"""
EXTEND_LEASES = """
UPDATE runs SET lease_until = :lease_until
WHERE owner = :executor_id AND status = 'RUNNING'
    AND (run_id, epoch) IN (SELECT json_extract(value, '$.run_id'),
        json_extract(value, '$.epoch') FROM json_each(:runs))
RETURNING run_id"""
RELEASE_RUN = """
UPDATE runs SET status = CASE WHEN queue IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
    owner = NULL, lease_until = NULL
WHERE run_id = :run_id AND epoch = :epoch AND status = 'RUNNING'"""
CANCEL_RUN = """
UPDATE runs SET status = 'CANCELLED', finished_at = :now, owner = NULL, lease_until = NULL
WHERE run_id = :run_id
    AND status IN ('PENDING', 'ENQUEUED', 'RUNNING', 'WAITING', 'NEEDS_ATTENTION')"""

LOAD_STEPS = "SELECT " + STEP_COLUMNS_SQL + " FROM steps WHERE run_id = :run_id ORDER BY step_index"
RECORD_STEP = (
    "INSERT INTO steps (" + STEP_COLUMNS_SQL + ")"
    " SELECT :run_id, :step_index, :name, :kind, :status, :input, :output, :error, :attempts,"
    " :idempotency_key, :request_hash, :model, :usage, :started_at, :finished_at,"
    " :inherited_from, :edited, :dry_run, :deduplicated"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = :run_id AND epoch = :epoch"
    " AND status = 'RUNNING')"
    " ON CONFLICT (run_id, step_index) DO UPDATE SET status = excluded.status,"
    " output = excluded.output, error = excluded.error, attempts = excluded.attempts,"
    " usage = excluded.usage, finished_at = excluded.finished_at"
    " WHERE steps.status IN ('STARTED', 'WAITING')"
)

COPY_STEP = (
    "INSERT INTO steps (" + STEP_COLUMNS_SQL + ") VALUES (:run_id, :step_index, :name, :kind,"
    " :status, :input, :output, :error, :attempts, :idempotency_key, :request_hash, :model,"
    " :usage, :started_at, :finished_at, :inherited_from, :edited, :dry_run, :deduplicated)"
)

# A fork's inherited steps: the source's rows as stored (packed, blobs by reference),
# under the new run id, naming the run they were first recorded in.
INHERIT_STEPS = (
    "INSERT INTO steps (" + STEP_COLUMNS_SQL + ") SELECT :run_id, step_index, name, kind,"
    " status, input, output, error, attempts, idempotency_key, request_hash, model, usage,"
    " started_at, finished_at, coalesce(inherited_from, :source), edited, dry_run,"
    " deduplicated FROM steps WHERE run_id = :source AND step_index < :below"
)
INHERIT_STEP_BLOBS = (
    "INSERT INTO step_blobs (run_id, step_index, hash) SELECT :run_id, step_index, hash"
    " FROM step_blobs WHERE run_id = :source AND step_index < :below"
)
SAVE_BLOB = (
    "INSERT INTO blobs (hash, size, data) VALUES (:hash, :size, :data)"
    " ON CONFLICT (hash) DO NOTHING"
)
LINK_BLOB = (
    "INSERT INTO step_blobs (run_id, step_index, hash) VALUES (:run_id, :step_index, :hash)"
    " ON CONFLICT DO NOTHING"
)
LOAD_BLOBS = (
    "SELECT l.step_index, b.hash, b.data FROM step_blobs AS l JOIN blobs AS b ON b.hash = l.hash"
    " WHERE l.run_id = :run_id"
)
GET_STEP_BLOBS = (
    "SELECT l.step_index, b.hash, b.data FROM step_blobs AS l JOIN blobs AS b ON b.hash = l.hash"
    " WHERE l.run_id = :run_id AND l.step_index = :step_index"
)

BEGIN_EFFECT = """
INSERT INTO effects (idempotency_key, run_id, step_index, tool, status, created_at)
VALUES (:idempotency_key, :run_id, :step_index, :tool, 'STARTED', :now)
ON CONFLICT (idempotency_key) DO NOTHING"""
GET_EFFECT = """
SELECT idempotency_key, run_id, step_index, tool, status, result FROM effects
WHERE idempotency_key = :idempotency_key"""
FINISH_EFFECT = """
UPDATE effects SET status = 'DONE', result = :result, finished_at = :now
WHERE idempotency_key = :idempotency_key"""
RELEASE_EFFECT = """
DELETE FROM effects
WHERE idempotency_key = :idempotency_key AND run_id = :run_id AND step_index = :step_index
    AND status = 'STARTED'"""
SUSPEND_RUN = """
UPDATE runs SET status = :status, owner = NULL, lease_until = :wake_at, error = :error
WHERE run_id = :run_id AND epoch = :epoch AND status = 'RUNNING'"""
RELEASE_WAITING_RUN = """
UPDATE runs SET status = CASE WHEN queue IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
    owner = NULL, lease_until = NULL, error = NULL
WHERE run_id = :run_id AND status IN ('WAITING', 'NEEDS_ATTENTION')"""
COUNT_STARTED_STEPS = """
SELECT count(*) FROM steps WHERE run_id = :run_id
    AND status = 'STARTED'"""
DELETE_STARTED_STEP = """
DELETE FROM steps WHERE run_id = :run_id AND step_index = :step_index
    AND status IN ('STARTED', 'WAITING')"""
RESOLVE_STEP = """
UPDATE steps SET status = :status, output = :output, error = :error, finished_at = :now
WHERE run_id = :run_id AND step_index = :step_index AND status IN ('STARTED', 'WAITING')"""
NEXT_MESSAGE_SEQ = "SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE run_id = :run_id"
SEND_MESSAGE = """
INSERT INTO messages (run_id, seq, topic, value, created_at)
VALUES (:run_id, :seq, :topic, :value, :now)"""
TAKE_MESSAGE = """
SELECT seq, value FROM messages
WHERE run_id = :run_id AND topic = :topic AND NOT consumed ORDER BY seq LIMIT 1"""
CONSUME_MESSAGE = "UPDATE messages SET consumed = 1 WHERE run_id = :run_id AND seq = :seq"
LOCK_RUN = "SELECT status FROM runs WHERE run_id = :run_id"
GET_STEP = (
    "SELECT " + STEP_COLUMNS_SQL + " FROM steps WHERE run_id = :run_id AND step_index = :step_index"
)
LATEST_MESSAGE = """
SELECT value FROM messages WHERE run_id = :run_id AND topic = :topic ORDER BY seq DESC LIMIT 1"""

TOOL_CALL_COLUMNS_SQL = (
    "run_id, agent, step_index, tool, arguments, result, error, effect, idempotency_key, "
    "status, attempts, started_at, finished_at, inherited, inherited_from, dry_run, deduplicated"
)
TOOL_CALLS = (
    "SELECT " + TOOL_CALL_COLUMNS_SQL + " FROM tool_calls"
    " WHERE (:tool IS NULL OR tool = :tool) AND (:run_id IS NULL OR run_id = :run_id)"
    " AND (:agent IS NULL OR agent = :agent) AND (:since IS NULL OR started_at >= :since)"
    " AND (:status IS NULL OR status = :status) AND (:effect IS NULL OR effect = :effect)"
    " ORDER BY started_at, run_id, step_index"
)
_LLM_USAGE_WHERE = (
    " WHERE NOT inherited AND NOT edited AND (:run_id IS NULL OR run_id = :run_id)"
    " AND (:agent IS NULL OR agent = :agent) AND (:since IS NULL OR started_at >= :since)"
)
LLM_USAGE_BY_RUN = (
    "SELECT run_id, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
    " FROM llm_calls" + _LLM_USAGE_WHERE + " GROUP BY run_id ORDER BY min(started_at), run_id"
)
LLM_USAGE_BY_AGENT = (
    "SELECT agent, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
    " FROM llm_calls" + _LLM_USAGE_WHERE + " GROUP BY agent ORDER BY agent"
)
LLM_USAGE_BY_MODEL = (
    "SELECT model, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
    " FROM llm_calls" + _LLM_USAGE_WHERE + " GROUP BY model ORDER BY model"
)
RUN_TREE = (
    "WITH RECURSIVE tree (run_id) AS (SELECT run_id FROM runs WHERE run_id = :run_id"
    " UNION SELECT runs.run_id FROM runs JOIN tree ON runs.forked_from = tree.run_id)"
    " SELECT " + RUN_COLUMNS_SQL + " FROM runs WHERE run_id IN (SELECT run_id FROM tree)"
    " ORDER BY created_at, run_id"
)

# The web UI's reads (ui_queries.py): a keyset page of runs, newest first (the caller
# passes a cursor past the newest run for the first page), and the steps an operator
# must decide on.
RUNS_PAGE = (
    "SELECT " + RUN_COLUMNS_SQL + " FROM runs"
    " WHERE (created_at, run_id) < (:before_created, :before_run_id)"
    " AND created_at >= :since AND created_at < :until"
    " AND (:status IS NULL OR status = :status) AND (:workflow IS NULL OR workflow = :workflow)"
    " ORDER BY created_at DESC, run_id DESC LIMIT :limit"
)
INBOX_STEPS = (
    "SELECT s.run_id, s.step_index, s.name, s.kind, s.status, s.input, s.output, s.error,"
    " s.attempts, s.idempotency_key, s.request_hash, s.model, s.usage, s.started_at,"
    " s.finished_at, s.inherited_from, s.edited, s.dry_run, s.deduplicated"
    " FROM runs AS r"
    " JOIN steps AS s ON s.run_id = r.run_id"
    " WHERE r.status IN ('WAITING', 'NEEDS_ATTENTION') AND s.kind = 'tool'"
    " AND s.status IN ('WAITING', 'STARTED')"
    " ORDER BY r.created_at DESC, r.run_id, s.step_index LIMIT :limit"
)

ENSURE_QUEUE = (
    "INSERT INTO queues (name, created_at) VALUES (:name, :now) ON CONFLICT (name) DO NOTHING"
)
ENQUEUE_RUN = (
    "INSERT INTO runs (" + RUN_COLUMNS_SQL + ") VALUES (:run_id, :workflow, :status, :input,"
    " :output, :error, :parent_run_id, :forked_from, :forked_at, :queue, :priority, :dedup_id,"
    " :owner, :lease_until, :epoch, :attempts, :created_at, :started_at, :finished_at,"
    " :metadata) ON CONFLICT DO NOTHING"
)
NOTIFY_ENQUEUED = "SELECT :queue"
FIND_QUEUED_DUPLICATE = (
    "SELECT " + RUN_COLUMNS_SQL + " FROM runs WHERE queue = :queue AND dedup_id = :dedup_id"
    " AND status IN ('ENQUEUED', 'PENDING', 'RUNNING', 'WAITING', 'NEEDS_ATTENTION')"
)
LOCK_QUEUE = "SELECT name FROM queues WHERE name = :queue"
QUEUE_RUNNING = "SELECT count(*) FROM runs WHERE queue = :queue AND status = 'RUNNING'"
QUEUE_STARTED_SINCE = "SELECT count(*) FROM runs WHERE queue = :queue AND started_at >= :since"
QUEUE_FIRST_START_SINCE = (
    "SELECT min(started_at) FROM runs WHERE queue = :queue AND started_at >= :since"
)
QUEUE_READY = """
SELECT run_id FROM runs WHERE queue = :queue AND status = 'ENQUEUED'
ORDER BY priority, created_at, run_id LIMIT :limit"""
TAKE_QUEUED = (
    "UPDATE runs SET status = 'RUNNING', owner = :owner, epoch = epoch + 1,"
    " lease_until = :lease_until, started_at = :now, attempts = attempts + 1"
    " WHERE run_id = :run_id AND status = 'ENQUEUED' RETURNING " + RUN_COLUMNS_SQL
)
REQUEUE_RUN = """
UPDATE runs SET status = 'ENQUEUED', owner = NULL, lease_until = NULL, started_at = NULL
WHERE run_id = :run_id AND epoch = :epoch AND status = 'RUNNING'"""
RELEASE_OWNED = """
UPDATE runs SET status = 'PENDING', owner = NULL, lease_until = NULL
WHERE owner = :owner AND status = 'RUNNING'"""
RATE_WINDOW = """
SELECT count(*), coalesce(sum(tokens), 0), min(at) FROM rate_events
WHERE limiter = :limiter AND at > :since"""
RATE_INSERT = """
INSERT INTO rate_events (limiter, at, event, tokens) VALUES (:limiter, :now, :event, :tokens)"""
RATE_SETTLE = "UPDATE rate_events SET tokens = :tokens WHERE limiter = :limiter AND event = :event"
RATE_PRUNE = "DELETE FROM rate_events WHERE limiter = :limiter AND at <= :before"

_TRANSIENT_CODES = {5, 6, 10, 14, 15}
"""SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_PROTOCOL."""
_TRANSIENT_WORDS = ("locked", "busy", "disk i/o", "unable to open")
# Retention (store/retention.py). Collectable: a finished run in :statuses (a JSON list),
# finished before :before. A run a kept run was forked from is kept, up the fork chain.
_GC_COLLECTABLE = "status IN (SELECT value FROM json_each(:statuses)) AND finished_at < :before"
_GC_KEPT_SOURCES = (
    "WITH RECURSIVE kept_sources (run_id) AS ("
    " SELECT forked_from FROM runs WHERE forked_from IS NOT NULL"
    " AND NOT coalesce(" + _GC_COLLECTABLE + ", 0)"
    " UNION SELECT runs.forked_from FROM runs JOIN kept_sources"
    " ON runs.run_id = kept_sources.run_id WHERE runs.forked_from IS NOT NULL)"
)
_GC_IDS = "(SELECT value FROM json_each(:run_ids))"
_GC_OWN_KEY = "idempotency_key = run_id || ':' || step_index"
GC_CANDIDATES = (
    _GC_KEPT_SOURCES
    + " SELECT run_id, finished_at FROM runs WHERE "
    + _GC_COLLECTABLE
    + " AND (:after_time IS NULL OR finished_at > :after_time"
    " OR (finished_at = :after_time AND run_id > :after_id))"
    " AND run_id NOT IN (SELECT run_id FROM kept_sources)"
    " ORDER BY finished_at, run_id LIMIT :limit"
)
GC_FORK_SOURCES = (
    _GC_KEPT_SOURCES
    + " SELECT count(*) FROM runs WHERE "
    + _GC_COLLECTABLE
    + " AND run_id IN (SELECT run_id FROM kept_sources)"
)
GC_COUNT = (
    "SELECT (SELECT count(*) FROM steps WHERE run_id IN " + _GC_IDS + "),"
    " (SELECT count(*) FROM messages WHERE run_id IN " + _GC_IDS + "),"
    " (SELECT count(*) FROM effects WHERE run_id IN " + _GC_IDS + " AND " + _GC_OWN_KEY + "),"
    " (SELECT count(*) FROM effects WHERE run_id IN " + _GC_IDS + " AND NOT " + _GC_OWN_KEY + ")"
)
GC_DELETE_RUNS = (
    "DELETE FROM runs WHERE run_id IN "
    + _GC_IDS
    + " AND "
    + _GC_COLLECTABLE
    + " AND NOT EXISTS (SELECT 1 FROM runs AS fork WHERE fork.forked_from = runs.run_id"
    " AND NOT coalesce(fork.status IN (SELECT value FROM json_each(:statuses))"
    " AND fork.finished_at < :before, 0)) RETURNING run_id"
)
GC_COUNT_DOMAIN_EFFECTS = (
    "SELECT count(*) FROM effects WHERE run_id IN " + _GC_IDS + " AND NOT " + _GC_OWN_KEY
)
GC_DELETE_DOMAIN_EFFECTS = (
    "DELETE FROM effects WHERE run_id IN " + _GC_IDS + " AND NOT " + _GC_OWN_KEY
)
GC_DELETE_RUN_EFFECTS = "DELETE FROM effects WHERE run_id IN " + _GC_IDS + " AND " + _GC_OWN_KEY
GC_DELETE_MESSAGES = "DELETE FROM messages WHERE run_id IN " + _GC_IDS
GC_DELETE_STEPS = "DELETE FROM steps WHERE run_id IN " + _GC_IDS
GC_DELETE_STEP_BLOBS = "DELETE FROM step_blobs WHERE run_id IN " + _GC_IDS
# (count, stored bytes) of the blobs no step outside :run_ids references: what
# GC_DELETE_BLOBS deletes once those runs are gone (a dry run's count).
GC_COUNT_BLOBS = (
    "SELECT count(*), coalesce(sum(length(b.data)), 0) FROM blobs AS b"
    " WHERE NOT EXISTS (SELECT 1 FROM step_blobs AS l WHERE l.hash = b.hash"
    " AND l.run_id NOT IN (SELECT value FROM json_each(:run_ids)))"
)
GC_DELETE_BLOBS = (
    "DELETE FROM blobs WHERE NOT EXISTS"
    " (SELECT 1 FROM step_blobs WHERE step_blobs.hash = blobs.hash)"
    " RETURNING length(data)"
)

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_PAGE_SIZE = "PRAGMA page_size=2048"
"""Half SQLite's default. Every table and index costs a page even when empty (an empty
agentdur database is ~35 of them), and a commit writes whole pages to the WAL: 2 KiB
pages halve the first and make the second cheaper, while a typical step row (an LLM
response with a tool call, ~1-2 KB) still fits one page (see docs/design-decisions.md)."""

_SYNCHRONOUS = {
    "FULL": "PRAGMA synchronous=FULL",
    "NORMAL": "PRAGMA synchronous=NORMAL",
    "OFF": "PRAGMA synchronous=OFF",
}


class SqliteStore(SqlStore):
    """Store on a SQLite file (or `:memory:` for throwaway use).

    Three kinds of connection, so that nothing waits behind what it does not need:
    the shared one (reads and operators' writes, under a lock), the writer's (group
    commits of executing runs, see writer.py) and one per transactional step. WAL mode
    lets reads proceed while a write is under way. A `:memory:` database exists only
    on one connection, so there all of them are the shared one.
    """

    dialect = "sqlite"
    sql = sys.modules[__name__]

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        write_retry_seconds: float = 60.0,
    ):
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        super().__init__(write_retry_seconds=write_retry_seconds)
        self.path = path
        self.url = f"sqlite:///{path}"
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreUnavailable(
                    f"cannot open SQLite database {self.url}: folder {parent} does not exist",
                    url=self.url,
                )
        # Switching a new file to WAL takes its lock without waiting for a busy one, so
        # processes opening a fresh database together retry that for the busy timeout.
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.01
        while True:
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                # Only a new file takes the page size (before WAL writes its first page);
                # an existing database keeps its own.
                conn.execute(_PAGE_SIZE)
                conn.execute("PRAGMA journal_mode=WAL")
                # Checkpoint often so the WAL file stays small and is reused from its
                # start: appending to a growing WAL costs ~100 us more per commit.
                conn.execute("PRAGMA wal_autocheckpoint=100")
                conn.execute(_SYNCHRONOUS[self._synchronous])
                return conn
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                if not self._is_transient(exc) or time.monotonic() + delay > deadline:
                    raise StoreUnavailable(
                        f"cannot open SQLite database {self.url}: {exc}", url=self.url
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _open_connections(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()

    def _close_connections(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    @contextmanager
    def statement(self) -> Iterator[Cursor]:
        group = self._group_cursor()
        if group is not None:
            yield group
            return
        with self._lock, self._edge():
            cur = self._connection().cursor()
            try:
                yield cur
            finally:
                cur.close()

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        group = self._group_cursor()
        if group is not None:
            with self._savepoint(group):
                yield group
            return
        with self._lock, self._edge():
            conn = self._connection()
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    @contextmanager
    def _group_transaction(self) -> Iterator[Cursor]:
        if self.path == ":memory:":
            with self.transaction() as cur:
                self._local.cursor = cur
                try:
                    yield cur
                finally:
                    self._local.cursor = None
            return
        if self._writer_conn is None:
            self._writer_conn = self._connect()
        conn = self._writer_conn
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        self._local.cursor = cur
        try:
            yield cur
        except BaseException:
            self._local.cursor = None
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
        else:
            self._local.cursor = None
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _close_writer(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, (sqlite3.Error, StoreError))

    def _is_transient(self, exc: BaseException) -> bool:
        # Busy or locked past the busy timeout, an I/O error, a file briefly unopenable:
        # the same work may succeed later. A missing table or a constraint is the
        # statement's own fault.
        if isinstance(exc, StoreUnavailable):
            return True
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None:
            return (code & 0xFF) in _TRANSIENT_CODES
        return any(word in str(exc).lower() for word in _TRANSIENT_WORDS)

    @contextmanager
    def dedicated_transaction(self) -> Iterator[tuple[Any, Cursor]]:
        # A connection of its own: the shared one may be used by other steps meanwhile.
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(_SYNCHRONOUS[self._synchronous])
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield conn, cur
            except BaseException:
                conn.rollback()
                raise
            else:
                cur.execute("COMMIT")
        finally:
            conn.close()

    def wait_for_enqueue(self, timeout: float) -> bool:
        """SQLite has no notifications: an idle worker polls, this is its pause."""
        time.sleep(timeout)
        return False

    def _lock_migrations(self, cur: Cursor) -> None:
        # BEGIN IMMEDIATE already holds SQLite's write lock for the whole migration.
        pass

    def _json_param(self, text: str | None) -> Any:
        return text

    def _json_value(self, value: Any) -> Any:
        return None if value is None else codec.loads(value)

    def _time_param(self, when: datetime | None) -> Any:
        if when is None:
            return None
        return when.astimezone(timezone.utc).strftime(_TIME_FORMAT)

    def _time_value(self, value: Any) -> datetime | None:
        if value is None:
            return None
        # The text _time_param writes is ISO 8601 with a space: fromisoformat reads it
        # several times faster than strptime (it shows when a long run is loaded).
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
