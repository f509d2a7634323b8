"""`agentdur resolve` and `agentdur approve`: an operator's decisions on a waiting run.

    agentdur resolve RUN_ID STEP (--retry | --result JSON | --fail MESSAGE) [--app M:A]
    agentdur approve RUN_ID STEP [--deny] [--note TEXT] [--app M:A]

`resolve` settles a side effect whose outcome was uncertain (the run is NEEDS_ATTENTION):
`--retry` executes the tool again (you checked the effect did not happen), `--result`
records that JSON value as the tool's result (it did happen), `--fail` records the
message as the tool's error, which the model receives. `approve` records a reviewer's
decision on a tool call waiting for approval; a denial goes back to the model as the
tool's result, with the note.

Without `--app` the decision is recorded and the run becomes runnable (PENDING): any
executor that recovers runs continues it (a worker, or `Runtime(..., recover=True)`).
With `--app MODULE:ATTR` (the application's Runtime, imported with the working directory
on `sys.path`, as for `replay` and `fork`) the run continues in this process, and the
command waits until it finishes or stops again (WAITING, NEEDS_ATTENTION).

Exit codes follow cli.py: 0 when the decision was recorded (and, with `--app`, the run
succeeded or waits again); 2 for a usage or lookup error (unknown run, a step that is
not waiting for this decision, bad JSON), as one stderr line `agentdur: error: ...`;
1 when the continued run failed or needs attention again, or for another agentdur error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from agentdur.cli_args import step_index
from agentdur.cli_format import VALUE_WIDTH, CommandError, cut, error_text, run_not_found
from agentdur.cli_replay import load_runtime
from agentdur.engine import DEFAULT_DATABASE_URL
from agentdur.errors import AgentdurError, RunNotFoundError, StoreUnavailable, UsageError
from agentdur.handle import RunHandle
from agentdur.runtime import Runtime
from agentdur.store import FINISHED, SqliteStore, mask_password

PROG = "agentdur"
STOPPED = (*FINISHED, "WAITING", "NEEDS_ATTENTION")
"""Where a continued run stops for this command: finished, or waiting for someone."""

Handler = Callable[[argparse.Namespace, TextIO], int]


def add_operation_parsers(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add `resolve` and `approve` to the `agentdur` command's subparsers.

    `parent` is the parser holding the common options (`--database-url`).
    """
    cmd = subparsers.add_parser(
        "resolve",
        help="settle a side effect of uncertain outcome (a run that NEEDS_ATTENTION)",
        description="Settle a tool step whose outcome is uncertain so the run can go on.",
        parents=[parent],
    )
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument("step", type=step_index, metavar="STEP", help="the step's index")
    action = cmd.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--retry",
        action="store_true",
        help="execute the tool again (you checked that the effect did not happen)",
    )
    action.add_argument(
        "--result",
        metavar="JSON",
        help="record this JSON value as the tool's result (it did happen), e.g. '{\"id\": 1}'",
    )
    action.add_argument(
        "--fail", metavar="MESSAGE", help="record the step as failed; the model gets MESSAGE"
    )
    _add_app(cmd)
    cmd.set_defaults(handler=cmd_resolve)

    cmd = subparsers.add_parser(
        "approve",
        help="approve (or deny) a tool call waiting for approval",
        description="Record a reviewer's decision on a tool call waiting for approval.",
        parents=[parent],
    )
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument("step", type=step_index, metavar="STEP", help="the waiting tool step's index")
    cmd.add_argument(
        "--deny", action="store_true", help="deny the call: the model is told, with the note"
    )
    cmd.add_argument("--note", metavar="TEXT", help="a note kept with the decision")
    _add_app(cmd)
    cmd.set_defaults(handler=cmd_approve)


def cmd_resolve(args: argparse.Namespace, out: TextIO) -> int:
    """`agentdur resolve RUN_ID STEP (--retry | --result JSON | --fail MESSAGE)`."""

    def decide(rt: Runtime) -> str:
        if args.retry:
            rt.resolve(args.run_id, args.step, "retry")
            return f"step {args.step} of run {args.run_id} will be executed again (retry)"
        if args.fail is not None:
            rt.resolve(args.run_id, args.step, "fail", args.fail)
            return f"step {args.step} of run {args.run_id} recorded as failed: {args.fail}"
        value = _json_value(args.result)
        rt.resolve(args.run_id, args.step, "result", value)
        return f"step {args.step} of run {args.run_id} recorded with the result {_compact(value)}"

    return _operate(args, out, decide)


