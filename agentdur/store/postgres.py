"""PostgreSQL store: psycopg 3 with a connection pool, JSONB values, schema `agentdur`.

Connections are in autocommit mode, so a one-statement operation (a step checkpoint) is
one round trip and one commit. The fencing check of a step write locks the run row
`FOR SHARE`, so a takeover (which updates that row) and a late write of the old owner
are serialised: either the write lands before the takeover reads the recording, or it is
refused.

The statements below carry the same names as in sqlite.py.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from agentdur import codec
from agentdur.errors import StoreError, StoreUnavailable
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
    "SELECT 1 FROM pg_tables WHERE schemaname = 'agentdur' AND tablename = 'schema_version'"
)
SCHEMA_VERSION = "SELECT max(version) FROM agentdur.schema_version"
CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS agentdur.schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""
INSERT_SCHEMA_VERSION = (
    "INSERT INTO agentdur.schema_version (version, name) VALUES (%(version)s, %(name)s)"
)
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(4242001)"
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS agentdur"

CREATE_RUN = (
    "INSERT INTO agentdur.runs (" + RUN_COLUMNS_SQL + ") VALUES (%(run_id)s, %(workflow)s,"
    " %(status)s, %(input)s::jsonb, %(output)s::jsonb, %(error)s::jsonb, %(parent_run_id)s,"
    " %(forked_from)s, %(forked_at)s, %(queue)s, %(priority)s, %(dedup_id)s, %(owner)s,"
    " %(lease_until)s, %(epoch)s, %(attempts)s, %(created_at)s, %(started_at)s,"
    " %(finished_at)s, %(metadata)s::jsonb) ON CONFLICT (run_id) DO NOTHING"
)
GET_RUN = "SELECT " + RUN_COLUMNS_SQL + " FROM agentdur.runs WHERE run_id = %(run_id)s"
LIST_RUNS = (
    "SELECT " + RUN_COLUMNS_SQL + " FROM agentdur.runs"
    " WHERE (%(status)s::text IS NULL OR status = %(status)s)"
    " AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)"
    " ORDER BY created_at DESC, run_id LIMIT %(limit)s"
)
FINISH_RUN = """
UPDATE agentdur.runs SET status = %(status)s, output = %(output)s::jsonb,
    error = %(error)s::jsonb, finished_at = %(now)s, owner = NULL, lease_until = NULL
WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'RUNNING'"""
# Which runs an executor may take: its own (released by a database fault), due wake-ups
# of runs outside queues, and with `others` any unowned run, any whose lease expired and
# any whose owner is a dead process on this host (`dead`, a JSON list of executor ids).
_TAKEABLE = """(
    (status IN ('PENDING', 'RUNNING') AND (owner = %(owner)s OR (%(others)s AND (owner IS NULL
        OR lease_until < %(now)s
        OR owner IN (SELECT jsonb_array_elements_text(%(dead)s::jsonb))))))
    OR (status = 'WAITING' AND queue IS NULL AND lease_until < %(now)s))"""
CLAIM_RUN = (
    "UPDATE agentdur.runs SET owner = %(owner)s, epoch = epoch + 1,"
    " lease_until = %(lease_until)s, status = 'RUNNING',"
    " started_at = coalesce(started_at, %(now)s), attempts = attempts + 1"
    " WHERE run_id = %(run_id)s AND " + _TAKEABLE + " RETURNING " + RUN_COLUMNS_SQL
)
RECOVERABLE_RUNS = (
    "SELECT run_id, workflow FROM agentdur.runs WHERE " + _TAKEABLE + " ORDER BY created_at"
)
WAKE_QUEUED = """
UPDATE agentdur.runs SET status = 'ENQUEUED', lease_until = NULL
WHERE status = 'WAITING' AND queue IS NOT NULL AND lease_until < %(now)s"""
UPSERT_EXECUTOR = """
INSERT INTO agentdur.executors (executor_id, host, pid, heartbeat_at, process_started)
VALUES (%(executor_id)s, %(host)s, %(pid)s, %(now)s, %(process_started)s)
ON CONFLICT (executor_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    heartbeat_at = excluded.heartbeat_at, process_started = excluded.process_started"""
EXECUTORS_ON_HOST = """
SELECT executor_id, pid, process_started FROM agentdur.executors WHERE host = %(host)s"""
EXTEND_LEASES = """
UPDATE agentdur.runs AS r SET lease_until = %(lease_until)s
FROM jsonb_to_recordset(%(runs)s::jsonb) AS a(run_id text, epoch int)
WHERE r.run_id = a.run_id AND r.epoch = a.epoch AND r.owner = %(executor_id)s
    AND r.status = 'RUNNING'
RETURNING r.run_id"""
RELEASE_RUN = """
UPDATE agentdur.runs SET status = CASE WHEN queue IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
    owner = NULL, lease_until = NULL
WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'RUNNING'"""
CANCEL_RUN = """
UPDATE agentdur.runs SET status = 'CANCELLED', finished_at = %(now)s, owner = NULL,
    lease_until = NULL
WHERE run_id = %(run_id)s
    AND status IN ('PENDING', 'ENQUEUED', 'RUNNING', 'WAITING', 'NEEDS_ATTENTION')"""

LOAD_STEPS = (
    "SELECT " + STEP_COLUMNS_SQL + " FROM agentdur.steps WHERE run_id = %(run_id)s"
    " ORDER BY step_index"
)
RECORD_STEP = (
    "INSERT INTO agentdur.steps (" + STEP_COLUMNS_SQL + ")"
    " SELECT %(run_id)s, %(step_index)s, %(name)s, %(kind)s, %(status)s, %(input)s::jsonb,"
    " %(output)s::jsonb, %(error)s::jsonb, %(attempts)s, %(idempotency_key)s,"
    " %(request_hash)s, %(model)s, %(usage)s::jsonb, %(started_at)s, %(finished_at)s,"
    " %(inherited_from)s, %(edited)s, %(dry_run)s, %(deduplicated)s"
    " WHERE EXISTS (SELECT 1 FROM agentdur.runs WHERE run_id = %(run_id)s"
    " AND epoch = %(epoch)s AND status = 'RUNNING' FOR SHARE)"
    " ON CONFLICT (run_id, step_index) DO UPDATE SET status = excluded.status,"
    " output = excluded.output, error = excluded.error, attempts = excluded.attempts,"
    " usage = excluded.usage, finished_at = excluded.finished_at"
    " WHERE agentdur.steps.status IN ('STARTED', 'WAITING')"
)

COPY_STEP = (
    "INSERT INTO agentdur.steps (" + STEP_COLUMNS_SQL + ") VALUES (%(run_id)s,"
    " %(step_index)s, %(name)s, %(kind)s, %(status)s, %(input)s::jsonb, %(output)s::jsonb,"
    " %(error)s::jsonb, %(attempts)s, %(idempotency_key)s, %(request_hash)s, %(model)s,"
    " %(usage)s::jsonb, %(started_at)s, %(finished_at)s, %(inherited_from)s, %(edited)s,"
    " %(dry_run)s, %(deduplicated)s)"
)
# See sqlite.py.
INHERIT_STEPS = (
    "INSERT INTO agentdur.steps (" + STEP_COLUMNS_SQL + ") SELECT %(run_id)s, step_index,"
    " name, kind, status, input, output, error, attempts, idempotency_key, request_hash,"
    " model, usage, started_at, finished_at, coalesce(inherited_from, %(source)s), edited,"
    " dry_run, deduplicated FROM agentdur.steps WHERE run_id = %(source)s"
    " AND step_index < %(below)s"
)
INHERIT_STEP_BLOBS = (
    "INSERT INTO agentdur.step_blobs (run_id, step_index, hash) SELECT %(run_id)s,"
    " step_index, hash FROM agentdur.step_blobs WHERE run_id = %(source)s"
    " AND step_index < %(below)s"
)

SAVE_BLOB = (
    "INSERT INTO agentdur.blobs (hash, size, data) VALUES (%(hash)s, %(size)s, %(data)s)"
    # DO UPDATE rather than DO NOTHING: the row lock makes a concurrent gc wait for this
    # transaction, whose step_blobs row then keeps the blob.
    " ON CONFLICT (hash) DO UPDATE SET size = excluded.size"
)
LINK_BLOB = (
    "INSERT INTO agentdur.step_blobs (run_id, step_index, hash)"
    " VALUES (%(run_id)s, %(step_index)s, %(hash)s) ON CONFLICT DO NOTHING"
)
LOAD_BLOBS = (
    "SELECT l.step_index, b.hash, b.data FROM agentdur.step_blobs AS l"
    " JOIN agentdur.blobs AS b ON b.hash = l.hash WHERE l.run_id = %(run_id)s"
)
GET_STEP_BLOBS = (
    "SELECT l.step_index, b.hash, b.data FROM agentdur.step_blobs AS l"
    " JOIN agentdur.blobs AS b ON b.hash = l.hash"
    " WHERE l.run_id = %(run_id)s AND l.step_index = %(step_index)s"
)

BEGIN_EFFECT = """
INSERT INTO agentdur.effects (idempotency_key, run_id, step_index, tool, status, created_at)
VALUES (%(idempotency_key)s, %(run_id)s, %(step_index)s, %(tool)s, 'STARTED', %(now)s)
ON CONFLICT (idempotency_key) DO NOTHING"""
GET_EFFECT = """
SELECT idempotency_key, run_id, step_index, tool, status, result FROM agentdur.effects
WHERE idempotency_key = %(idempotency_key)s"""
FINISH_EFFECT = """
UPDATE agentdur.effects SET status = 'DONE', result = %(result)s::jsonb, finished_at = %(now)s
WHERE idempotency_key = %(idempotency_key)s"""
RELEASE_EFFECT = """
DELETE FROM agentdur.effects
WHERE idempotency_key = %(idempotency_key)s AND run_id = %(run_id)s
    AND step_index = %(step_index)s AND status = 'STARTED'"""
SUSPEND_RUN = """
UPDATE agentdur.runs SET status = %(status)s, owner = NULL, lease_until = %(wake_at)s,
    error = %(error)s::jsonb
WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'RUNNING'"""
RELEASE_WAITING_RUN = """
UPDATE agentdur.runs SET status = CASE WHEN queue IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
    owner = NULL, lease_until = NULL, error = NULL
WHERE run_id = %(run_id)s AND status IN ('WAITING', 'NEEDS_ATTENTION')"""
COUNT_STARTED_STEPS = """
SELECT count(*) FROM agentdur.steps WHERE run_id = %(run_id)s
    AND status = 'STARTED'"""
DELETE_STARTED_STEP = """
DELETE FROM agentdur.steps WHERE run_id = %(run_id)s AND step_index = %(step_index)s
    AND status IN ('STARTED', 'WAITING')"""
RESOLVE_STEP = """
UPDATE agentdur.steps SET status = %(status)s, output = %(output)s::jsonb,
    error = %(error)s::jsonb, finished_at = %(now)s
WHERE run_id = %(run_id)s AND step_index = %(step_index)s AND status IN ('STARTED', 'WAITING')"""
NEXT_MESSAGE_SEQ = (
    "SELECT coalesce(max(seq), 0) + 1 FROM agentdur.messages WHERE run_id = %(run_id)s"
)
SEND_MESSAGE = """
INSERT INTO agentdur.messages (run_id, seq, topic, value, created_at)
VALUES (%(run_id)s, %(seq)s, %(topic)s, %(value)s::jsonb, %(now)s)"""
TAKE_MESSAGE = """
SELECT seq, value FROM agentdur.messages
WHERE run_id = %(run_id)s AND topic = %(topic)s AND NOT consumed ORDER BY seq LIMIT 1
FOR UPDATE"""
CONSUME_MESSAGE = (
    "UPDATE agentdur.messages SET consumed = TRUE WHERE run_id = %(run_id)s AND seq = %(seq)s"
)
LATEST_MESSAGE = """
SELECT value FROM agentdur.messages WHERE run_id = %(run_id)s AND topic = %(topic)s
ORDER BY seq DESC LIMIT 1"""
LOCK_RUN = "SELECT status FROM agentdur.runs WHERE run_id = %(run_id)s FOR UPDATE"
GET_STEP = (
    "SELECT " + STEP_COLUMNS_SQL + " FROM agentdur.steps"
    " WHERE run_id = %(run_id)s AND step_index = %(step_index)s"
)


TOOL_CALL_COLUMNS_SQL = (
    "run_id, agent, step_index, tool, arguments, result, error, effect, idempotency_key, "
    "status, attempts, started_at, finished_at, inherited, inherited_from, dry_run, deduplicated"
)
TOOL_CALLS = (
    "SELECT " + TOOL_CALL_COLUMNS_SQL + " FROM agentdur.tool_calls"
    " WHERE (%(tool)s::text IS NULL OR tool = %(tool)s)"
    " AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s)"
    " AND (%(agent)s::text IS NULL OR agent = %(agent)s)"
    " AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)"
    " AND (%(status)s::text IS NULL OR status = %(status)s)"
    " AND (%(effect)s::text IS NULL OR effect = %(effect)s)"
    " ORDER BY started_at, run_id, step_index"
)
_LLM_USAGE_WHERE = (
    " WHERE NOT inherited AND NOT edited AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s)"
    " AND (%(agent)s::text IS NULL OR agent = %(agent)s)"
    " AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)"
)
LLM_USAGE_BY_RUN = (
    "SELECT run_id, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
    " FROM agentdur.llm_calls"
    + _LLM_USAGE_WHERE
    + " GROUP BY run_id ORDER BY min(started_at), run_id"
)
LLM_USAGE_BY_AGENT = (
    "SELECT agent, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
    " FROM agentdur.llm_calls" + _LLM_USAGE_WHERE + " GROUP BY agent ORDER BY agent"
)
LLM_USAGE_BY_MODEL = (
    "SELECT model, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
    " FROM agentdur.llm_calls" + _LLM_USAGE_WHERE + " GROUP BY model ORDER BY model"
)
RUN_TREE = (
    "WITH RECURSIVE tree (run_id) AS ("
    "SELECT run_id FROM agentdur.runs WHERE run_id = %(run_id)s UNION"
    " SELECT r.run_id FROM agentdur.runs AS r JOIN tree ON r.forked_from = tree.run_id)"
    " SELECT " + RUN_COLUMNS_SQL + " FROM agentdur.runs"
    " WHERE run_id IN (SELECT run_id FROM tree) ORDER BY created_at, run_id"
)
# The web UI's reads (ui_queries.py), as in sqlite.py.
RUNS_PAGE = (
    "SELECT " + RUN_COLUMNS_SQL + " FROM agentdur.runs"
    " WHERE (created_at, run_id) < (%(before_created)s, %(before_run_id)s)"
    " AND created_at >= %(since)s AND created_at < %(until)s"
    " AND (%(status)s::text IS NULL OR status = %(status)s)"
    " AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)"
    " ORDER BY created_at DESC, run_id DESC LIMIT %(limit)s"
)
INBOX_STEPS = (
    "SELECT s.run_id, s.step_index, s.name, s.kind, s.status, s.input, s.output, s.error,"
    " s.attempts, s.idempotency_key, s.request_hash, s.model, s.usage, s.started_at,"
    " s.finished_at, s.inherited_from, s.edited, s.dry_run, s.deduplicated"
    " FROM agentdur.runs AS r"
    " JOIN agentdur.steps AS s ON s.run_id = r.run_id"
    " WHERE r.status IN ('WAITING', 'NEEDS_ATTENTION') AND s.kind = 'tool'"
    " AND s.status IN ('WAITING', 'STARTED')"
    " ORDER BY r.created_at DESC, r.run_id, s.step_index LIMIT %(limit)s"
)
ENSURE_QUEUE = """
INSERT INTO agentdur.queues (name, created_at) VALUES (%(name)s, %(now)s)
ON CONFLICT (name) DO NOTHING"""
ENQUEUE_RUN = (
    "INSERT INTO agentdur.runs (" + RUN_COLUMNS_SQL + ") VALUES (%(run_id)s, %(workflow)s,"
    " %(status)s, %(input)s::jsonb, %(output)s::jsonb, %(error)s::jsonb, %(parent_run_id)s,"
    " %(forked_from)s, %(forked_at)s, %(queue)s, %(priority)s, %(dedup_id)s, %(owner)s,"
    " %(lease_until)s, %(epoch)s, %(attempts)s, %(created_at)s, %(started_at)s,"
    " %(finished_at)s, %(metadata)s::jsonb) ON CONFLICT DO NOTHING"
)
NOTIFY_ENQUEUED = "SELECT pg_notify('agentdur_enqueued', %(queue)s)"
LISTEN_ENQUEUED = "LISTEN agentdur_enqueued"
FIND_QUEUED_DUPLICATE = (
    "SELECT " + RUN_COLUMNS_SQL + " FROM agentdur.runs WHERE queue = %(queue)s"
    " AND dedup_id = %(dedup_id)s"
    " AND status IN ('ENQUEUED', 'PENDING', 'RUNNING', 'WAITING', 'NEEDS_ATTENTION')"
)
LOCK_QUEUE = "SELECT name FROM agentdur.queues WHERE name = %(queue)s FOR UPDATE"
QUEUE_RUNNING = "SELECT count(*) FROM agentdur.runs WHERE queue = %(queue)s AND status = 'RUNNING'"
QUEUE_STARTED_SINCE = (
    "SELECT count(*) FROM agentdur.runs WHERE queue = %(queue)s AND started_at >= %(since)s"
)
QUEUE_FIRST_START_SINCE = (
    "SELECT min(started_at) FROM agentdur.runs WHERE queue = %(queue)s AND started_at >= %(since)s"
)
QUEUE_READY = """
SELECT run_id FROM agentdur.runs WHERE queue = %(queue)s AND status = 'ENQUEUED'
ORDER BY priority, created_at, run_id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED"""
TAKE_QUEUED = (
    "UPDATE agentdur.runs SET status = 'RUNNING', owner = %(owner)s, epoch = epoch + 1,"
    " lease_until = %(lease_until)s, started_at = %(now)s, attempts = attempts + 1"
    " WHERE run_id = %(run_id)s AND status = 'ENQUEUED' RETURNING " + RUN_COLUMNS_SQL
)
REQUEUE_RUN = """
UPDATE agentdur.runs SET status = 'ENQUEUED', owner = NULL, lease_until = NULL,
    started_at = NULL
WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'RUNNING'"""
RELEASE_OWNED = """
UPDATE agentdur.runs SET status = 'PENDING', owner = NULL, lease_until = NULL
WHERE owner = %(owner)s AND status = 'RUNNING'"""
RATE_WINDOW = """
SELECT count(*), coalesce(sum(tokens), 0), min(at) FROM agentdur.rate_events
WHERE limiter = %(limiter)s AND at > %(since)s"""
RATE_INSERT = """
INSERT INTO agentdur.rate_events (limiter, at, event, tokens)
VALUES (%(limiter)s, %(now)s, %(event)s, %(tokens)s)"""
RATE_SETTLE = (
    "UPDATE agentdur.rate_events SET tokens = %(tokens)s"
    " WHERE limiter = %(limiter)s AND event = %(event)s"
)
RATE_PRUNE = "DELETE FROM agentdur.rate_events WHERE limiter = %(limiter)s AND at <= %(before)s"


# Retention (store/retention.py). Collectable: a finished run in %(statuses)s (a JSON
# list), finished before %(before)s. A run a kept run was forked from is kept, up the chain.
_GC_COLLECTABLE = (
    "status IN (SELECT jsonb_array_elements_text(%(statuses)s::jsonb)) AND finished_at < %(before)s"
)
_GC_KEPT_SOURCES = (
    "WITH RECURSIVE kept_sources (run_id) AS ("
    " SELECT forked_from FROM agentdur.runs WHERE forked_from IS NOT NULL"
    " AND NOT coalesce(" + _GC_COLLECTABLE + ", FALSE)"
    " UNION SELECT runs.forked_from FROM agentdur.runs AS runs JOIN kept_sources"
    " ON runs.run_id = kept_sources.run_id WHERE runs.forked_from IS NOT NULL)"
)
_GC_IDS = "(SELECT jsonb_array_elements_text(%(run_ids)s::jsonb))"
_GC_OWN_KEY = "idempotency_key = run_id || ':' || step_index"
GC_CANDIDATES = (
    _GC_KEPT_SOURCES
    + " SELECT run_id, finished_at FROM agentdur.runs WHERE "
    + _GC_COLLECTABLE
    + " AND (%(after_time)s::timestamptz IS NULL OR finished_at > %(after_time)s"
    " OR (finished_at = %(after_time)s AND run_id > %(after_id)s))"
    " AND run_id NOT IN (SELECT run_id FROM kept_sources)"
    " ORDER BY finished_at, run_id LIMIT %(limit)s"
)
GC_FORK_SOURCES = (
    _GC_KEPT_SOURCES
    + " SELECT count(*) FROM agentdur.runs WHERE "
    + _GC_COLLECTABLE
    + " AND run_id IN (SELECT run_id FROM kept_sources)"
)
GC_COUNT = (
    "SELECT (SELECT count(*) FROM agentdur.steps WHERE run_id IN " + _GC_IDS + "),"
    " (SELECT count(*) FROM agentdur.messages WHERE run_id IN " + _GC_IDS + "),"
    " (SELECT count(*) FROM agentdur.effects WHERE run_id IN "
    + _GC_IDS
    + " AND "
    + _GC_OWN_KEY
    + "),"
    " (SELECT count(*) FROM agentdur.effects WHERE run_id IN "
    + _GC_IDS
    + " AND NOT "
    + _GC_OWN_KEY
    + ")"
)
GC_DELETE_RUNS = (
    "DELETE FROM agentdur.runs AS runs WHERE run_id IN "
    + _GC_IDS
    + " AND "
    + _GC_COLLECTABLE
    + " AND NOT EXISTS (SELECT 1 FROM agentdur.runs AS fork"
    " WHERE fork.forked_from = runs.run_id"
    " AND NOT coalesce(fork.status IN (SELECT jsonb_array_elements_text(%(statuses)s::jsonb))"
    " AND fork.finished_at < %(before)s, FALSE)) RETURNING run_id"
)
GC_COUNT_DOMAIN_EFFECTS = (
    "SELECT count(*) FROM agentdur.effects WHERE run_id IN " + _GC_IDS + " AND NOT " + _GC_OWN_KEY
)
GC_DELETE_DOMAIN_EFFECTS = (
    "DELETE FROM agentdur.effects WHERE run_id IN " + _GC_IDS + " AND NOT " + _GC_OWN_KEY
)
GC_DELETE_RUN_EFFECTS = (
    "DELETE FROM agentdur.effects WHERE run_id IN " + _GC_IDS + " AND " + _GC_OWN_KEY
)
GC_DELETE_MESSAGES = "DELETE FROM agentdur.messages WHERE run_id IN " + _GC_IDS
GC_DELETE_STEPS = "DELETE FROM agentdur.steps WHERE run_id IN " + _GC_IDS
GC_DELETE_STEP_BLOBS = "DELETE FROM agentdur.step_blobs WHERE run_id IN " + _GC_IDS
# See sqlite.py.
GC_COUNT_BLOBS = (
    "SELECT count(*), coalesce(sum(octet_length(b.data)), 0) FROM agentdur.blobs AS b"
    " WHERE NOT EXISTS (SELECT 1 FROM agentdur.step_blobs AS l WHERE l.hash = b.hash"
    " AND l.run_id NOT IN (SELECT jsonb_array_elements_text(%(run_ids)s::jsonb)))"
)
GC_DELETE_BLOBS = (
    "DELETE FROM agentdur.blobs AS b WHERE NOT EXISTS"
    " (SELECT 1 FROM agentdur.step_blobs AS l WHERE l.hash = b.hash)"
    " RETURNING octet_length(b.data)"
)


def mask_password(url: str) -> str:
    """The URL with its passwords replaced by ***: the one after the user name and any
    `password=` / `sslpassword=` query parameter (libpq takes both)."""
    import re
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in url:  # a key=value conninfo string
        return re.sub(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1***", url)
    parts = urlsplit(url)
    query = re.sub(r"(?i)(^|[&;])((?:ssl)?password=)[^&;]*", r"\1\2***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = userinfo.split(":", 1)[0] + ":***@" + host
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class PostgresStore(SqlStore):
    """Store on PostgreSQL, in schema `agentdur`.

    Connections, so that nothing waits behind what it does not need: a pool for reads
    and operators' writes, the writer's own connection (group commits of executing runs,
    see writer.py), and a second pool for transactional steps, whose transactions are
    held while user code runs and so must never starve the others. Every connection is
    named `agentdur` in `pg_stat_activity`.
    """

    dialect = "postgres"
    sql = sys.modules[__name__]
    writer_threads = 4

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        transaction_pool_size: int = 10,
        timeout: float = 10.0,
        write_retry_seconds: float = 60.0,
    ):
        super().__init__(write_retry_seconds=write_retry_seconds)
        self._conninfo = url
        self.url = mask_password(url)
        self._min_size = min_size
        self._max_size = max_size
        self._transaction_pool_size = transaction_pool_size
        self._timeout = timeout
        self._pool: Any = None
        self._tx_pool: Any = None
        self._listener: Any = None
        self._open_lock = threading.Lock()

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(1, int(self._timeout)),
            "application_name": "agentdur",
            "context": _adapters(),
        }

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._conninfo, **self._connect_kwargs())
        except psycopg.Error as exc:
            detail = " ".join(_masked(str(exc), self._conninfo).split()).rstrip(".?")
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self.url}: {detail}. "
                "Check that the server runs and the URL is right.",
                url=self.url,
            ) from None

    def _make_pool(self, name: str, min_size: int, max_size: int) -> Any:
        import psycopg_pool

        pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._connect_kwargs(),
            open=False,
            timeout=self._timeout,
            name=name,
        )
        try:
            pool.open(wait=True, timeout=self._timeout)
        except Exception as exc:
            pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self.url}: {type(exc).__name__}: "
                f"{_masked(str(exc), self._conninfo)}. Is the server running and the URL right?",
                url=self.url,
            ) from None
        return pool

    def _open_connections(self) -> None:
        with self._open_lock:
            if self._pool is not None:
                return
            # One direct attempt first: the pool would keep retrying until its timeout.
            self._connect().close()
            self._pool = self._make_pool("agentdur", self._min_size, self._max_size)

    def _close_connections(self) -> None:
        with self._open_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for name in ("_tx_pool", "_pool"):
                pool = getattr(self, name)
                if pool is not None:
                    pool.close()
                    setattr(self, name, None)

    def _get_pool(self) -> Any:
        if self._pool is None:
            self.open()
        return self._pool

    @contextmanager
    def statement(self) -> Iterator[Cursor]:
        group = self._group_cursor()
        if group is not None:
            yield group
            return
        with self._edge(), self._get_pool().connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        group = self._group_cursor()
        if group is not None:
            with self._savepoint(group):
                yield group
            return
        with (
            self._edge(),
            self._get_pool().connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    @contextmanager
    def dedicated_transaction(self) -> Iterator[tuple[Any, Cursor]]:
        with self._open_lock:
            if self._tx_pool is None:
                self._tx_pool = self._make_pool(
                    "agentdur-transactions", 0, self._transaction_pool_size
                )
            pool = self._tx_pool
        conn = _getconn(pool)
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield conn, cur
        finally:
            pool.putconn(conn)

    @contextmanager
    def _group_transaction(self) -> Iterator[Cursor]:
        conn = getattr(self._local, "writer_conn", None)
        if conn is None or conn.closed:
            conn = self._local.writer_conn = self._connect()
        with conn.transaction(), conn.cursor() as cur:
            self._local.cursor = cur
            try:
                yield cur
            finally:
                self._local.cursor = None

    def _close_writer(self) -> None:
        conn, self._local.writer_conn = getattr(self._local, "writer_conn", None), None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _after_fault(self) -> None:
        # Test every idle pooled connection now and replace the broken ones.
        for pool in (self._pool, self._tx_pool):
            if pool is not None:
                with contextlib.suppress(Exception):
                    pool.check()

    def _is_driver_error(self, exc: BaseException) -> bool:
        import psycopg
        import psycopg_pool

        return isinstance(exc, (psycopg.Error, psycopg_pool.PoolTimeout, StoreError))

    def _is_transient(self, exc: BaseException) -> bool:
        import psycopg
        import psycopg_pool

        if isinstance(exc, (StoreUnavailable, psycopg_pool.PoolTimeout)):
            return True
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return True  # connection lost, server shutting down or restarting
        # serialization_failure, deadlock_detected: the same work may succeed next time
        return isinstance(exc, psycopg.Error) and exc.sqlstate in ("40001", "40P01")

    def wait_for_enqueue(self, timeout: float) -> bool:
        """Block until a run is enqueued anywhere (LISTEN/NOTIFY) or `timeout` passes."""
        import psycopg

        if self._listener is None:
            self._listener = psycopg.connect(self._conninfo, autocommit=True)
            self._listener.execute(LISTEN_ENQUEUED)
        return any(True for _ in self._listener.notifies(timeout=timeout, stop_after=1))

    def _lock_migrations(self, cur: Cursor) -> None:
        cur.execute(LOCK_MIGRATIONS)
        cur.execute(CREATE_SCHEMA)

    def _json_param(self, text: str | None) -> Any:
        return text

    def _json_value(self, value: Any) -> Any:
        return value

    def _time_param(self, when: datetime | None) -> Any:
        return when

    def _time_value(self, value: Any) -> datetime | None:
        return value  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=1)
def _adapters() -> Any:
    """psycopg's adapters with JSON read through `codec.loads`, which reverses the escapes
    `codec.dumps` writes (NUL, lone surrogates), as SQLite's `_json_value` does."""
    from psycopg import postgres
    from psycopg.adapt import AdaptersMap
    from psycopg.types.json import set_json_loads

    adapters = AdaptersMap(postgres.adapters)
    set_json_loads(codec.loads, adapters)
    return adapters


def _getconn(pool: Any) -> Any:
    """A connection of the transaction pool, waiting as long as it takes.

    A transactional step waits for a connection freed by another one; it never fails
    because the pool was busy (PoolTimeout is waited through, not raised).
    """
    import psycopg_pool

    while True:
        try:
            return pool.getconn()
        except psycopg_pool.PoolTimeout:
            continue


def _masked(text: str, conninfo: str) -> str:
    from urllib.parse import urlsplit

    password = urlsplit(conninfo).password
    return text.replace(password, "***") if password else text
