"""The web UI's reads: a keyset page of runs, and the tool steps waiting for an operator.

Like audit_queries.py, these are store operations kept out of base.py; they run the
statements `RUNS_PAGE` and `INBOX_STEPS` of the dialect modules. Pages are keyset pages
(`WHERE (created_at, run_id) < cursor ORDER BY created_at DESC, run_id DESC`), never
OFFSET, so the thousandth page costs what the first does (index `runs_created` of
migration 0005).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentdur.store.base import RunInfo, SqlStore, StepInfo

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, tzinfo=timezone.utc)
"""Bounds that stand for "no bound", so that the statement stays one index range scan."""


def runs_page(
    store: SqlStore,
    *,
    status: str | None = None,
    workflow: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[RunInfo]:
    """Runs newest first, created in [since, until), strictly older than `before`
    (the `(created_at, run_id)` of the last run of the previous page)."""
    created, run_id = before if before is not None else (LATEST, "")
    params = {
        "status": status,
        "workflow": workflow,
        "since": store._time_param(since or EARLIEST),
        "until": store._time_param(until or LATEST),
        "before_created": store._time_param(created),
        "before_run_id": run_id,
        "limit": limit,
    }
    with store.statement() as cur:
        cur.execute(store.sql.RUNS_PAGE, params)
        rows = cur.fetchall()
    return [store._run(row) for row in rows]


def inbox_steps(store: SqlStore, *, limit: int = 500) -> list[StepInfo]:
    """Tool steps of runs WAITING or NEEDS_ATTENTION that wait for a decision: a call
    WAITING for approval, or a side effect STARTED whose outcome is uncertain."""
    with store.statement() as cur:
        cur.execute(store.sql.INBOX_STEPS, {"limit": limit})
        rows = cur.fetchall()
    return store.unpacked([store._step(row) for row in rows])
