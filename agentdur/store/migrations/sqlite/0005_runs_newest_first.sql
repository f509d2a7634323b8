-- agentdur schema, SQLite dialect, version 5: runs newest first.
--
-- runs_created   (created_at, run_id): the web UI's runs page (and `agentdur runs list`)
--                read runs newest first in keyset pages, `(created_at, run_id) < cursor`;
--                without it every page sorted the whole table.

CREATE INDEX runs_created ON runs (created_at, run_id);