def cmd_approve(args: argparse.Namespace, out: TextIO) -> int:
    """`agentdur approve RUN_ID STEP [--deny] [--note TEXT]`."""

    def decide(rt: Runtime) -> str:
        rt.approve(args.run_id, args.step, approved=not args.deny, note=args.note)
        verb = "denied" if args.deny else "approved"
        note = f" (note: {args.note})" if args.note else ""
        return f"step {args.step} of run {args.run_id} {verb}{note}"

    return _operate(args, out, decide)


# -- shared ------------------------------------------------------------------------------


def _operate(args: argparse.Namespace, out: TextIO, decide: Callable[[Runtime], str]) -> int:
    """Record the decision, then report, or continue the run here with --app."""
    url = _database_url(args)
    rt: Runtime | None = None
    try:
        app = getattr(args, "app", None)
        if app:
            explicit = getattr(args, "explicit_database_url", getattr(args, "database_url", None))
            rt = load_runtime(app, explicit)
            url = rt.database_url
            run = rt.get_run(args.run_id)
            if rt._find_workflow(run.workflow) is None:
                raise CommandError(
                    f"--app {app} does not define workflow {run.workflow!r} of run "
                    f"{args.run_id}: import the module that defines it, or leave out --app "
                    "to record the decision for any executor"
                )
        else:
            rt = _reader(url)
        print(decide(rt), file=out)
        if rt.get_run(args.run_id).status == "NEEDS_ATTENTION":  # other steps stopped it too
            unsettled = [str(s.step_index) for s in rt.steps(args.run_id) if s.status == "STARTED"]
            print(
                f"run {args.run_id} is still NEEDS_ATTENTION: resolve step "
                f"{', '.join(unsettled)} too; it continues once every step is resolved",
                file=out,
            )
            return 0
        if not app:
            status = rt.get_run(args.run_id).status
            print(
                f"run {args.run_id} is {status}: any executor that recovers runs continues it "
                "(a worker, or Runtime(..., recover=True)); or give --app to continue it here",
                file=out,
            )
            return 0
        return _follow(rt, args.run_id, out)
    except RunNotFoundError as exc:
        return _error(run_not_found(exc, mask_password(url)), url, 2)
    except (CommandError, UsageError, StoreUnavailable) as exc:
        return _error(str(exc), url, 2)
    except AgentdurError as exc:
        return _error(str(exc), url, 1)
    finally:
        if rt is not None:
            rt.close()


def _follow(rt: Runtime, run_id: str, out: TextIO) -> int:
    """Wait for a run continuing in this process to finish or stop; report it."""
    delay = 0.02
    while True:
        run = rt.get_run(run_id)
        if run.status in STOPPED and run_id not in rt._active:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    if run.status == "SUCCEEDED":
        print(f"run {run_id} SUCCEEDED: output {_compact(run.output)}", file=out)
        return 0
    if run.status == "WAITING":
        print(f"run {run_id} is WAITING again (for an approval, a message or a timer)", file=out)
        return 0
    if run.status == "NEEDS_ATTENTION":
        reason = run.error or {}
        print(
            f"run {run_id} NEEDS_ATTENTION at step {reason.get('step_index', '?')}: "
            f"{cut(str(reason.get('message', '')), 300)}",
            file=out,
        )
        return 1
    print(f"run {run_id} {run.status}: {error_text(run.error)}", file=out)
    return 1


def _add_app(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="continue the run in this process with the application's Runtime (or a callable "
        "returning one), e.g. myapp.main:rt, and wait until it finishes or stops again",
    )


def _compact(value: Any) -> str:
    """One line of JSON with sorted keys (JSONB does not keep the order), cut to fit."""
    return cut(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False), VALUE_WIDTH)


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"--result must be JSON ({exc.msg} at column {exc.colno}); a text result is "
            "quoted: --result '\"refunded\"'"
        ) from None


def _database_url(args: argparse.Namespace) -> str:
    return (
        getattr(args, "database_url", None)
        or os.environ.get("AGENTDUR_DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


class _RecordOnly(Runtime):
    """A Runtime that records decisions and never continues a run itself, whatever
    workflows happen to be registered in this process: any executor takes it from there."""

    def _resume(self, run_id: str) -> RunHandle | None:
        return None


def _reader(url: str) -> Runtime:
    """A Runtime for recording a decision; a SQLite file that does not exist is an error."""
    rt = _RecordOnly(url)
    store = rt.store
    if isinstance(store, SqliteStore) and not Path(store.path).expanduser().exists():
        raise CommandError(
            f"no SQLite database at {store.path}: check --database-url or AGENTDUR_DATABASE_URL"
        )
    return rt


def _error(message: str, url: str, code: int) -> int:
    """Print one `agentdur: error:` line (the URL's password masked); return `code`."""
    password = None
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
    if password:
        message = message.replace(url, mask_password(url)).replace(f":{password}@", ":***@")
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code
