-- agentdur schema, PostgreSQL dialect, version 4: executor identity.
--
-- executors.process_started  when the executor's process started (the kernel's start
--                            time of the pid, as text). With host and pid it tells a
--                            live process from a dead one whose pid was reused, so a
--                            process restarted on the same host takes over the runs
--                            of its dead predecessor at once instead of waiting for
--                            their leases to expire.

ALTER TABLE agentdur.executors ADD COLUMN process_started TEXT;

CREATE INDEX executors_host ON agentdur.executors (host);
