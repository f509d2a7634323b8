"""Audit: every tool call an agent made and every token it spent, across runs and forks.

`Audit(rt)` (or `rt.audit`) checks the arguments and asks the store, whose queries read
the `tool_calls` and `llm_calls` views; the same views serve `sqlite3` and `psql` users.
A fork's copied steps appear under the fork too, flagged `inherited`: the call happened
once, in the run named by `inherited_from`. The CLI's `agentdur audit` prints these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from agentdur.errors import UsageError
from agentdur.store import RunInfo, SqlStore
from agentdur.store.audit_queries import USAGE_GROUPS, ToolCallRecord, UsageRecord

if TYPE_CHECKING:
    from agentdur.runtime import Runtime

__all__ = ["Audit", "ToolCallRecord", "UsageRecord", "parse_since"]

Since = datetime | timedelta | str | None
GroupBy = Literal["run", "agent", "model"]

_STATUSES = {"ok": "SUCCEEDED", "error": "ERROR"}
_STEP_STATUSES = ("SUCCEEDED", "ERROR", "STARTED")
_EFFECTS = ("read_only", "idempotent", "side_effect")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_since(value: Since, now: datetime) -> datetime | None:
    """A point in time from `2h`, `30m`, `7d`, `1w`, an ISO date or time, or a timedelta.

    A relative value counts back from `now`; an ISO value without a zone is UTC.
    """
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        return now - value
    text = value.strip()
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"since {value!r} is not a time: use 30m, 2h, 7d, 1w or an ISO date such as "
            "2026-01-31 or 2026-01-31T08:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class Audit:
    """Queries over the recorded tool calls and LLM calls of every run.

    Args:
        source: a `Runtime` (its store is opened and its schema checked on first use,
            and its clock measures relative `since` values) or a store.
    """

    def __init__(self, source: Runtime | SqlStore) -> None:
        self._source = source

    def _store(self) -> SqlStore:
        if isinstance(self._source, SqlStore):
            return self._source
        return self._source._ensure_store()

    def _now(self) -> datetime:
        clock: Callable[[], datetime] = getattr(self._source, "clock", utc_now)
        return clock()

    def tool_calls(
        self,
        tool: str | None = None,
        *,
        run_id: str | None = None,
        agent: str | None = None,
        since: Since = None,
        status: str | None = None,
        effect: str | None = None,
    ) -> list[ToolCallRecord]:
        """Every tool call matching all the filters given, oldest first; forks included.

        Args:
            tool: the tool's name.
            run_id: one run (a fork lists its inherited calls too, flagged `inherited`).
            agent: the agent's name (`support` or `agent:support`).
            since: calls started at or after this: a datetime, a timedelta back from
                now, or text such as `2h`, `30m`, `7d`, `2026-01-31`.
            status: `ok` or `error` (or a step status: SUCCEEDED, ERROR, STARTED).
            effect: `read_only`, `idempotent` or `side_effect`.
        """
        if effect is not None and effect not in _EFFECTS:
            raise UsageError(f"effect must be one of {', '.join(_EFFECTS)}, not {effect!r}")
        return self._store().tool_calls(
            tool=tool,
            run_id=run_id,
            agent=_agent_name(agent),
            since=parse_since(since, self._now()),
            status=_status(status),
            effect=effect,
        )

    def usage(
        self,
        *,
        run_id: str | None = None,
        agent: str | None = None,
        since: Since = None,
        group_by: GroupBy = "run",
    ) -> list[UsageRecord]:
        """Tokens per run, agent or model over the LLM calls matching the filters.

        Only calls a run really made count: a fork's inherited calls count once, in the
        run that made them, and an edited response used no tokens. `since` is as for
        `tool_calls`.
        """
        if group_by not in USAGE_GROUPS:
            raise UsageError(f"group_by must be run, agent or model, not {group_by!r}")
        return self._store().llm_usage(
            group_by=group_by,
            run_id=run_id,
            agent=_agent_name(agent),
            since=parse_since(since, self._now()),
        )

    def run_tree(self, run_id: str) -> list[RunInfo]:
        """The run and every run forked from it (recursively), oldest first.

        Empty when there is no run with that id.
        """
        return self._store().run_tree(run_id)


def _agent_name(agent: str | None) -> str | None:
    if agent is not None and agent.startswith("agent:"):
        return agent[len("agent:") :]
    return agent


def _status(status: str | None) -> str | None:
    if status is None:
        return None
    if status.lower() in _STATUSES:
        return _STATUSES[status.lower()]
    if status.upper() in _STEP_STATUSES:
        return status.upper()
    raise UsageError(f"status must be ok or error (or SUCCEEDED, ERROR, STARTED), not {status!r}")
