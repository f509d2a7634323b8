-- agentdur schema, PostgreSQL dialect: the full current schema (version 8), equal to
-- migrations/postgres/0001..0008 applied in order (tests/store/test_schema_drift.py
-- checks it). `psql -1 -f schema.sql` makes a ready database: the runtime finds version
-- 8 recorded and migrates nothing. Change the schema with a new migration, then
-- bring this file up to date. Everything lives in schema agentdur.
--
-- runs           one row per run of a workflow or agent.
--   status:      PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
--                ENQUEUED -> RUNNING (a worker takes it)
--                RUNNING -> WAITING -> RUNNING (approval, recv, long sleep)
--                RUNNING -> NEEDS_ATTENTION -> RUNNING | FAILED (uncertain side effect)
--                any unfinished status -> CANCELLED
--   owner, lease_until, epoch: the executor that runs it, until when, and the fencing
--                counter bumped by every takeover; checkpoint writes name the epoch.
--   forked_from, forked_at: the run this one was forked from, and the first step it
--                did not keep.
-- steps          one row per recorded step (run_id, step_index), written once when the
--                step has its outcome (a side_effect or waiting step is written earlier).
--   status:      STARTED -> SUCCEEDED | ERROR ; WAITING -> SUCCEEDED | ERROR
--   inherited_from: set on a step a fork copied: the run that really executed it.
-- effects        the effect ledger of side-effecting tools, keyed by idempotency key.
--   status:      STARTED -> DONE ; STARTED -> (deleted when the tool raised)
-- messages       durable messages sent to a run (send / recv), consumed in order.
-- executors      processes running a Runtime: host, pid and process start time (to tell
--                a dead owner on this host at once), and their last heartbeat.
-- schema_version one row per applied migration.
-- blobs          one row per distinct big string (over 64 KiB) recorded in any step:
--                sha256 (hex), size in bytes, zlib-compressed bytes. A step keeps
--                {"$blob": "<hash>"} in its place.
-- step_blobs     one row per (step, blob) it references; gc deletes unreferenced blobs.
-- tool_calls     (view) one row per tool step of any run, forks included: tool,
--                arguments (read from the LLM step's `calls` when the tool step
--                names its call), result or error, effect, status, and the flags inherited
--                (copied into a fork from inherited_from), dry_run (simulated, nothing
--                executed) and deduplicated (answered by the effect ledger).
-- llm_calls      (view) one row per LLM step: model, input/output tokens, time, and
--                edited (a fork supplied the response instead of the model).
-- queues         one row per queue name; claims lock it so that concurrency and rate
--                limits are checked and runs taken in one transaction.
-- rate_events    one row per admitted request of a model rate limiter (a sliding
--                window over these times).
-- Runs of a queue start ENQUEUED (owner NULL); a worker's claim makes them RUNNING.
-- Primary keys lead with run_id so the schema shards by run.

CREATE SCHEMA IF NOT EXISTS agentdur;

CREATE TABLE IF NOT EXISTS agentdur.schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Tables (migration 0001).

CREATE TABLE agentdur.runs (
    run_id        TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('PENDING', 'ENQUEUED', 'RUNNING', 'WAITING',
                      'NEEDS_ATTENTION', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    input         JSONB NOT NULL,
    output        JSONB,
    error         JSONB,
    parent_run_id TEXT,
    forked_from   TEXT,
    forked_at     INTEGER,
    queue         TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    dedup_id      TEXT,
    owner         TEXT,
    lease_until   TIMESTAMPTZ,
    epoch         INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    metadata      JSONB
);
CREATE INDEX runs_status_created ON agentdur.runs (status, created_at);
CREATE INDEX runs_workflow_created ON agentdur.runs (workflow, created_at);
CREATE INDEX runs_owner ON agentdur.runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_forked_from ON agentdur.runs (forked_from) WHERE forked_from IS NOT NULL;
-- runs newest first, in keyset pages (the web UI; migration 0005)
CREATE INDEX runs_created ON agentdur.runs (created_at, run_id);
-- finished runs oldest first, in keyset batches (`agentdur gc`; migration 0006)
CREATE INDEX runs_finished ON agentdur.runs (finished_at, run_id) WHERE finished_at IS NOT NULL;

CREATE TABLE agentdur.steps (
    run_id          TEXT NOT NULL,
    step_index      INTEGER NOT NULL,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('step', 'llm', 'tool', 'sleep', 'recv',
                        'child', 'transaction')),
    status          TEXT NOT NULL CHECK (status IN ('STARTED', 'WAITING', 'SUCCEEDED', 'ERROR')),
    input           JSONB,
    output          JSONB,
    error           JSONB,
    attempts        INTEGER NOT NULL DEFAULT 1,
    idempotency_key TEXT,
    request_hash    TEXT,
    model           TEXT,
    usage           JSONB,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    inherited_from  TEXT,
    edited          BOOLEAN NOT NULL DEFAULT FALSE,
    dry_run         BOOLEAN NOT NULL DEFAULT FALSE,
    deduplicated    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, step_index)
);
-- Only tool steps are searched by name (audit); other steps add no index page per write.
CREATE INDEX steps_tool_name ON agentdur.steps (name, started_at) WHERE kind = 'tool';

