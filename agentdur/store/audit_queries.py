"""Audit reads: tool calls and token usage from the audit views, and a run's fork tree.

`SqlStore.tool_calls`, `SqlStore.llm_usage` and `SqlStore.run_tree` are these functions;
they live here to keep base.py within its size budget. Like every store operation they
run statements named after them in the dialect modules (`TOOL_CALLS`,
`LLM_USAGE_BY_RUN`/`_AGENT`/`_MODEL`, `RUN_TREE`), which read the `tool_calls` and
`llm_calls` views of migration 0002. The rows come back as `ToolCallRecord` and
`UsageRecord`; `agentdur.audit.Audit` is the public face with argument checking.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentdur.store.base import RunInfo, SqlStore

USAGE_GROUPS = {
    "run": "LLM_USAGE_BY_RUN",
    "agent": "LLM_USAGE_BY_AGENT",
    "model": "LLM_USAGE_BY_MODEL",
}


@dataclass(frozen=True, kw_only=True)
class ToolCallRecord:
    """One tool call an agent made, as the audit shows it (a row of the `tool_calls` view)."""

    run_id: str
    agent: str | None
    """The agent's name, for runs of workflow `agent:<name>`."""
    step_index: int
    tool: str
    arguments: Any
    """The validated arguments; None when the model sent arguments that are not JSON."""
    result: Any
    error: Any
    """`{"type", "message", ...}` when the call failed."""
    effect: str | None
    """read_only, idempotent or side_effect (None when the tool was unknown)."""
    idempotency_key: str | None
    status: str
    """SUCCEEDED, ERROR, or STARTED for a side effect under way or uncertain."""
    attempt: int
    """How many attempts the call took."""
    started_at: datetime
    duration: float | None
    """Seconds from start to finish, if finished."""
    inherited: bool
    """Copied into a fork: the call happened once, in the run `inherited_from`."""
    dry_run: bool
    """Simulated by a dry-run fork: nothing was executed."""
    deduplicated: bool
    """Answered by the effect ledger with the result of an earlier call under its key."""
    inherited_from: str | None = None


@dataclass(frozen=True, kw_only=True)
class UsageRecord:
    """Tokens of the LLM calls of one group (a run, an agent or a model)."""

    group: str | None
    calls: int
    """LLM calls actually made: inherited and edited responses are not counted."""
    input_tokens: int
    output_tokens: int
    total_tokens: int


def tool_calls(
    store: SqlStore,
    *,
    tool: str | None = None,
    run_id: str | None = None,
    agent: str | None = None,
    since: datetime | None = None,
    status: str | None = None,
    effect: str | None = None,
) -> list[ToolCallRecord]:
    """Tool calls matching every filter given, oldest first."""
    params = {
        "tool": tool,
        "run_id": run_id,
        "agent": agent,
        "since": store._time_param(since),
        "status": status,
        "effect": effect,
    }
    with store.statement() as cur:
        cur.execute(store.sql.TOOL_CALLS, params)
        rows = cur.fetchall()
    return [_tool_call(store, row) for row in rows]


def llm_usage(
    store: SqlStore,
    *,
    group_by: str,
    run_id: str | None = None,
    agent: str | None = None,
    since: datetime | None = None,
) -> list[UsageRecord]:
    """Tokens per run, agent or model over the LLM calls matching the filters."""
    query = getattr(store.sql, USAGE_GROUPS[group_by])
    params = {"run_id": run_id, "agent": agent, "since": store._time_param(since)}
    with store.statement() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    return [
        UsageRecord(
            group=row[0],
            calls=int(row[1]),
            input_tokens=int(row[2]),
            output_tokens=int(row[3]),
            total_tokens=int(row[2]) + int(row[3]),
        )
        for row in rows
    ]


def run_tree(store: SqlStore, run_id: str) -> list[RunInfo]:
    """The run and every run forked from it, recursively, oldest first."""
    with store.statement() as cur:
        cur.execute(store.sql.RUN_TREE, {"run_id": run_id})
        rows = cur.fetchall()
    return [store._run(row) for row in rows]


def _tool_call(store: SqlStore, row: Any) -> ToolCallRecord:
    started = store._time_value(row[11])
    finished = store._time_value(row[12])
    assert started is not None
    return ToolCallRecord(
        run_id=row[0],
        agent=row[1],
        step_index=int(row[2]),
        tool=row[3],
        arguments=store._json_value(row[4]),
        result=store._json_value(row[5]),
        error=store._json_value(row[6]),
        effect=row[7],
        idempotency_key=row[8],
        status=row[9],
        attempt=int(row[10]),
        started_at=started,
        duration=None if finished is None else (finished - started).total_seconds(),
        inherited=bool(row[13]),
        inherited_from=row[14],
        dry_run=bool(row[15]),
        deduplicated=bool(row[16]),
    )
