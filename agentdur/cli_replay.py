"""`agentdur replay` and `agentdur fork`: commands that execute a run's code.

Both need the application's workflows and agents, so they import the module named by
`--app MODULE:ATTR` (with the working directory on `sys.path`, as `python -m` does) and
take ATTR as the Runtime, or call it to get one. That Runtime's database is used unless
`--database-url` is given. The printing is in cli_format.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agentdur import codec
from agentdur.cli_format import CommandError, compact, cut, error_text, timeline, timeline_line
from agentdur.errors import NonDeterminismError, StepFailed, UsageError
from agentdur.models import ModelResponse, Usage
from agentdur.runtime import Runtime
from agentdur.store import FINISHED, RunInfo, StepInfo


def load_runtime(app: str, database_url: str | None) -> Runtime:
    """The Runtime named by `MODULE:ATTR` (a Runtime or a callable returning one)."""
    module_name, sep, attr = app.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(f"--app {app!r} must be MODULE:ATTR, for example myapp.main:rt")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import {module_name!r} for --app: {type(exc).__name__}: {exc} "
            "(run agentdur from the folder that holds it, or set PYTHONPATH)"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise CommandError(f"module {module_name!r} has no attribute {attr!r} (--app)")
        target = getattr(target, part)
    if not isinstance(target, Runtime) and callable(target):
        target = target()
    if not isinstance(target, Runtime):
        raise CommandError(
            f"--app {app} is a {type(target).__name__}, not an agentdur.Runtime "
            "(or a callable returning one)"
        )
    if database_url is None:
        return target
    return runtime_like(target, database_url)


def runtime_like(
    target: Runtime,
    database_url: str | None,
    *,
    executor_id: str | None = None,
    lease_seconds: float | None = None,
) -> Runtime:
    """A new Runtime with the app Runtime's options and agents, on another database
    (None: the app's own) or with another lease; its own executor id unless given."""
    runtime = Runtime(
        database_url or target._url,
        executor_id=executor_id,
        lease_seconds=target.lease_seconds if lease_seconds is None else lease_seconds,
        write_retry_seconds=target.store.write_retry_seconds,
        poll_interval=target.poll_interval,
        clock=target.clock,
    )
    runtime.registry.include(target.registry)  # agents the app registered on its Runtime
    return runtime


def _printer(out: TextIO) -> Callable[[StepInfo], None]:
    def on_step(step: StepInfo) -> None:
        print(timeline_line(step), file=out, flush=True)

    return on_step


def replay_one(
    rt: Runtime, run: RunInfo, until: int | None, on_step: Callable[[StepInfo], None] | None
) -> tuple[bool, str]:
    """Replay one run: (matched, summary)."""
    count = 0

    def counted(step: StepInfo) -> None:
        nonlocal count
        count += 1
        if on_step is not None:
            on_step(step)

    try:
        rt.replay(run.run_id, until=until, on_step=counted)
    except NonDeterminismError as exc:
        return False, f"diverged after {count} steps: {exc}"
    except UsageError:
        raise
    except Exception as exc:
        if run.status == "FAILED" and _same_error(exc, run.error):
            return True, f"replayed {count} steps: failed as recorded ({error_text(run.error)})"
        return False, (
            f"diverged after {count} steps: the replay raised {type(exc).__name__}: "
            f"{cut(str(exc), 200)} (recorded: {run.status}"
            + (f", {error_text(run.error)})" if run.error else ")")
        )
    if until is not None:
        return True, f"replayed {count} steps: stopped after step {until} as asked"
    if run.status == "FAILED":
        return False, f"replayed {count} steps, but the run failed when recorded and not now"
    if run.status not in FINISHED or run.status == "CANCELLED":
        return True, f"replayed {count} steps: the recording matches so far (run is {run.status})"
    return True, f"replayed {count} steps: output matches the recording"


def _same_error(exc: BaseException, recorded: Any) -> bool:
    if not isinstance(recorded, dict):
        return False
    if isinstance(exc, StepFailed):
        found = (exc.type_name, exc.message)
    else:
        encoded = codec.encode_error(exc)
        found = (encoded["type"], encoded["message"])
    return found == (recorded.get("type"), recorded.get("message"))


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    if (args.run_id is None) == (args.workflow is None and args.agent is None):
        raise CommandError("give a RUN_ID, or --workflow NAME (or --agent NAME) with --last N")
    if args.workflow is not None and args.agent is not None:
        raise CommandError("give --workflow or --agent, not both")
    rt = load_runtime(args.app, args.explicit_database_url)
    args.database_url = rt.database_url  # named by a lookup error
    try:
        if args.run_id is not None:
            run = rt.get_run(args.run_id)
            print(f"replaying run {run.run_id} ({run.workflow}, {run.status})", file=out)
            matched, summary = replay_one(rt, run, args.until, _printer(out))
            print(summary, file=out)
            return 0 if matched else 1
        workflow = args.workflow or f"agent:{args.agent}"
        runs = rt.list_runs(workflow=workflow, limit=args.last)
        if not runs:
            raise CommandError(
                f"no recorded runs of workflow {workflow!r} (agent runs are 'agent:<name>'; "
                "`agentdur runs list` shows them)"
            )
        diverged = 0
        for run in runs:
            matched, summary = replay_one(rt, run, None, None)
            diverged += not matched
            verdict = "ok" if matched else "DIVERGED"
            print(f"{run.run_id}  {run.status}  {verdict}  {summary}", file=out)
        print(f"{len(runs) - diverged} of {len(runs)} runs match their recording", file=out)
        return 1 if diverged else 0
    finally:
        rt.close()


def fork_point(steps: list[StepInfo], args: argparse.Namespace) -> int:
    """at_step from `--at K` or `--after-llm N` (1-based; with a response: that step)."""
    if args.at is not None:
        at: int = args.at
        return at
    llm = [step.step_index for step in steps if step.kind == "llm"]
    nth: int = args.after_llm
    if nth > len(llm):
        raise CommandError(
            f"--after-llm {args.after_llm}: run {args.run_id!r} has {len(llm)} LLM "
            f"responses (steps {', '.join(map(str, llm)) or 'none'})"
        )
    index = llm[nth - 1]
    return index if args.response_file is not None else index + 1


RESPONSE_KEYS = tuple(name for name in ModelResponse.model_fields if name != "raw")
"""What an edited response may hold (`ModelResponse` without its provider body `raw`)."""
TOOL_CALL_KEYS = ("name", "arguments", "id", "raw_arguments")
"""A tool call's: `name` is required, the fork fills in the rest."""


def read_response_file(path: str) -> dict[str, Any]:
    """The edited response in `--response-file`: a JSON object with known keys only."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read --response-file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"--response-file {path} is not JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise CommandError(f'--response-file {path} must hold a JSON object like {{"text": "..."}}')
    _known_keys(path, "", data, RESPONSE_KEYS)
    calls = data.get("tool_calls") or []
    if not isinstance(calls, list):
        raise CommandError(f"--response-file {path}: tool_calls must be a list")
    for position, call in enumerate(calls):
        if not isinstance(call, dict) or "name" not in call:
            raise CommandError(
                f"--response-file {path}: tool_calls[{position}] must be an object with a "
                '"name" and "arguments"'
            )
        _known_keys(path, f"tool_calls[{position}] ", call, TOOL_CALL_KEYS)
    if isinstance(data.get("usage"), dict):
        _known_keys(path, "usage ", data["usage"], tuple(Usage.model_fields))
    return data


def _known_keys(path: str, where: str, data: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = [key for key in data if key not in known]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise CommandError(
            f"--response-file {path}: unknown {where}key {names} (known: {', '.join(known)})"
        )


def cmd_fork(args: argparse.Namespace, out: TextIO) -> int:
    response = None
    if args.response_file:
        response = read_response_file(args.response_file)
    rt = load_runtime(args.app, args.explicit_database_url)
    args.database_url = rt.database_url  # named by a lookup error
    try:
        at_step = fork_point(rt.steps(args.run_id), args)
        handle = rt.fork(
            args.run_id,
            at_step,
            new_run_id=args.new_run_id,
            response=response,
            model=args.model,
            dry_run=args.dry_run,
        )
        how = [f"model {args.model}"] if args.model else []
        how += ["edited response"] if response is not None else []
        how += ["dry run"] if args.dry_run else []
        print(
            f"forked run {args.run_id} at step {at_step} into {handle.run_id}"
            + (f" ({', '.join(how)})" if how else ""),
            file=out,
        )
        with contextlib.suppress(Exception):  # the outcome is read from the store below
            handle.result()
        run = rt.get_run(handle.run_id)
        print(timeline(rt.steps(handle.run_id)), file=out)
        print(f"run {run.run_id}: {run.status}", file=out)
        if run.error is not None:
            print(f"error: {error_text(run.error)}", file=out)
        elif run.workflow.startswith("agent:") and isinstance(run.output, dict):
            answer = run.output.get("output")
            text = answer if isinstance(answer, str) else compact(answer, 400)
            print(f"answer: {text}", file=out)
        else:
            print(f"output: {compact(run.output, 400)}", file=out)
        return 0 if run.status == "SUCCEEDED" else 1
    finally:
        rt.close()
