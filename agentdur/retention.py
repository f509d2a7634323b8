"""Retention: `Runtime.gc` deletes old finished runs in short batches.

The store (store/retention.py) finds collectable runs and deletes one batch per
transaction; this module walks the batches, oldest finish first, and adds up the report.
It never touches an unfinished run, a run that finished after the cutoff, a run a kept
fork was forked from, or (unless asked) a ledger entry under a domain key.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentdur.engine import Engine
from agentdur.errors import UsageError
from agentdur.store import FINISHED

DEFAULT_BATCH = 500


@dataclass(frozen=True, kw_only=True)
class GcReport:
    """What `Runtime.gc` deleted, or with `dry_run` would delete."""

    dry_run: bool
    """Nothing was deleted: the counts say what a real gc would delete now."""
    cutoff: datetime
    """Runs that finished before this time were collected."""
    statuses: tuple[str, ...]
    runs: int = 0
    steps: int = 0
    messages: int = 0
    ledger_entries: int = 0
    """Effect-ledger entries under the runs' own keys (`run_id:index`)."""
    domain_key_entries: int = 0
    """Entries under domain keys (`refund:{order_id}`) of these runs: deleted with
    `domain_keys=True`, else kept (see `domain_keys_kept`)."""
    domain_keys_kept: bool = True
    """True when domain-key entries were kept: deleting one would let that effect (a
    refund, say) happen again in a later run with the same key."""
    fork_sources_kept: int = 0
    """Runs old enough to collect, kept because a kept run was forked from them."""
    batches: int = 0
    """Transactions that deleted runs (for a dry run, batches that would)."""
    longest_batch_seconds: float = 0.0
    """The longest time one batch held its transaction (0 for a dry run)."""
    blobs: int = 0
    """Big values (kept once, by content) that no remaining step references: deleted
    with the runs. A blob a kept run also references stays (and is not counted)."""
    blob_bytes: int = 0
    """The stored (zlib-compressed) bytes of those blobs."""


class Retention:
    """`gc`: delete old finished runs with their steps, messages and own ledger entries.

    A part of the Runtime, composed with the engine.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def gc(
        self,
        *,
        older_than: timedelta,
        statuses: Sequence[str] | None = None,
        dry_run: bool = False,
        batch: int = DEFAULT_BATCH,
        domain_keys: bool = False,
    ) -> GcReport:
        """Delete finished runs that finished more than `older_than` ago.

        Each batch of `batch` runs is deleted in its own short transaction, so live
        executors beside it wait at most one batch for the database. A run another
        (kept) run was forked from is kept. A run's steps, messages and the ledger
        entries under its own keys (`run_id:index`) go with it; entries under domain
        keys stay unless `domain_keys`, since they keep an effect such as a refund from
        happening again. A big value kept once (a blob) goes when no remaining step
        references it. After gc, starting a run with a deleted run's id starts a new
        run.

        Args:
            older_than: how long ago a run must have finished (by this Runtime's clock).
            statuses: which finished statuses to collect; default SUCCEEDED, FAILED and
                CANCELLED.
            dry_run: delete nothing; report what would be deleted (blobs included,
                counted once over all the runs it would delete).
            batch: runs per transaction.
            domain_keys: delete the runs' domain-key ledger entries too.

        Returns:
            A `GcReport` of what was (or would be) deleted.

        Raises:
            UsageError: a negative `older_than`, an unfinished or unknown status, or a
                batch below 1.
        """
        chosen = _check(older_than, statuses, batch)
        store = self.engine._ensure_store()
        cutoff = self.engine.clock() - older_than
        totals = dict.fromkeys(
            ("runs", "steps", "messages", "ledger_entries", "domain_key_entries", "batches"), 0
        )
        totals.update(blobs=0, blob_bytes=0)
        doomed: list[str] = []  # a dry run's runs, for counting their blobs once
        longest = 0.0
        kept_sources = store.gc_fork_sources(statuses=chosen, before=cutoff)
        after: tuple[datetime, str] | None = None
        while True:
            found = store.gc_candidates(statuses=chosen, before=cutoff, after=after, limit=batch)
            if not found:
                break
            after = (found[-1][1], found[-1][0])
            ids = [run_id for run_id, _ in found]
            if dry_run:
                counts = store.gc_count(ids)
                doomed.extend(ids)
            else:
                started = time.perf_counter()
                counts = store.gc_delete(
                    ids, statuses=chosen, before=cutoff, domain_keys=domain_keys
                )
                longest = max(longest, time.perf_counter() - started)
            if counts.runs:
                totals["batches"] += 1
            totals["runs"] += counts.runs
            totals["steps"] += counts.steps
            totals["messages"] += counts.messages
            totals["ledger_entries"] += counts.effects
            totals["domain_key_entries"] += counts.domain_effects
            totals["blobs"] += counts.blobs
            totals["blob_bytes"] += counts.blob_bytes
            if len(found) < batch:
                break
        if doomed:
            # A blob shared by runs of two batches goes with the second: count over all.
            totals["blobs"], totals["blob_bytes"] = store.gc_count_blobs(doomed)
        return GcReport(
            dry_run=dry_run,
            cutoff=cutoff,
            statuses=chosen,
            domain_keys_kept=not domain_keys,
            fork_sources_kept=kept_sources,
            longest_batch_seconds=longest,
            **totals,
        )


def _check(older_than: timedelta, statuses: Sequence[str] | None, batch: int) -> tuple[str, ...]:
    """The statuses to collect, after checking every argument."""
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        raise UsageError(f"older_than must be a timedelta of 0 or more, not {older_than!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UsageError(f"batch must be a whole number of at least 1, not {batch!r}")
    if statuses is None:
        return FINISHED
    if isinstance(statuses, str):
        statuses = [statuses]
    chosen = tuple(dict.fromkeys(status.upper() for status in statuses))
    wrong = [status for status in chosen if status not in FINISHED]
    if wrong or not chosen:
        raise UsageError(
            f"gc deletes finished runs only: statuses must be among {', '.join(FINISHED)}, "
            f"not {', '.join(wrong) or 'none'}"
        )
    return chosen
