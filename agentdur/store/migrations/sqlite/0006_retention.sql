-- agentdur schema, SQLite dialect, version 6: retention (`agentdur gc`).
--
-- runs_finished  (finished_at, run_id) of finished runs: gc reads the oldest first, in
--                keyset batches, without scanning runs that are still going. One entry
--                per run, written when it finishes.
-- effects_run    the ledger entries of a run: gc deletes a run's own entries (keyed
--                `run_id:index`) and counts the domain-key entries it keeps. One entry
--                per side_effect call.

CREATE INDEX runs_finished ON runs (finished_at, run_id) WHERE finished_at IS NOT NULL;
CREATE INDEX effects_run ON effects (run_id);
