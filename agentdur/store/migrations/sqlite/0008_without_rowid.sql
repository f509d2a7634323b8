-- agentdur schema, SQLite dialect, version 8: small keyed tables WITHOUT ROWID.
--
-- queues, rate_events, executors and step_blobs have a TEXT or composite primary key.
-- A rowid table keeps such a key in a separate index (sqlite_autoindex_<table>_1), so
-- each of them cost two b-trees (a page each in an empty database) and every key was
-- stored twice. WITHOUT ROWID makes the primary key the table's own b-tree. Their rows
-- are small (a name, a few times, a count), which is what WITHOUT ROWID suits. steps,
-- runs, effects, messages and blobs stay rowid tables: their rows can be large.
-- Columns, keys and the other indexes are unchanged; no view or trigger refers to
-- these tables.
--
-- Each table is rebuilt (SQLite cannot alter this): its rows are copied to a TEMP
-- table, the table is dropped (with its indexes) and created anew, the rows are copied
-- back and its indexes are created again. The new table is created under its own name
-- rather than renamed into place: a renamed table keeps its CREATE text patched (with
-- a quoted name), and a rename fails while a user's view names the dropped table.
-- The whole migration is one transaction: it applies completely or not at all.

-- queues

CREATE TEMP TABLE queues_v7 AS SELECT name, created_at FROM main.queues;

DROP TABLE main.queues;

CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO queues (name, created_at) SELECT name, created_at FROM temp.queues_v7;

DROP TABLE temp.queues_v7;

-- rate_events

CREATE TEMP TABLE rate_events_v7 AS
SELECT limiter, at, event, tokens FROM main.rate_events;

DROP TABLE main.rate_events;

CREATE TABLE rate_events (
    limiter TEXT NOT NULL,
    at      TEXT NOT NULL,
    event   TEXT NOT NULL,
    tokens  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (limiter, at, event)
) WITHOUT ROWID;

INSERT INTO rate_events (limiter, at, event, tokens)
SELECT limiter, at, event, tokens FROM temp.rate_events_v7;

DROP TABLE temp.rate_events_v7;

-- executors (and its index executors_host)

CREATE TEMP TABLE executors_v7 AS
SELECT executor_id, host, pid, heartbeat_at, process_started FROM main.executors;

DROP TABLE main.executors;

CREATE TABLE executors (
    executor_id  TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at TEXT NOT NULL,
    process_started TEXT
) WITHOUT ROWID;

INSERT INTO executors (executor_id, host, pid, heartbeat_at, process_started)
SELECT executor_id, host, pid, heartbeat_at, process_started FROM temp.executors_v7;

DROP TABLE temp.executors_v7;

CREATE INDEX executors_host ON executors (host);

-- step_blobs (and its index step_blobs_hash)

CREATE TEMP TABLE step_blobs_v7 AS SELECT run_id, step_index, hash FROM main.step_blobs;

DROP TABLE main.step_blobs;

CREATE TABLE step_blobs (
    run_id     TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    hash       TEXT NOT NULL REFERENCES blobs (hash),
    PRIMARY KEY (run_id, step_index, hash)
) WITHOUT ROWID;

INSERT INTO step_blobs (run_id, step_index, hash)
SELECT run_id, step_index, hash FROM temp.step_blobs_v7;

DROP TABLE temp.step_blobs_v7;

CREATE INDEX step_blobs_hash ON step_blobs (hash);
