"""Store operations of retention (`agentdur gc`): find and delete old finished runs.

The caller (agentdur/retention.py) walks the candidates in batches, oldest finish first,
with a keyset cursor; each method here is one short statement or transaction, so a gc
beside live executors holds the write lock (SQLite) or the run rows (PostgreSQL) only for
one batch. A run's ledger entries under its own keys (`run_id:index`, the default
idempotency key) go with it; entries under domain keys (`refund:{order_id}`) stay unless
asked, since they keep an effect from happening twice across runs.

A run another run was forked from is kept while that fork is kept (recursively): the
fork's inherited steps are copies, so execution never needs the source, but the run tree
would lose its root.

Big values (store/payloads.py) are shared by content across steps and runs: a blob goes
when no remaining step references it, so a real gc deletes a blob in the batch that
removes its last reference, and a dry run counts blobs once, over every run it would
delete (`gc_count_blobs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentdur.store.core import StoreCore


@dataclass(frozen=True)
class GcCounts:
    """What one batch deleted (or, for a dry run, would delete)."""

    runs: int = 0
    steps: int = 0
    messages: int = 0
    effects: int = 0
    """Ledger entries under the runs' own keys (`run_id:index`)."""
    domain_effects: int = 0
    """Ledger entries under domain keys: deleted with `domain_keys`, else kept."""
    blobs: int = 0
    """Big values (store/payloads.py) no step references any more once the runs are gone."""
    blob_bytes: int = 0
    """Their stored (zlib-compressed) bytes."""


class RetentionOps(StoreCore):
    """Finding, counting and deleting finished runs for gc."""

    def _gc_params(self, statuses: Sequence[str], before: datetime) -> dict[str, Any]:
        return {"statuses": json.dumps(list(statuses)), "before": self._time_param(before)}

    def gc_candidates(
        self,
        *,
        statuses: Sequence[str],
        before: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        """(run_id, finished_at) of up to `limit` collectable runs after `after`, oldest first.

        Collectable: in `statuses`, finished before `before`, and no run that is kept was
        forked from it (directly or through other forks).
        """
        params = self._gc_params(statuses, before)
        params.update(
            after_time=self._time_param(after[0]) if after else None,
            after_id=after[1] if after else None,
            limit=limit,
        )
        with self.statement() as cur:
            cur.execute(self.sql.GC_CANDIDATES, params)
            rows = cur.fetchall()
        found = []
        for row in rows:
            finished = self._time_value(row[1])
            assert finished is not None
            found.append((str(row[0]), finished))
        return found

    def gc_fork_sources(self, *, statuses: Sequence[str], before: datetime) -> int:
        """How many runs old enough to collect are kept because a kept run forks from them."""
        with self.statement() as cur:
            cur.execute(self.sql.GC_FORK_SOURCES, self._gc_params(statuses, before))
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def gc_count(self, run_ids: Sequence[str]) -> GcCounts:
        """What deleting these runs would delete: one read, nothing written (dry run)."""
        with self.statement() as cur:
            cur.execute(self.sql.GC_COUNT, {"run_ids": json.dumps(list(run_ids))})
            row = cur.fetchone()
        assert row is not None
        return GcCounts(len(run_ids), *(int(value) for value in row))

    def gc_count_blobs(self, run_ids: Sequence[str]) -> tuple[int, int]:
        """(count, stored bytes) of the blobs deleting all these runs would delete: those
        no step of another run references, including any no step references at all,
        as a real gc deletes them too. One read, nothing written (dry run).

        Blobs are shared, so this is asked once for every run a dry run would delete, not
        per batch: a blob two batches share goes with the second, and is counted once.
        """
        with self.statement() as cur:
            cur.execute(self.sql.GC_COUNT_BLOBS, {"run_ids": json.dumps(list(run_ids))})
            row = cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def gc_delete(
        self,
        run_ids: Sequence[str],
        *,
        statuses: Sequence[str],
        before: datetime,
        domain_keys: bool,
    ) -> GcCounts:
        """Delete these runs with their steps, messages and own ledger entries, and the blobs
        no remaining step references: one transaction.

        Each run is checked again as it is deleted (still collectable, no new fork), so a
        fork made since the candidates were read keeps its source. Domain-key entries are
        deleted with `domain_keys`, else only counted.
        """
        params = self._gc_params(statuses, before)
        params["run_ids"] = json.dumps(list(run_ids))
        with self.transaction() as cur:
            cur.execute(self.sql.GC_DELETE_RUNS, params)
            deleted = json.dumps([row[0] for row in cur.fetchall()])
            ids = {"run_ids": deleted}
            runs = len(json.loads(deleted))
            if runs == 0:
                return GcCounts()
            if domain_keys:
                cur.execute(self.sql.GC_DELETE_DOMAIN_EFFECTS, ids)
                domain = cur.rowcount
            else:
                cur.execute(self.sql.GC_COUNT_DOMAIN_EFFECTS, ids)
                row = cur.fetchone()
                domain = int(row[0]) if row else 0
            cur.execute(self.sql.GC_DELETE_RUN_EFFECTS, ids)
            effects = cur.rowcount
            cur.execute(self.sql.GC_DELETE_MESSAGES, ids)
            messages = cur.rowcount
            cur.execute(self.sql.GC_DELETE_STEPS, ids)
            steps = cur.rowcount
            cur.execute(self.sql.GC_DELETE_STEP_BLOBS, ids)
            # Blobs are shared by content: only those no remaining step references go.
            cur.execute(self.sql.GC_DELETE_BLOBS)
            sizes = [int(row[0]) for row in cur.fetchall()]
        return GcCounts(runs, steps, messages, effects, domain, len(sizes), sum(sizes))
