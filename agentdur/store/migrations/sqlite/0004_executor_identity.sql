-- agentdur schema, SQLite dialect, version 4: executor identity.
--
-- executors.process_started  when the executor's process started (the kernel's start
--                            time of the pid, as text). With host and pid it tells a
--                            live process from a dead one whose pid was reused, so a
--                            process restarted on the same host takes over the runs
--                            of its dead predecessor at once instead of waiting for
--                            their leases to expire.
-- The table is made anew rather than altered (SQLite keeps an altered table's text as
-- patched); its rows are heartbeats, which every live executor writes again in seconds.

DROP TABLE executors;

CREATE TABLE executors (
    executor_id  TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at TEXT NOT NULL,
    process_started TEXT
);

CREATE INDEX executors_host ON executors (host);
