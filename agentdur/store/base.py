"""The store interface: every read and write agentdur makes, written once for both dialects.

`SqlStore` holds the logic of each operation (runs and steps here; the effect ledger and
messages in effects.py; queues in queueing.py; audit queries in audit_queries.py); the
dialect modules (`sqlite.py`, `postgres.py`) hold the SQL text as module constants under
identical names, plus the connection mechanics and value conversions (JSON as TEXT or
JSONB, time as text or TIMESTAMPTZ). Nothing outside `agentdur/store/` writes SQL.

Invariants live in the statements: a step write or a run's final write names the epoch
it was started with and touches no row when another executor took the run over since, in
which case the store raises `FencedError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentdur.errors import FencedError
from agentdur.store.core import (
    FINISHED,
    STEP_COLUMNS,
    UNFINISHED,
    Cursor,
    Effect,
    RunInfo,
    StepInfo,
    StoreCore,
    split_statements,
)
from agentdur.store.effects import EffectOps
from agentdur.store.queueing import QueueOps

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


class SqlStore(EffectOps, QueueOps, StoreCore):
    """Every operation of a store, over a dialect's SQL constants and connection."""

    # -- runs --------------------------------------------------------------------------

    def create_run(self, run: RunInfo, *, input_json: str) -> bool:
        """Insert a new run; False when a run with that id exists already (nothing written)."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.statement() as cur:
            cur.execute(self.sql.CREATE_RUN, params)
            return cur.rowcount == 1

    def get_run(self, run_id: str) -> RunInfo | None:
        with self.statement() as cur:
            cur.execute(self.sql.GET_RUN, {"run_id": run_id})
            row = cur.fetchone()
        return self._run(row) if row else None

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
            if cur.rowcount != 1:
                raise FencedError(run_id, epoch)

    def claim_run(
        self, run_id: str, *, owner: str, now: datetime, lease_until: datetime
    ) -> RunInfo | None:
        """Take a run this executor may run (its own, unowned, or with an expired lease).

        Bumps the epoch, so any earlier owner's later writes are refused.
        """
        params = {
            "run_id": run_id,
            "owner": owner,
            "now": self._time_param(now),
            "lease_until": self._time_param(lease_until),
        }
        with self.statement() as cur:
            cur.execute(self.sql.CLAIM_RUN, params)
            row = cur.fetchone()
        return self._run(row) if row else None

    def recoverable_runs(self, *, owner: str, now: datetime) -> list[tuple[str, str]]:
        """(run_id, workflow) of unfinished runs this executor may take, oldest first."""
        with self.statement() as cur:
            cur.execute(self.sql.RECOVERABLE_RUNS, {"owner": owner, "now": self._time_param(now)})
            return [(row[0], row[1]) for row in cur.fetchall()]

    def heartbeat(
        self, *, executor_id: str, host: str, pid: int, now: datetime, lease_until: datetime
    ) -> set[str]:
        """Record that the executor lives and extend its leases; returns the runs it owns."""
        params = {
            "executor_id": executor_id,
            "host": host,
            "pid": pid,
            "now": self._time_param(now),
            "lease_until": self._time_param(lease_until),
        }
        with self.transaction() as cur:
            cur.execute(self.sql.UPSERT_EXECUTOR, params)
            cur.execute(self.sql.EXTEND_LEASES, params)
            return {row[0] for row in cur.fetchall()}

    def cancel_run(self, run_id: str, *, now: datetime) -> bool:
        """Mark an unfinished run CANCELLED; False if it had finished already."""
        with self.statement() as cur:
            cur.execute(self.sql.CANCEL_RUN, {"run_id": run_id, "now": self._time_param(now)})
            return cur.rowcount == 1

    # -- steps -------------------------------------------------------------------------

    def steps(self, run_id: str) -> list[StepInfo]:
        """Every recorded step of a run in index order: one query."""
        with self.statement() as cur:
            cur.execute(self.sql.LOAD_STEPS, {"run_id": run_id})
            rows = cur.fetchall()
        return [self._step(row) for row in rows]

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

        With `cur`, the write joins that transaction (transactional steps).
        """
        params = self._step_params(step, payload=False)
        params.update(
            epoch=epoch,
            input=self._json_param(input_json),
            output=self._json_param(output_json),
            error=self._json_param(error_json),
        )
        if cur is not None:
            cur.execute(self.sql.RECORD_STEP, params)
            if cur.rowcount != 1:
                raise FencedError(step.run_id, epoch)
            return
        with self.statement() as own:
            own.execute(self.sql.RECORD_STEP, params)
            if own.rowcount != 1:
                raise FencedError(step.run_id, epoch)

    def create_forked_run(
        self, run: RunInfo, *, input_json: str, steps: Sequence[StepInfo]
    ) -> bool:
        """Insert a new run with copied steps in one transaction; False if the id is taken."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.transaction() as cur:
            cur.execute(self.sql.CREATE_RUN, params)
            if cur.rowcount != 1:
                return False
            for step in steps:
                cur.execute(self.sql.COPY_STEP, self._step_params(step))
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
