-- agentdur schema, PostgreSQL dialect, version 2: audit views, in schema agentdur.
--
-- tool_calls     one row per tool step of any run, forks included: which tool an agent
--                called, with which arguments, what came back, under which effect.
--   agent:       the agent's name for runs of workflow 'agent:<name>', else NULL.
--   arguments:   the validated arguments as JSONB (NULL when the model sent text that
--                is not a JSON object; the error column says so). result and error are
--                JSONB too: arguments->>'amount' reads a field.
--   status:      SUCCEEDED | ERROR | STARTED (a side effect under way, or uncertain).
--   inherited:   true when the row was copied into a fork; the call happened once, in
--                the run named by inherited_from. dry_run: true when nothing was
--                executed (a dry-run fork simulated it). deduplicated: true when the
--                effect ledger answered with the result of an earlier call under the
--                same key.
-- llm_calls      one row per LLM step: model, tokens, time.
--   edited:      true when a fork supplied the response instead of the model.
-- Both views read steps joined with runs; nothing is stored twice.

CREATE VIEW agentdur.tool_calls AS
SELECT
    s.run_id,
    CASE WHEN substr(r.workflow, 1, 6) = 'agent:' THEN substr(r.workflow, 7) END AS agent,
    s.step_index,
    s.name AS tool,
    s.input -> 'arguments' AS arguments,
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
