-- agentdur schema, SQLite dialect, version 2: audit views.
--
-- tool_calls     one row per tool step of any run, forks included: which tool an agent
--                called, with which arguments, what came back, under which effect.
--   agent:       the agent's name for runs of workflow 'agent:<name>', else NULL.
--   arguments:   the validated arguments as JSON text (NULL when the model sent text
--                that is not a JSON object; the error column says so). result and
--                error are JSON text too: json_extract() reads them.
--   status:      SUCCEEDED | ERROR | STARTED (a side effect under way, or uncertain).
--   inherited:   1 when the row was copied into a fork; the call happened once, in the
--                run named by inherited_from. dry_run: 1 when nothing was executed (a
--                dry-run fork simulated it). deduplicated: 1 when the effect ledger
--                answered with the result of an earlier call under the same key.
-- llm_calls      one row per LLM step: model, tokens, time.
--   edited:      1 when a fork supplied the response instead of the model.
-- Both views read steps joined with runs; nothing is stored twice. Times are UTC text
-- 'YYYY-MM-DD HH:MM:SS.ffffff', so `started_at > datetime('now', '-7 days')` works.

CREATE VIEW tool_calls AS
SELECT
    s.run_id,
    CASE WHEN substr(r.workflow, 1, 6) = 'agent:' THEN substr(r.workflow, 7) END AS agent,
    s.step_index,
    s.name AS tool,
    json_extract(s.input, '$.arguments') AS arguments,
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
