-- agentdur schema, PostgreSQL dialect, version 1. Everything lives in schema agentdur.
--
-- runs           one row per run of a workflow or agent.
--   status:      PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
--                ENQUEUED -> RUNNING (a worker takes it)
--                RUNNING -> WAITING -> RUNNING (approval, recv, long sleep)
--                RUNNING -> NEEDS_ATTENTION -> RUNNING | FAILED (uncertain side effect)
--                any unfinished status -> CANCELLED
--   owner, lease_until, epoch: the executor that runs it, until when, and the fencing
--                counter bumped by every takeover; checkpoint writes name the epoch.
-- steps          one row per recorded step (run_id, step_index), written once when the
--                step has its outcome (a side_effect or waiting step is written earlier).
--   status:      STARTED -> SUCCEEDED | ERROR ; WAITING -> SUCCEEDED | ERROR
-- effects        the effect ledger of side-effecting tools, keyed by idempotency key.
--   status:      STARTED -> DONE ; STARTED -> (deleted when the tool raised)
-- messages       durable messages sent to a run (send / recv), consumed in order.
-- executors      processes running a Runtime, with their last heartbeat.
-- schema_version one row per applied migration.
-- Primary keys lead with run_id so the schema shards by run.

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
    heartbeat_at TIMESTAMPTZ NOT NULL
);
