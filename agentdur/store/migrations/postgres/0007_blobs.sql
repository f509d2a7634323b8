-- agentdur schema, PostgreSQL dialect, version 7: each value stored once.
--
-- blobs          one row per distinct big string (over 64 KiB of UTF-8) recorded in any
--                step: its sha256 (hex), its size in bytes and its zlib-compressed bytes.
--                A step keeps {"$blob": "<hash>"} in its place; the same document
--                returned by three tools and sent in two requests is one row.
-- step_blobs     one row per (step, blob) it references: what a run loads with its steps
--                (one more query), and what gc keeps. A blob no step references is
--                deleted by `agentdur gc`.
-- tool_calls     (view, replaced) a tool step names the call of the LLM step that made it
--                ({"llm": L, "call": i}); its arguments are read there, in `calls`, where
--                they are kept once. A step's own `arguments` (the validated arguments
--                when they differ from the model's) win. A big value reads as
--                {"$blob": "<hash>"}: `SELECT size FROM agentdur.blobs WHERE hash = ...`.

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

DROP VIEW agentdur.tool_calls;

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
