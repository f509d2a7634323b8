"""Planning a fork: the new run and the steps it inherits. I/O-free.

`fork(run, at_step=k)` keeps steps 0..k-1 of the source (copied, marked with the run
that really executed them) and executes from step k live. With `response=`, step k is
an LLM step whose response is replaced (recorded as `edited`) and execution continues
after it. A model switch and dry-run mode are recorded in the new run's metadata under
"fork", so that recovering or replaying the fork makes the same choices:

    {"fork": {"models": [{"from": j, "provider": p, "model": m}, ...], "dry_run": bool}}

A switch to a `Model` instance also records its answer parameters (`"params"`) and
endpoint (`"endpoint"`: scheme, host, path, never credentials), from which
`model_switch.build_model` rebuilds an equivalent model. `models` is inherited from
the source and extended, because steps the fork inherits may have been made under an
earlier switch.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pydantic

from agentdur.errors import UsageError
from agentdur.models import ModelResponse, ToolCall
from agentdur.store import RunInfo, StepInfo


def fork_settings(metadata: Any) -> dict[str, Any]:
    """The fork settings recorded on a run ({} for an ordinary run)."""
    if isinstance(metadata, dict) and isinstance(metadata.get("fork"), dict):
        return dict(metadata["fork"])
    return {}


def plan_fork(
    source: RunInfo,
    steps: list[StepInfo],
    at_step: int,
    *,
    new_run_id: str,
    owner: str,
    now: datetime,
    lease_seconds: float,
    response: Any = None,
    model: dict[str, str] | None = None,
    dry_run: bool = False,
) -> tuple[RunInfo, list[StepInfo]]:
    """The new run and the steps to copy into it; raises UsageError on bad arguments.

    `at_step` is a step index, not a position in `steps`: indices may have gaps (a
    step called but never recorded), and the fork keeps exactly the steps whose index
    is below `at_step`.
    """
    by_index = {step.step_index: step for step in steps}
    last = max(by_index, default=-1)
    if not 0 <= at_step <= last:
        raise UsageError(
            f"at_step {at_step} is out of range: run {source.run_id!r} has "
            f"{len(by_index)} recorded steps ({_indices(sorted(by_index))})"
        )
    copied = [
        replace(step, run_id=new_run_id, inherited_from=step.inherited_from or source.run_id)
        for step in steps
        if step.step_index < at_step
    ]
    live_from = at_step
    if response is not None:
        target = by_index.get(at_step)
        if target is None or target.kind != "llm":
            what = "not recorded" if target is None else f"a {target.kind} step ({target.name!r})"
            raise UsageError(
                f"response= replaces an LLM response, but step {at_step} of run "
                f"{source.run_id!r} is {what}"
            )
        copied.append(edited_step(target, new_run_id, coerce_response(response, target), now))
        live_from = at_step + 1
    settings = fork_settings(source.metadata)
    models = list(settings.get("models", []))
    if model is not None:
        models.append({"from": live_from, **model})
    metadata = dict(source.metadata) if isinstance(source.metadata, dict) else {}
    metadata["fork"] = {"models": models, "dry_run": dry_run}
    run = RunInfo(
        run_id=new_run_id,
        workflow=source.workflow,
        status="RUNNING",
        input=source.input,
        parent_run_id=source.parent_run_id,
        forked_from=source.run_id,
        forked_at=at_step,
        owner=owner,
        lease_until=now + timedelta(seconds=lease_seconds),
        epoch=1,
        attempts=1,
        created_at=now,
        started_at=now,
        metadata=metadata,
    )
    return run, copied


def _indices(indices: list[int]) -> str:
    """Step indices for a message: "none", "0..5" or "0, 2, 3"."""
    if not indices:
        return "none"
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}..{indices[-1]}"
    return ", ".join(map(str, indices))


def coerce_response(value: Any, replaced: StepInfo) -> ModelResponse:
    """A ModelResponse from a ModelResponse, a dict or JSON text of the same shape.

    Missing fields are filled: usage zero, stop reason from the tool calls, model from
    the replaced step, no raw body; a tool call may leave out `id` and `raw_arguments`.
    """
    if isinstance(value, ModelResponse):
        data = value.model_dump(mode="json", exclude_unset=True)
    elif isinstance(value, (str, bytes)):
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"response= is not valid JSON: {exc}") from None
    elif isinstance(value, dict):
        data = dict(value)
    else:
        raise UsageError(
            f"response= must be a ModelResponse, a dict or JSON text, not {type(value).__name__}"
        )
    if not isinstance(data, dict):
        raise UsageError('response= must be a JSON object like {"text": "..."}')
    calls = []
    for position, call in enumerate(data.get("tool_calls") or []):
        if not isinstance(call, dict) or "name" not in call:
            raise UsageError(f"response= tool_calls[{position}] needs at least a 'name'")
        arguments = call.get("arguments") or {}
        calls.append(
            ToolCall(
                id=call.get("id") or f"edited_{replaced.step_index}_{position}",
                name=call["name"],
                arguments=arguments,
                raw_arguments=call.get("raw_arguments") or json.dumps(arguments),
            )
        )
    data["tool_calls"] = calls
    data.setdefault("stop_reason", "tool_calls" if calls else "end_turn")
    data.setdefault("model", replaced.model)
    data["raw"] = None
    try:
        return ModelResponse.model_validate(data)
    except pydantic.ValidationError as exc:
        raise UsageError(f"response= does not fit a model response: {exc}") from None


def edited_step(
    replaced: StepInfo, new_run_id: str, response: ModelResponse, now: datetime
) -> StepInfo:
    """The LLM step that takes the replaced one's place in the fork."""
    return replace(
        replaced,
        run_id=new_run_id,
        status="SUCCEEDED",
        output={"response": response.model_dump(mode="json", exclude={"raw"})},
        error=None,
        attempts=1,
        usage=response.usage.model_dump(),
        model=response.model or replaced.model,
        started_at=now,
        finished_at=now,
        inherited_from=None,
        edited=True,
    )
