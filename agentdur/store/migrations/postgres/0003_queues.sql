-- agentdur schema, PostgreSQL dialect, version 3: queues and rate limits.
--
-- queues         one row per queue name; claims lock it (FOR UPDATE) so that concurrency
--                and rate limits are checked and runs taken in one transaction, while
--                the runs themselves are taken with FOR UPDATE SKIP LOCKED.
-- rate_events    one row per admitted request of a model rate limiter (a sliding
--                window over these times; tokens corrected with the reported usage).
-- Runs of a queue start ENQUEUED (owner NULL); a worker's claim makes them RUNNING.
-- A dedup_id is unique among the unfinished runs of a queue. Enqueues NOTIFY channel
-- agentdur_enqueued with the queue name, so idle workers wake at once.

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
