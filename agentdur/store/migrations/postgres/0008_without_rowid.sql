-- agentdur schema, PostgreSQL dialect, version 8: nothing to change.
--
-- SQLite's migration 0008 makes queues, rate_events, executors and step_blobs WITHOUT
-- ROWID tables (their primary key is the table's own b-tree, not a second index).
-- PostgreSQL has no such distinction: a table is a heap and its primary key an index.
-- This file keeps the two dialects' schema versions equal.

SELECT 1;
