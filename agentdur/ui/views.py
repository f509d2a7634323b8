"""What the pages show, computed from recorded runs and steps: no I/O, no HTML.

The timeline's geometry, an LLM step's request as the model saw it, a tool step's
outcome, a run's token total, and `show`, which turns any recorded value into bounded,
printable text: LLM and tool text is adversarial input (NUL bytes, huge values), and the
templates escape what this returns (Jinja autoescape).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from agentdur import recording
from agentdur.cli_format import TOOL_CALL_COLUMNS, tool_call_row
from agentdur.models import AssistantMessage, SystemMessage, messages_adapter
from agentdur.store import RunInfo, StepInfo
from agentdur.store.audit_queries import ToolCallRecord

SHOW_LIMIT = 4000
"""Characters of one value shown on a page; the rest is cut with a note."""
TIMELINE_WIDTH = 900
ROW_HEIGHT = 16
LABEL_WIDTH = 220


def show(value: Any, limit: int = SHOW_LIMIT) -> str:
    """A recorded value as text: JSON (indented) unless it is a string, NULs made
    visible, cut to `limit` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    text = text.replace("\x00", "\\0")
    if len(text) > limit:
        return f"{text[:limit]}… ({len(text) - limit} more characters)"
    return text


def to_json(data: Any) -> str:
    """JSON for the API: times as ISO 8601 text."""
    return json.dumps(data, default=_default, ensure_ascii=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def run_record(run: RunInfo) -> dict[str, Any]:
    return asdict(run)


def step_record(step: StepInfo) -> dict[str, Any]:
    record = asdict(step)
    record["duration"] = step.duration
    return record


@dataclass(frozen=True)
class Tokens:
    input: int
    output: int
    calls: int

    @property
    def total(self) -> int:
        return self.input + self.output


def tokens(steps: list[StepInfo]) -> Tokens:
    """Tokens of the LLM calls this run really made (not inherited, not edited)."""
    inp = out = calls = 0
    for step in steps:
        if step.kind != "llm" or step.inherited_from or step.edited:
            continue
        usage = step.usage if isinstance(step.usage, dict) else {}
        inp += int(usage.get("input_tokens") or 0)
        out += int(usage.get("output_tokens") or 0)
        calls += 1
    return Tokens(inp, out, calls)


# -- the timeline -----------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    step: StepInfo
    x: float
    width: float
    y: int
    classes: str
    attempts: list[float]
    """x positions of the lines between attempts (retries), inside the bar."""
    label: str


@dataclass(frozen=True)
class Timeline:
    bars: list[Bar]
    width: int
    height: int
    span: float
    """Seconds from the run's start to its end (or now) that the axis shows."""
    ticks: list[tuple[float, str]]


def timeline(run: RunInfo, steps: list[StepInfo], now: datetime) -> Timeline:
    """Bars on a time axis, one row per step: parallel calls overlap in time on adjacent
    rows, waits show as the gaps between bars, retries as attempt segments."""
    start = run.started_at or run.created_at
    if steps:
        start = min(start, min(s.started_at for s in steps))
    end = run.finished_at or now
    for step in steps:
        end = max(end, step.finished_at or step.started_at)
    span = max((end - start).total_seconds(), 1e-3)
    scale = TIMELINE_WIDTH / span
    bars = []
    for row, step in enumerate(steps):
        x = (step.started_at - start).total_seconds() * scale
        stop = step.finished_at or (now if step.status in ("WAITING", "STARTED") else None)
        seconds = 0.0 if stop is None else max((stop - step.started_at).total_seconds(), 0.0)
        width = max(seconds * scale, 2.0)
        classes = [f"status-{step.status.lower()}", f"kind-{step.kind}"]
        if step.inherited_from:
            classes.append("inherited")
        if step.status == "WAITING" or step.kind in ("sleep", "recv"):
            classes.append("wait")
        n = max(step.attempts, 1)
        lines = [x + width * i / n for i in range(1, n)] if n > 1 else []
        label = f"{step.step_index} {step.kind} {step.name}"[:40]
        bars.append(Bar(step, x, width, row * ROW_HEIGHT, " ".join(classes), lines, label))
    ticks = [(TIMELINE_WIDTH * i / 4, _seconds(span * i / 4)) for i in range(5)]
    return Timeline(bars, TIMELINE_WIDTH, max(len(steps), 1) * ROW_HEIGHT, span, ticks)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


# -- one step ---------------------------------------------------------------------------


@dataclass
class LlmView:
    instructions: list[str]
    messages: list[dict[str, Any]]
    tools: Any
    params: Any
    provider: str
    response: dict[str, Any] | None
    response_error: str | None
    usage: Any
    latency_ms: Any
    endpoint: Any


def llm_view(step: StepInfo, steps: list[StepInfo]) -> LlmView:
    """An LLM step's request as the model saw it (rebuilt from the recording) and its
    response."""
    before = [s for s in steps if s.step_index <= step.step_index]
    try:
        messages = recording.conversation(before)
    except (KeyError, ValueError) as exc:
        messages = []
        error: str | None = f"cannot rebuild the conversation: {exc}"
    else:
        error = None
    if step.status == "SUCCEEDED" and messages and isinstance(messages[-1], AssistantMessage):
        messages = messages[:-1]  # that is this step's own response
    instructions = [m.content for m in messages if isinstance(m, SystemMessage)]
    shown = [
        m for m in messages_adapter.dump_python(messages, mode="json") if m.get("role") != "system"
    ]
    tools = None
    for earlier in before:
        if earlier.kind == "llm" and isinstance(earlier.input, dict) and "tools" in earlier.input:
            tools = earlier.input["tools"]
    response = None
    if step.output is not None:
        try:
            response = recording.response_of(step).model_dump(mode="json", exclude={"raw"})
        except Exception as exc:  # a raw body this version cannot parse: show it as is
            error = f"cannot parse the recorded response: {exc}"
    data = step.input if isinstance(step.input, dict) else {}
    output = step.output if isinstance(step.output, dict) else {}
    return LlmView(
        instructions=[str(text) for text in instructions],
        messages=shown,
        tools=tools,
        params=data.get("params"),
        provider=str(data.get("provider", "")),
        response=response,
        response_error=error,
        usage=step.usage,
        latency_ms=output.get("latency_ms"),
        endpoint=output.get("endpoint"),
    )


@dataclass
class ToolView:
    arguments: Any
    effect: Any
    result: Any
    error: Any
    simulated: bool
    not_applied: bool


def tool_view(step: StepInfo) -> ToolView:
    data = step.input if isinstance(step.input, dict) else {}
    error = step.error if isinstance(step.error, dict) else None
    output = step.output
    simulated = step.dry_run or (isinstance(output, dict) and bool(output.get("simulated")))
    return ToolView(
        arguments=data.get("arguments", data.get("raw_arguments")),
        effect=data.get("effect"),
        result=output,
        error=step.error,
        simulated=simulated,
        not_applied=error is not None and error.get("type") == "NotApplied",
    )


# -- the audit --------------------------------------------------------------------------


def audit_rows(calls: list[ToolCallRecord]) -> list[list[str]]:
    """The tool calls as the CSV has them: one cell per column of `TOOL_CALL_COLUMNS`."""
    rows = []
    for call in calls:
        record = tool_call_row(call)
        row = []
        for name in TOOL_CALL_COLUMNS:
            value = record[name]
            if name in ("arguments", "result", "error"):
                value = "" if value is None else show(json.dumps(value, ensure_ascii=False), 300)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, datetime):
                value = value.isoformat()
            row.append("" if value is None else show(str(value), 300))
        rows.append(row)
    return rows
