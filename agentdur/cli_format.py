"""Formatting for the `agentdur` command: tables, timelines, run trees, conversations.

I/O-free: every function turns recorded data into text, so the CLI modules and the
examples print the same thing. `CommandError` lives here too, being shared by cli.py and
cli_replay.py.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from agentdur import recording
from agentdur.errors import RunNotFoundError
from agentdur.fork import fork_settings
from agentdur.models import AssistantMessage, Message, ToolResultMessage
from agentdur.store import RunInfo, StepInfo
from agentdur.store.audit_queries import ToolCallRecord, UsageRecord

DETAIL_WIDTH = 60
VALUE_WIDTH = 200
CELL_WIDTH = 40


class CommandError(Exception):
    """A usage or lookup problem found by the CLI itself; exits 2."""


# -- values ----------------------------------------------------------------------------


def format_time(when: datetime | None) -> str:
    """A time in UTC as `YYYY-MM-DD HH:MM:SS`, or `-`."""
    if when is None:
        return "-"
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def format_seconds(seconds: float | None) -> str:
    """A duration for people: `850ms`, `12.3s`, `4m05s`, `2h03m`, or `-`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def millis(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def run_duration(run: RunInfo) -> float | None:
    if run.finished_at is None:
        return None
    return (run.finished_at - (run.started_at or run.created_at)).total_seconds()


def compact(value: Any, width: int) -> str:
    """`value` as one line of compact JSON, cut to `width` characters."""
    return cut(json.dumps(value, default=str, ensure_ascii=False), width)


def cut(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_not_found(exc: RunNotFoundError, database: str) -> str:
    """The lookup error of an unknown run id, naming the database read, hint once."""
    return f"no run with id {exc.run_id!r} in {database}; `agentdur runs list` shows its runs"


def error_text(error: Any) -> str:
    """A recorded error (`{"type", "message", ...}`) as `Type: message`."""
    if isinstance(error, dict):
        kind = error.get("type") or "Error"
        message = error.get("message")
        return f"{kind}: {message}" if message else str(kind)
    return compact(error, VALUE_WIDTH)


def tokens(usage: Any) -> str:
    """`12 in / 30 out tokens` from an llm step's usage dict."""
    if not isinstance(usage, dict) or not usage:
        return ""
    counts = [usage.get("input_tokens"), usage.get("output_tokens")]
    if counts == [None, None]:
        return compact(usage, DETAIL_WIDTH)
    got, sent = ("?" if count is None else str(count) for count in counts)
    return f"{got} in / {sent} out tokens"


def step_flags(step: StepInfo) -> list[str]:
    flags = [
        ("inherited", step.inherited_from is not None),
        ("edited", step.edited),
        ("dry-run", step.dry_run),
        ("deduplicated", step.deduplicated),
    ]
    return [f"[{name}]" for name, on in flags if on]


def detail(step: StepInfo) -> str:
    """What to know about a step at a glance: model and tokens, tool arguments, error."""
    if step.kind == "llm":
        used = tokens(step.usage)
        parts = [f"{step.model or '?'} ({used})" if used else step.model or ""]
    elif step.input is not None:
        parts = [compact(step.input, DETAIL_WIDTH)]
    else:
        parts = []
    if step.error is not None:
        parts.append(cut(error_text(step.error), DETAIL_WIDTH))
    parts += step_flags(step)
    return " | ".join(part for part in parts if part)


# -- tables ----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Rows aligned under upper-case headers; columns in `right` align right."""
    cells = [list(headers)] + [[" ".join(cell.split()) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json_text(data: Any) -> str:
    return json.dumps(data, default=json_default, indent=2, ensure_ascii=False)


def steps_table(steps: Sequence[StepInfo]) -> str:
    rows = [
        [
            str(s.step_index),
            s.kind,
            s.name,
            s.status,
            str(s.attempts),
            millis(s.duration),
            detail(s),
        ]
        for s in steps
    ]
    headers = ["#", "KIND", "NAME", "STATUS", "ATTEMPTS", "MS", "DETAIL"]
    return table(headers, rows, right={0, 4, 5})


# -- timelines (replay, fork) ----------------------------------------------------------


def timeline_line(step: StepInfo) -> str:
    """One step as a timeline line: index, kind, name, status, what it did."""
    return f"{step.step_index:>4}  {step.kind:<4}  {step.name:<20}  {step.status:<9}  " + (
        timeline_detail(step)
    )


def timeline_detail(step: StepInfo) -> str:
    """An LLM step's decision (tool calls or answer), a tool call's arguments and result."""
    parts: list[str] = []
    if step.kind == "llm" and step.status == "SUCCEEDED":
        try:
            response = recording.response_of(step)
        except (ValueError, KeyError, TypeError):
            response = None
        if response is not None and response.tool_calls:
            parts.append("calls " + ", ".join(call.name for call in response.tool_calls))
        elif response is not None:
            text = json.dumps(response.text or "", ensure_ascii=False)
            parts.append("answers " + cut(text, DETAIL_WIDTH))
    elif step.kind == "tool" and isinstance(step.input, dict):
        arguments = step.input.get("arguments", step.input.get("raw_arguments"))
        parts.append(compact(arguments, DETAIL_WIDTH // 2))
        if step.status == "SUCCEEDED":
            parts.append("-> " + compact(step.output, DETAIL_WIDTH // 2))
    elif step.input is not None:
        parts.append(compact(step.input, DETAIL_WIDTH))
    if step.error is not None:
        parts.append(cut(error_text(step.error), DETAIL_WIDTH))
    return " ".join(parts + step_flags(step))


def timeline(steps: Sequence[StepInfo]) -> str:
    return "\n".join(timeline_line(step) for step in steps)


# -- run trees -------------------------------------------------------------------------


def tree_lines(runs: Sequence[RunInfo], root_id: str) -> list[str]:
    """The run `root_id` and its forks (from `forked_from`) as an indented tree."""
    by_id = {run.run_id: run for run in runs}
    children: dict[str, list[RunInfo]] = {}
    for run in runs:
        if run.forked_from is not None and run.run_id != root_id:
            children.setdefault(run.forked_from, []).append(run)
    lines: list[str] = []

    def visit(run: RunInfo, depth: int) -> None:
        if depth == 0:
            where = run.workflow
            if run.forked_from is not None:
                where += f", forked from {run.forked_from} at step {run.forked_at}"
        else:
            where = fork_summary(run, by_id.get(run.forked_from or ""))
        lines.append(f"{'    ' * depth}{run.run_id}  {run.status}  {where}")
        for child in children.get(run.run_id, []):
            visit(child, depth + 1)

    visit(by_id[root_id], 0)
    return lines


def fork_summary(run: RunInfo, parent: RunInfo | None) -> str:
    """`forked at step 3, model gpt-x, dry run`: where and how a fork left its source."""
    settings = fork_settings(run.metadata)
    inherited = fork_settings(parent.metadata if parent else None).get("models", [])
    parts = [f"forked at step {run.forked_at}"]
    parts += [f"model {m['model']}" for m in settings.get("models", []) if m not in inherited]
    if settings.get("dry_run"):
        parts.append("dry run")
    return ", ".join(parts)


# -- conversations ---------------------------------------------------------------------


def message_blocks(messages: Sequence[Message]) -> str:
    """A conversation one block per message: `[i] role`, then the content in full."""
    blocks = []
    for position, message in enumerate(messages):
        head = f"[{position}] {message.role}"
        body: list[str] = []
        if isinstance(message, ToolResultMessage):
            head += f" {message.name} (call {message.tool_call_id})"
            if message.is_error:
                head += " error"
            body.append(message.content)
        elif isinstance(message, AssistantMessage):
            if message.content:
                body.append(message.content)
            for call in message.tool_calls:
                arguments = json.dumps(call.arguments, ensure_ascii=False)
                body.append(f"-> {call.name} {arguments} (call {call.id})")
        else:
            body.append(message.content)
        blocks.append("\n".join([head, *body]))
    return "\n\n".join(blocks)


# -- audit -----------------------------------------------------------------------------


def tool_call_flags(call: ToolCallRecord) -> str:
    flags = [
        ("inherited", call.inherited),
        ("dry-run", call.dry_run),
        ("deduplicated", call.deduplicated),
    ]
    return " ".join(name for name, on in flags if on)


def tool_calls_table(calls: Sequence[ToolCallRecord]) -> str:
    rows = [
        [
            format_time(c.started_at),
            c.run_id,
            c.agent or "-",
            str(c.step_index),
            c.tool,
            c.effect or "-",
            c.status,
            compact(c.arguments, CELL_WIDTH),
            cut(error_text(c.error), CELL_WIDTH) if c.error else compact(c.result, CELL_WIDTH),
            tool_call_flags(c),
        ]
        for c in calls
    ]
    headers = [
        "STARTED (UTC)",
        "RUN",
        "AGENT",
        "#",
        "TOOL",
        "EFFECT",
        "STATUS",
        "ARGUMENTS",
        "RESULT",
        "FLAGS",
    ]
    return table(headers, rows, right={3})


TOOL_CALL_COLUMNS = (
    "run_id",
    "agent",
    "step_index",
    "tool",
    "arguments",
    "result",
    "error",
    "effect",
    "idempotency_key",
    "status",
    "attempts",
    "started_at",
    "finished_at",
    "duration_ms",
    "inherited",
    "inherited_from",
    "dry_run",
    "deduplicated",
)
"""The columns of the `tool_calls` view, in its order: the header of `--csv`."""


def tool_call_row(call: ToolCallRecord) -> dict[str, Any]:
    """A ToolCallRecord under the `tool_calls` view's column names."""
    row = dataclasses.asdict(call)
    row["attempts"] = row.pop("attempt")
    duration = row.pop("duration")
    row["finished_at"] = None if duration is None else call.started_at + timedelta(seconds=duration)
    row["duration_ms"] = None if duration is None else round(duration * 1000, 1)
    return row


def tool_calls_csv(calls: Sequence[ToolCallRecord]) -> str:
    """The tool calls as CSV with the view's columns as header; JSON values as JSON text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TOOL_CALL_COLUMNS)
    for call in calls:
        record = tool_call_row(call)
        row = []
        for name in TOOL_CALL_COLUMNS:
            value = record[name]
            if name in ("arguments", "result", "error"):
                value = "" if value is None else json.dumps(value, ensure_ascii=False)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, datetime):
                value = value.isoformat()
            row.append("" if value is None else str(value))
        writer.writerow(row)
    return out.getvalue()


def usage_table(records: Sequence[UsageRecord], group_by: str) -> str:
    rows = [
        [
            r.group or "-",
            str(r.calls),
            str(r.input_tokens),
            str(r.output_tokens),
            str(r.total_tokens),
        ]
        for r in records
    ]
    if len(records) > 1:
        rows.append(
            [
                "total",
                str(sum(r.calls for r in records)),
                str(sum(r.input_tokens for r in records)),
                str(sum(r.output_tokens for r in records)),
                str(sum(r.total_tokens for r in records)),
            ]
        )
    headers = [group_by.upper(), "CALLS", "INPUT TOKENS", "OUTPUT TOKENS", "TOTAL"]
    return table(headers, rows, right={1, 2, 3, 4})
