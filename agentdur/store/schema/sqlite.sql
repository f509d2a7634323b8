-- agentdur schema, SQLite dialect: the full current schema (version 8), equal to
-- migrations/sqlite/0001..0008 applied in order (tests/store/test_schema_drift.py
-- checks it). `sqlite3 app.db < schema.sql` makes a ready database: the runtime finds
-- version 8 recorded and migrates nothing. Change the schema with a new migration,
-- then bring this file up to date.
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
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', comparable with datetime('now').
-- JSON columns are TEXT (json_extract reads them); booleans are 0/1.
-- queues, rate_events, executors and step_blobs are WITHOUT ROWID (migration 0008):
-- small rows under a TEXT or composite primary key, kept in the key's own b-tree
-- instead of a rowid table plus an index holding every key a second time.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- Tables (migration 0001).

CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('PENDING', 'ENQUEUED', 'RUNNING', 'WAITING',
                      'NEEDS_ATTENTION', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    input         TEXT NOT NULL,
    output        TEXT,
    error         TEXT,
    parent_run_id TEXT,
    forked_from   TEXT,
    forked_at     INTEGER,
    queue         TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    dedup_id      TEXT,
    owner         TEXT,
    lease_until   TEXT,
    epoch         INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    metadata      TEXT
);
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_workflow_created ON runs (workflow, created_at);
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_forked_from ON runs (forked_from) WHERE forked_from IS NOT NULL;
-- runs newest first, in keyset pages (the web UI; migration 0005)
CREATE INDEX runs_created ON runs (created_at, run_id);
-- finished runs oldest first, in keyset batches (`agentdur gc`; migration 0006)
CREATE INDEX runs_finished ON runs (finished_at, run_id) WHERE finished_at IS NOT NULL;

CREATE TABLE steps (
    run_id          TEXT NOT NULL,
    step_index      INTEGER NOT NULL,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('step', 'llm', 'tool', 'sleep', 'recv',
                        'child', 'transaction')),
    status          TEXT NOT NULL CHECK (status IN ('STARTED', 'WAITING', 'SUCCEEDED', 'ERROR')),
    input           TEXT,
    output          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 1,
    idempotency_key TEXT,
    request_hash    TEXT,
    model           TEXT,
    usage           TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    inherited_from  TEXT,
    edited          INTEGER NOT NULL DEFAULT 0,
    dry_run         INTEGER NOT NULL DEFAULT 0,
    deduplicated    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_index)
);
-- Only tool steps are searched by name (audit); other steps add no index page per write.
CREATE INDEX steps_tool_name ON steps (name, started_at) WHERE kind = 'tool';

CREATE TABLE effects (
    idempotency_key TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    step_index      INTEGER NOT NULL,
    tool            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('STARTED', 'DONE')),
    result          TEXT,
    created_at      TEXT NOT NULL,
    finished_at     TEXT
);
-- the ledger entries of a run (`agentdur gc`; migration 0006)
CREATE INDEX effects_run ON effects (run_id);

CREATE TABLE messages (
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    topic      TEXT NOT NULL,
    value      TEXT,
    created_at TEXT NOT NULL,
    consumed   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE executors (
    executor_id  TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at TEXT NOT NULL,
    process_started TEXT
) WITHOUT ROWID;

CREATE INDEX executors_host ON executors (host);

-- Audit views (migration 0002).

CREATE VIEW tool_calls AS
SELECT
    s.run_id,
    CASE WHEN substr(r.workflow, 1, 6) = 'agent:' THEN substr(r.workflow, 7) END AS agent,
    s.step_index,
    s.name AS tool,
    CASE
        WHEN json_type(s.input, '$.arguments') IS NOT NULL
            THEN json_extract(s.input, '$.arguments')
        WHEN json_type(s.input, '$.llm') IS NOT NULL AND json_type(s.input, '$.raw') IS NULL
            THEN (
                SELECT CASE WHEN json_valid(c.a) THEN json(c.a) END
                FROM (
                    SELECT json_extract(
                        l.output, '$.calls[' || json_extract(s.input, '$.call') || '].arguments'
                    ) AS a
                    FROM steps AS l
                    WHERE l.run_id = s.run_id
                        AND l.step_index = json_extract(s.input, '$.llm')
                ) AS c
            )
    END AS arguments,
    s.output AS result,
    s.error,
    json_extract(s.input, '$.effect') AS effect,
    s.idempotency_key,
    s.status,
    s.attempts,
    s.started_at,
    s.finished_at,
    round((julianday(s.finished_at) - julianday(s.started_at)) * 86400000.0, 1) AS duration_ms,
    s.inherited_from IS NOT NULL AS inherited,
    s.inherited_from,
    s.dry_run,
    s.deduplicated
FROM steps AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.kind = 'tool';

CREATE VIEW llm_calls AS
SELECT
    s.run_id,
    CASE WHEN substr(r.workflow, 1, 6) = 'agent:' THEN substr(r.workflow, 7) END AS agent,
    s.step_index,
    coalesce(s.model, s.name) AS model,
    coalesce(CAST(json_extract(s.usage, '$.input_tokens') AS INTEGER), 0) AS input_tokens,
    coalesce(CAST(json_extract(s.usage, '$.output_tokens') AS INTEGER), 0) AS output_tokens,
    s.started_at,
    round((julianday(s.finished_at) - julianday(s.started_at)) * 86400000.0, 1) AS duration_ms,
    s.inherited_from IS NOT NULL AS inherited,
    s.edited
FROM steps AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.kind = 'llm';

-- Queues and rate limits (migration 0003).

CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE rate_events (
    limiter TEXT NOT NULL,
    at      TEXT NOT NULL,
    event   TEXT NOT NULL,
    tokens  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (limiter, at, event)
) WITHOUT ROWID;

CREATE INDEX runs_queue_ready ON runs (queue, status, priority, created_at)
    WHERE queue IS NOT NULL;
CREATE INDEX runs_queue_started ON runs (queue, started_at) WHERE queue IS NOT NULL;
CREATE UNIQUE INDEX runs_queue_dedup ON runs (queue, dedup_id)
    WHERE dedup_id IS NOT NULL
        AND status IN ('ENQUEUED', 'PENDING', 'RUNNING', 'WAITING', 'NEEDS_ATTENTION');

-- Big values kept once, by content (migration 0007).

CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);

CREATE TABLE step_blobs (
    run_id     TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    hash       TEXT NOT NULL REFERENCES blobs (hash),
    PRIMARY KEY (run_id, step_index, hash)
) WITHOUT ROWID;

CREATE INDEX step_blobs_hash ON step_blobs (hash);

-- The migrations this schema is equal to.
INSERT INTO schema_version (version, name) VALUES
    (1, '0001_initial.sql'),
    (2, '0002_audit_views.sql'),
    (3, '0003_queues.sql'),
    (4, '0004_executor_identity.sql'),
    (5, '0005_runs_newest_first.sql'),
    (6, '0006_retention.sql'),
    (7, '0007_blobs.sql'),
    (8, '0008_without_rowid.sql');