CREATE TABLE agentdur.effects (
    idempotency_key TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    step_index      INTEGER NOT NULL,
    tool            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('STARTED', 'DONE')),
    result          JSONB,
    created_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);
-- the ledger entries of a run (`agentdur gc`; migration 0006)
CREATE INDEX effects_run ON agentdur.effects (run_id);

CREATE TABLE agentdur.messages (
    run_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    topic      TEXT NOT NULL,
    value      JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    consumed   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE agentdur.executors (
    executor_id  TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    process_started TEXT
);

CREATE INDEX executors_host ON agentdur.executors (host);

-- Audit views (migration 0002).

CREATE VIEW agentdur.tool_calls AS
SELECT
    s.run_id,
    CASE WHEN substr(r.workflow, 1, 6) = 'agent:' THEN substr(r.workflow, 7) END AS agent,
    s.step_index,
    s.name AS tool,
    CASE
        WHEN s.input -> 'arguments' IS NOT NULL THEN s.input -> 'arguments'
        WHEN s.input -> 'llm' IS NOT NULL AND s.input -> 'raw' IS NULL THEN (
            SELECT CASE jsonb_typeof(c.a) WHEN 'string' THEN (c.a #>> '{}')::jsonb ELSE c.a END
            FROM (
                SELECT l.output -> 'calls' -> ((s.input ->> 'call')::int) -> 'arguments' AS a
                FROM agentdur.steps AS l
                WHERE l.run_id = s.run_id AND l.step_index = (s.input ->> 'llm')::int
            ) AS c
        )
    END AS arguments,
    s.output AS result,
    s.error,
    s.input ->> 'effect' AS effect,
    s.idempotency_key,
    s.status,
    s.attempts,
    s.started_at,
    s.finished_at,
    round((extract(epoch FROM s.finished_at - s.started_at) * 1000)::numeric, 1)::float8
        AS duration_ms,
    s.inherited_from IS NOT NULL AS inherited,
    s.inherited_from,
    s.dry_run,
    s.deduplicated
FROM agentdur.steps AS s
JOIN agentdur.runs AS r ON r.run_id = s.run_id
WHERE s.kind = 'tool';

CREATE VIEW agentdur.llm_calls AS
SELECT
    s.run_id,
    CASE WHEN substr(r.workflow, 1, 6) = 'agent:' THEN substr(r.workflow, 7) END AS agent,
    s.step_index,
    coalesce(s.model, s.name) AS model,
    coalesce((s.usage ->> 'input_tokens')::bigint, 0) AS input_tokens,
    coalesce((s.usage ->> 'output_tokens')::bigint, 0) AS output_tokens,
    s.started_at,
    round((extract(epoch FROM s.finished_at - s.started_at) * 1000)::numeric, 1)::float8
        AS duration_ms,
    s.inherited_from IS NOT NULL AS inherited,
    s.edited
FROM agentdur.steps AS s
JOIN agentdur.runs AS r ON r.run_id = s.run_id
WHERE s.kind = 'llm';

-- Queues and rate limits (migration 0003).

CREATE TABLE agentdur.queues (
    name       TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE agentdur.rate_events (
    limiter TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    event   TEXT NOT NULL,
    tokens  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (limiter, at, event)
);

CREATE INDEX runs_queue_ready ON agentdur.runs (queue, status, priority, created_at)
    WHERE queue IS NOT NULL;
CREATE INDEX runs_queue_started ON agentdur.runs (queue, started_at) WHERE queue IS NOT NULL;
CREATE UNIQUE INDEX runs_queue_dedup ON agentdur.runs (queue, dedup_id)
    WHERE dedup_id IS NOT NULL
        AND status IN ('ENQUEUED', 'PENDING', 'RUNNING', 'WAITING', 'NEEDS_ATTENTION');

-- Big values kept once, by content (migration 0007).

CREATE TABLE agentdur.blobs (
    hash TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    data BYTEA NOT NULL
);

CREATE TABLE agentdur.step_blobs (
    run_id     TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    hash       TEXT NOT NULL REFERENCES agentdur.blobs (hash),
    PRIMARY KEY (run_id, step_index, hash)
);

CREATE INDEX step_blobs_hash ON agentdur.step_blobs (hash);

-- The migrations this schema is equal to.
INSERT INTO agentdur.schema_version (version, name) VALUES
    (1, '0001_initial.sql'),
    (2, '0002_audit_views.sql'),
    (3, '0003_queues.sql'),
    (4, '0004_executor_identity.sql'),
    (5, '0005_runs_newest_first.sql'),
    (6, '0006_retention.sql'),
    (7, '0007_blobs.sql'),
    (8, '0008_without_rowid.sql');
