"""The store interface: every read and write agentdur makes, written once for both dialects.

`SqlStore` holds the logic of each operation (runs and steps here; the effect ledger and
messages in effects.py; queues in queueing.py; retention (gc) in retention.py; audit
queries in audit_queries.py); the dialect modules (`sqlite.py`, `postgres.py`) hold the
SQL text as module constants under identical names, plus the connection mechanics and
value conversions (JSON as TEXT or JSONB, time as text or TIMESTAMPTZ). Nothing outside
`agentdur/store/` writes SQL.

Invariants live in the statements: a step write or a run's final write names the epoch
it was started with and touches no row when another executor took the run over since, in
which case the store raises `FencedError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentdur import codec
from agentdur.errors import FencedError
from agentdur.store import payloads
from agentdur.store.core import (
    FINISHED,
    STEP_COLUMNS,
    UNFINISHED,
    Cursor,
    Effect,
    RunInfo,
    StepInfo,
    StoreCore,
    extract_blobs,
    retrying_read,
    split_statements,
)
from agentdur.store.effects import EffectOps
from agentdur.store.queueing import QueueOps
from agentdur.store.retention import RetentionOps

if TYPE_CHECKING:
    from agentdur.store.audit_queries import ToolCallRecord, UsageRecord

__all__ = [
    "FINISHED",
    "STEP_COLUMNS",
    "UNFINISHED",
    "Cursor",
    "Effect",
    "RunInfo",
    "SqlStore",
    "StepInfo",
    "split_statements",
]


class SqlStore(EffectOps, QueueOps, RetentionOps, StoreCore):
    """Every operation of a store, over a dialect's SQL constants and connection."""

    # -- runs --------------------------------------------------------------------------

    def create_run(self, run: RunInfo, *, input_json: str) -> bool:
        """Insert a new run; False when a run with that id exists already (nothing written)."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.statement() as cur:
            cur.execute(self.sql.CREATE_RUN, params)
            return cur.rowcount == 1

    @retrying_read
    def get_run(self, run_id: str) -> RunInfo | None:
        with self.statement() as cur:
            cur.execute(self.sql.GET_RUN, {"run_id": run_id})
            row = cur.fetchone()
        return self._run(row) if row else None

    @retrying_read
    def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        params = {"status": status, "workflow": workflow, "limit": limit}
        with self.statement() as cur:
            cur.execute(self.sql.LIST_RUNS, params)
            rows = cur.fetchall()
        return [self._run(row) for row in rows]

    def finish_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: str,
        output_json: str | None,
        error_json: str | None,
        now: datetime,
    ) -> None:
        """Write a run's outcome; `FencedError` if the run is no longer ours at `epoch`."""
        params = {
            "run_id": run_id,
            "epoch": epoch,
            "status": status,
            "output": self._json_param(output_json),
            "error": self._json_param(error_json),
            "now": self._time_param(now),
        }
        with self.statement() as cur:
            cur.execute(self.sql.FINISH_RUN, params)
            if cur.rowcount == 1:
                return
            cur.execute(self.sql.GET_RUN, {"run_id": run_id})
            row = cur.fetchone()
        # As in record_step: a retried group may find its own outcome written already.
        run = self._run(row) if row else None
        if run is None or run.epoch != epoch or run.status != status:
            raise FencedError(run_id, epoch)

    def claim_run(
        self,
        run_id: str,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        others: bool = True,
        dead: Sequence[str] = (),
    ) -> RunInfo | None:
        """Take a run this executor may take (see `recoverable_runs`), or None.

        Bumps the epoch, so any earlier owner's later writes are refused.
        """
        params = self._takeable_params(owner, now, others, dead)
        params.update(run_id=run_id, lease_until=self._time_param(lease_until))
        with self.statement() as cur:
            cur.execute(self.sql.CLAIM_RUN, params)
            row = cur.fetchone()
        return self._run(row) if row else None

    @retrying_read
    def recoverable_runs(
        self, *, owner: str, now: datetime, others: bool = True, dead: Sequence[str] = ()
    ) -> list[tuple[str, str]]:
        """(run_id, workflow) of unfinished runs this executor may take, oldest first.

        Its own runs still RUNNING (released by a database fault) and due wake-ups of
        WAITING runs outside queues; with `others`, also unowned runs, runs whose lease
        expired and runs owned by `dead` executors (dead processes on this host).
        """
        params = self._takeable_params(owner, now, others, dead)
        with self.statement() as cur:
            cur.execute(self.sql.RECOVERABLE_RUNS, params)
            return [(row[0], row[1]) for row in cur.fetchall()]

    def _takeable_params(
        self, owner: str, now: datetime, others: bool, dead: Sequence[str]
    ) -> dict[str, Any]:
        return {
            "owner": owner,
            "now": self._time_param(now),
            "others": others,
            "dead": json.dumps(list(dead)),
        }

    def wake_queued(self, *, now: datetime) -> int:
        """Put WAITING runs of queues whose wake-up time came back in their queue."""
        with self.statement() as cur:
            cur.execute(self.sql.WAKE_QUEUED, {"now": self._time_param(now)})
            return cur.rowcount

    def release_run(self, run_id: str, *, epoch: int) -> bool:
        """Give up a run this executor holds at `epoch`: runnable by any executor again."""
        with self.statement() as cur:
            cur.execute(self.sql.RELEASE_RUN, {"run_id": run_id, "epoch": epoch})
            return cur.rowcount == 1

    @retrying_read
    def executors_on_host(self, host: str) -> list[tuple[str, int, str | None]]:
        """(executor_id, pid, process_started) of every executor recorded on `host`."""
        with self.statement() as cur:
            cur.execute(self.sql.EXECUTORS_ON_HOST, {"host": host})
            return [(row[0], int(row[1]), row[2]) for row in cur.fetchall()]

    def heartbeat(
        self,
        *,
        executor_id: str,
        host: str,
        pid: int,
        process_started: str | None,
        now: datetime,
        lease_until: datetime,
        runs: Sequence[tuple[str, int]],
    ) -> set[str]:
        """Record that the executor lives and extend the leases of `runs` (run_id, epoch).

        Only the runs this process executes now are named, so a run it merely owns on
        paper (skipped at recovery, or stalled) is never kept alive. Returns the runs
        extended: a named run missing from it was taken over, cancelled or released.
        """
        params = {
            "executor_id": executor_id,
            "host": host,
            "pid": pid,
            "process_started": process_started,
            "now": self._time_param(now),
            "lease_until": self._time_param(lease_until),
            "runs": json.dumps([{"run_id": r, "epoch": e} for r, e in runs]),
        }
        with self.transaction() as cur:
            cur.execute(self.sql.UPSERT_EXECUTOR, params)
            if not runs:
                return set()
            cur.execute(self.sql.EXTEND_LEASES, params)
            return {row[0] for row in cur.fetchall()}

    def cancel_run(self, run_id: str, *, now: datetime) -> bool:
        """Mark an unfinished run CANCELLED; False if it had finished already."""
        with self.statement() as cur:
            cur.execute(self.sql.CANCEL_RUN, {"run_id": run_id, "now": self._time_param(now)})
            return cur.rowcount == 1

    # -- steps -------------------------------------------------------------------------

    @retrying_read
    def steps(self, run_id: str) -> list[StepInfo]:
        """Every recorded step of a run in index order, as recorded before packing
        (payloads.py): one query for the steps, one for their blobs."""
        with self.statement() as cur:
            cur.execute(self.sql.LOAD_STEPS, {"run_id": run_id})
            rows = cur.fetchall()
            cur.execute(self.sql.LOAD_BLOBS, {"run_id": run_id})
            blobs = payloads.hashes(cur.fetchall())
        values = [self._step_values(row) for row in rows]
        if blobs:
            for step in values:
                payloads.with_blobs(step, blobs.get(step["step_index"], {}))
        return payloads.expand_loaded(values)

    @retrying_read
    def get_step(self, run_id: str, step_index: int) -> StepInfo | None:
        """One recorded step, or None."""
        with self.statement() as cur:
            step = self._stored_step(cur, run_id, step_index)
        return None if step is None else self.unpacked([step])[0]

    def record_step(
        self,
        step: StepInfo,
        *,
        epoch: int,
        input_json: str | None,
        output_json: str | None,
        error_json: str | None,
        cur: Cursor | None = None,
    ) -> None:
        """Write a finished step: one statement, refused (`FencedError`) unless we own the run.

        With `cur`, the write joins that transaction (transactional steps). A string over
        `payloads.BLOB_THRESHOLD` goes to the blobs table in the same transaction.
        """
        texts = extract_blobs(input_json, output_json, error_json)
        input_json, output_json, error_json, blobs = texts
        params = self._step_params(step, payload=False)
        params.update(
            epoch=epoch,
            input=self._json_param(input_json),
            output=self._json_param(output_json),
            error=self._json_param(error_json),
        )
        if cur is not None:
            self._save_blobs(cur, blobs)
            cur.execute(self.sql.RECORD_STEP, params)
            if cur.rowcount != 1:
                raise FencedError(step.run_id, epoch)
            self._link_blobs(cur, step, blobs)
            return
        written = self.transaction() if blobs else self.statement()
        with written as own:
            self._save_blobs(own, blobs)
            own.execute(self.sql.RECORD_STEP, params)
            if own.rowcount == 1:
                self._link_blobs(own, step, blobs)
                return
            # A group retried after a commit whose outcome was lost may find its own
            # write already there: that is success, not a takeover.
            own.execute(self.sql.GET_STEP, {"run_id": step.run_id, "step_index": step.step_index})
            row = own.fetchone()
            if row is None or not _same_write(self._step(row), step, output_json, error_json):
                # Raised inside the transaction, so a blob saved for this write goes too.
                raise FencedError(step.run_id, epoch)

    def create_forked_run(
        self, run: RunInfo, *, input_json: str, below: int, steps: Sequence[StepInfo]
    ) -> bool:
        """Insert a fork in one transaction: the new run, the source's steps below index
        `below` copied as stored (packed, so a tool call's arguments stay kept once, and
        blobs shared by reference), then `steps` (an edited response). False if the id
        is taken."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.transaction() as cur:
            cur.execute(self.sql.CREATE_RUN, params)
            if cur.rowcount != 1:
                return False
            inherit = {"run_id": run.run_id, "source": run.forked_from, "below": below}
            cur.execute(self.sql.INHERIT_STEPS, inherit)
            cur.execute(self.sql.INHERIT_STEP_BLOBS, inherit)
            for step in steps:
                params = self._step_params(step, payload=False)
                values = (step.input, step.output, step.error)
                texts = extract_blobs(*[None if v is None else _dumps(v) for v in values])
                params.update(
                    input=self._json_param(texts[0]),
                    output=self._json_param(texts[1]),
                    error=self._json_param(texts[2]),
                )
                blobs = texts[3]
                self._save_blobs(cur, blobs)
                cur.execute(self.sql.COPY_STEP, params)
                self._link_blobs(cur, step, blobs)
        return True

    # -- audit (audit_queries.py holds these; they read the views of migration 0002) ---

    def tool_calls(self, **filters: Any) -> list[ToolCallRecord]:
        """Tool calls, oldest first: `audit_queries.tool_calls` names the filters."""
        from agentdur.store import audit_queries

        return audit_queries.tool_calls(self, **filters)

    def llm_usage(self, *, group_by: str, **filters: Any) -> list[UsageRecord]:
        """Tokens per run, agent or model: see `audit_queries.llm_usage`."""
        from agentdur.store import audit_queries

        return audit_queries.llm_usage(self, group_by=group_by, **filters)

    def run_tree(self, run_id: str) -> list[RunInfo]:
        """The run and every run forked from it, recursively, oldest first."""
        from agentdur.store import audit_queries

        return audit_queries.run_tree(self, run_id)


def _dumps(value: Any) -> str:
    return codec.dumps(value)


def _same_write(
    found: StepInfo, step: StepInfo, output_json: str | None, error_json: str | None
) -> bool:
    """The recorded step is this very write (same outcome, same finish time)."""
    return (
        found.status == step.status
        and found.attempts == step.attempts
        and found.finished_at == step.finished_at
        and found.output == (None if output_json is None else codec.loads(output_json))
        and found.error == (None if error_json is None else codec.loads(error_json))
    )
