"""The `agentdur` command: look at recorded runs, replay and fork them, audit tool calls.

This module parses arguments and prints; reads go through `Runtime`'s read API
(`get_run`, `list_runs`, `steps`) and `agentdur.audit.Audit`, which open the store and
check the schema but start no event loop. `replay` and `fork` execute the application's
code and live in cli_replay.py; the formatting is in cli_format.py. Commands go noun then
verb (`agentdur runs list`, `runs show ID`, `audit tools`, `db migrate`); actions on one
run are verbs (`replay ID`, `fork ID`, and `resolve ID STEP` / `approve ID STEP`, which
record an operator's decision: cli_operations.py); `worker` serves queues
(cli_worker.py); `gc` deletes old finished runs (cli_gc.py). Output is an aligned table
by default and JSON with `--json`.

Exit codes: 0 on success; 2 for a usage or lookup error (bad arguments, bad or
unreachable database URL, unknown run, schema mismatch), reported as one line on stderr
that starts with `agentdur: error: ` and names the fix; 1 when an operation ran and
failed (a replay diverged, a fork's run failed) or for any other agentdur error; 130
after Ctrl-C (one line on stderr, no traceback); 141 when stdout closed early (`| head`),
silently.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

from agentdur import recording
from agentdur.audit import Audit
from agentdur.cli_args import positive_int, step_index
from agentdur.cli_format import (
    VALUE_WIDTH,
    CommandError,
    compact,
    cut,
    error_text,
    format_seconds,
    format_time,
    message_blocks,
    run_duration,
    run_not_found,
    steps_table,
    table,
    to_json_text,
    tool_calls_csv,
    tool_calls_table,
    tree_lines,
    usage_table,
)
from agentdur.cli_gc import add_gc_parser
from agentdur.cli_operations import add_operation_parsers
from agentdur.cli_replay import cmd_fork, cmd_replay
from agentdur.cli_terminal import BROKEN_PIPE, console_exit, interrupted
from agentdur.cli_ui import add_ui_parser
from agentdur.cli_worker import add_worker_parser
from agentdur.engine import DEFAULT_DATABASE_URL
from agentdur.errors import AgentdurError, RunNotFoundError, StoreUnavailable, UsageError
from agentdur.models import messages_adapter
from agentdur.runtime import Runtime
from agentdur.store import FINISHED, UNFINISHED, SqliteStore, mask_password

PROG = "agentdur"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one line instead of usage text and exit."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see `{self.prog} --help`)")


def _print_json(data: Any, out: TextIO) -> None:
    print(to_json_text(data), file=out)


# -- runs ------------------------------------------------------------------------------


def _runtime(args: argparse.Namespace) -> Runtime:
    """A Runtime for reading; a SQLite file that does not exist is an error, not created."""
    rt = Runtime(args.database_url)
    store = rt.store
    if isinstance(store, SqliteStore) and not Path(store.path).expanduser().exists():
        raise CommandError(
            f"no SQLite database at {store.path}{_default_note(args)}: give --database-url "
            "or set AGENTDUR_DATABASE_URL, or create one with `agentdur db migrate`"
            + _elsewhere(store.path)
        )
    return rt


def _default_note(args: argparse.Namespace) -> str:
    return " (the default database)" if args.implicit_database_url else ""


def _elsewhere(path: str) -> str:
    """`; SQLite databases here: ...` naming up to three files below the working directory."""
    found = [str(p) for p in sqlite_files_nearby() if p.resolve() != Path(path).resolve()]
    if not found:
        return ""
    return f"; SQLite databases here: {', '.join(found)} (--database-url sqlite:///{found[0]})"


def sqlite_files_nearby(limit: int = 3) -> list[Path]:
    """SQLite database files in the working directory and its direct subfolders."""
    found: list[Path] = []
    for pattern in ("*", "*/*"):
        for path in sorted(Path().glob(pattern)):
            if len(found) == limit:
                return found
            if path.suffix not in (".db", ".sqlite", ".sqlite3") or not path.is_file():
                continue
            if any(part.startswith(".") for part in path.parts):
                continue
            with contextlib.suppress(OSError), path.open("rb") as f:
                if f.read(16) == b"SQLite format 3\x00":
                    found.append(path)
    return found


def _runs_list(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        runs = rt.list_runs(status=args.status, workflow=args.workflow, limit=args.limit + 1)
    finally:
        rt.close()
    more, runs = len(runs) > args.limit, runs[: args.limit]
    if args.json:
        _print_json([dataclasses.asdict(run) for run in runs], out)
        return 0
    if not runs:
        print(f"no runs found in {rt.database_url}", file=out)
    else:
        rows = [
            [
                r.run_id,
                r.workflow,
                r.status,
                format_time(r.created_at),
                format_seconds(run_duration(r)),
            ]
            for r in runs
        ]
        headers = ["RUN ID", "WORKFLOW", "STATUS", "CREATED (UTC)", "DURATION"]
        print(table(headers, rows, right={4}), file=out)
    if more:
        print(f"(showing the newest {args.limit} runs; raise --limit to see more)", file=sys.stderr)
    if args.implicit_database_url:
        path = rt.store.path if isinstance(rt.store, SqliteStore) else ""
        print(
            f"(runs in {rt.database_url}, the default database: give --database-url or set "
            f"AGENTDUR_DATABASE_URL to read another{_elsewhere(path)})",
            file=sys.stderr,
        )
    return 0


def _runs_show(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        run = rt.get_run(args.run_id)
        steps = rt.steps(args.run_id)
    finally:
        rt.close()
    if args.messages:
        messages = recording.conversation(steps)
        if args.json:
            _print_json(messages_adapter.dump_python(messages, mode="json"), out)
        elif not messages:
            print(f"run {run.run_id} has no LLM steps: there is no conversation", file=out)
        else:
            print(message_blocks(messages), file=out)
        return 0
    if args.json:
        record = dataclasses.asdict(run)
        record["steps"] = [dataclasses.asdict(step) for step in steps]
        _print_json(record, out)
        return 0
    header: list[tuple[str, str]] = [
        ("run", run.run_id),
        ("workflow", run.workflow),
        ("status", run.status),
        ("owner", run.owner or "-"),
        ("epoch", str(run.epoch)),
        ("attempts", str(run.attempts)),
    ]
    if run.parent_run_id:
        header.append(("parent", run.parent_run_id))
    if run.forked_from:
        header.append(("forked from", f"{run.forked_from} at step {run.forked_at}"))
    header += [
        ("created", format_time(run.created_at)),
        ("started", format_time(run.started_at)),
        ("finished", format_time(run.finished_at)),
        ("duration", format_seconds(run_duration(run))),
        ("input", compact(run.input, VALUE_WIDTH)),
    ]
    if run.error is not None:
        header.append(("error", cut(error_text(run.error), VALUE_WIDTH)))
    elif run.status == "SUCCEEDED" or run.output is not None:
        header.append(("output", compact(run.output, VALUE_WIDTH)))
    width = max(len(key) for key, _ in header)
    for key, value in header:
        print(f"{key.ljust(width)}  {value}", file=out)
    print(file=out)
    print(steps_table(steps) if steps else "no steps recorded", file=out)
    return 0


def _runs_steps(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        steps = rt.steps(args.run_id)
    finally:
        rt.close()
    if args.json:
        _print_json([dataclasses.asdict(step) for step in steps], out)
    else:
        print(steps_table(steps) if steps else "no steps recorded", file=out)
    return 0


def _runs_tree(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        rt.get_run(args.run_id)
        runs = Audit(rt).run_tree(args.run_id)
    finally:
        rt.close()
    if args.json:
        _print_json([dataclasses.asdict(run) for run in runs], out)
    else:
        print("\n".join(tree_lines(runs, args.run_id)), file=out)
    return 0


# -- audit -----------------------------------------------------------------------------


def _audit_tools(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        calls = Audit(rt).tool_calls(
            args.tool,
            run_id=args.run,
            agent=args.agent,
            since=args.since,
            status=args.status,
            effect=args.effect,
        )
    finally:
        rt.close()
    if args.json:
        _print_json([dataclasses.asdict(call) for call in calls], out)
    elif args.csv:
        out.write(tool_calls_csv(calls))
    elif not calls:
        print("no tool calls found", file=out)
    else:
        print(tool_calls_table(calls), file=out)
    return 0


def _audit_usage(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        records = Audit(rt).usage(
            run_id=args.run, agent=args.agent, since=args.since, group_by=args.by
        )
    finally:
        rt.close()
    if args.json:
        _print_json([dataclasses.asdict(record) for record in records], out)
    elif not records:
        print("no LLM calls found", file=out)
    else:
        print(usage_table(records, args.by), file=out)
    return 0


# -- db --------------------------------------------------------------------------------


def _db_migrate(args: argparse.Namespace, out: TextIO) -> int:
    store = Runtime(args.database_url, auto_migrate=False).store
    store.open()
    try:
        names = {version: name for version, name, _ in store.migrations()}
        if store.schema_version() > max(names):
            store.ensure_schema(migrate=False)  # raises the "upgrade agentdur" error
        applied = store.migrate()
        version = store.schema_version()
    finally:
        store.close()
    for number in applied:
        print(f"applied migration {names[number]} (version {number})", file=out)
    if applied:
        print(f"schema is now at version {version} ({store.url})", file=out)
    else:
        print(f"schema is up to date (version {version})", file=out)
    return 0


# -- parsing ---------------------------------------------------------------------------


def _add_app(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--app",
        required=True,
        metavar="MODULE:ATTR",
        help="the application's Runtime (or a callable returning one), e.g. myapp.main:rt; "
        "its database is used unless --database-url is given",
    )


def _add_runs(nouns: Any, common: argparse.ArgumentParser) -> None:
    runs = nouns.add_parser("runs", help="look at recorded runs", parents=[common])
    verbs = runs.add_subparsers(title="commands", metavar="COMMAND", required=True)
    cmd = verbs.add_parser("list", help="runs, newest first", parents=[common])
    statuses = (*UNFINISHED, *FINISHED)
    cmd.add_argument(
        "--status",
        type=str.upper,
        choices=statuses,
        metavar="STATUS",
        help=f"only runs in this status: {', '.join(statuses)}",
    )
    cmd.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    cmd.add_argument("--limit", type=positive_int, default=100, metavar="N", help="default 100")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(handler=_runs_list)
    cmd = verbs.add_parser("show", help="one run and its steps", parents=[common])
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument(
        "--messages", action="store_true", help="the conversation exactly as the model saw it"
    )
    cmd.add_argument("--json", action="store_true", help="print JSON (the run with its steps)")
    cmd.set_defaults(handler=_runs_show)
    cmd = verbs.add_parser("steps", help="the recorded steps of one run", parents=[common])
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(handler=_runs_steps)
    cmd = verbs.add_parser("tree", help="a run and all its forks", parents=[common])
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument("--json", action="store_true", help="print JSON (the runs, oldest first)")
    cmd.set_defaults(handler=_runs_tree)


def _add_replay_fork(nouns: Any, common: argparse.ArgumentParser) -> None:
    cmd = nouns.add_parser(
        "replay",
        help="re-execute recorded runs against their recording (no network, no tools)",
        parents=[common],
    )
    cmd.add_argument("run_id", metavar="RUN_ID", nargs="?")
    cmd.add_argument("--until", type=step_index, metavar="K", help="stop after step K")
    cmd.add_argument("--workflow", metavar="NAME", help="replay the last runs of a workflow")
    cmd.add_argument("--agent", metavar="NAME", help="same as --workflow agent:NAME")
    cmd.add_argument("--last", type=positive_int, default=10, metavar="N", help="default 10")
    _add_app(cmd)
    cmd.set_defaults(handler=cmd_replay)

    cmd = nouns.add_parser(
        "fork", help="start a new run from a recorded one and wait for it", parents=[common]
    )
    cmd.add_argument("run_id", metavar="RUN_ID")
    where = cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", type=step_index, metavar="K", help="keep steps 0..K-1, run from K")
    where.add_argument(
        "--after-llm",
        type=positive_int,
        metavar="N",
        help="keep the N-th LLM response (1-based) and re-execute everything after it; "
        "with --response-file, replace that response",
    )
    cmd.add_argument(
        "--response-file", metavar="F.json", help='an edited LLM response, e.g. {"text": ...}'
    )
    cmd.add_argument("--model", metavar="PROVIDER:NAME", help="switch the model for the rest")
    cmd.add_argument(
        "--dry-run", action="store_true", help="execute no side_effect tool; simulate them"
    )
    cmd.add_argument("--new-run-id", metavar="ID", help="the fork's run id (default: generated)")
    _add_app(cmd)
    cmd.set_defaults(handler=cmd_fork)


def _add_audit(nouns: Any, common: argparse.ArgumentParser) -> None:
    audit = nouns.add_parser("audit", help="tool calls and token usage", parents=[common])
    verbs = audit.add_subparsers(title="commands", metavar="COMMAND", required=True)
    filters = _Parser(add_help=False)
    filters.add_argument("--run", metavar="RUN_ID", help="only this run")
    filters.add_argument("--agent", metavar="NAME", help="only runs of this agent")
    filters.add_argument(
        "--since", metavar="WHEN", help="only calls since 30m, 2h, 7d or an ISO date"
    )
    cmd = verbs.add_parser("tools", help="every tool call, oldest first", parents=[common, filters])
    cmd.add_argument("--tool", metavar="NAME", help="only this tool")
    cmd.add_argument("--status", choices=("ok", "error"), help="only calls that succeeded/failed")
    cmd.add_argument(
        "--effect", choices=("read_only", "idempotent", "side_effect"), help="only this effect"
    )
    output = cmd.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", action="store_true", help="print CSV")
    cmd.set_defaults(handler=_audit_tools)
    cmd = verbs.add_parser(
        "usage", help="tokens spent per run, agent or model", parents=[common, filters]
    )
    cmd.add_argument("--by", choices=("run", "agent", "model"), default="run", help="default run")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(handler=_audit_usage)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `agentdur` command."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        # SUPPRESS keeps a subcommand's absent option from overwriting one given earlier.
        default=argparse.SUPPRESS,
        help="database URL (default: $AGENTDUR_DATABASE_URL, else sqlite:///agentdur.db)",
    )
    parser = _Parser(prog=PROG, description="Inspect durable runs.", parents=[common])
    nouns = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_runs(nouns, common)
    _add_replay_fork(nouns, common)
    _add_audit(nouns, common)
    add_operation_parsers(nouns, common)
    add_worker_parser(nouns, common)
    add_ui_parser(nouns, common)
    add_gc_parser(nouns, common)
    db = nouns.add_parser("db", help="manage the database schema", parents=[common])
    verbs = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    cmd = verbs.add_parser("migrate", help="apply pending schema migrations", parents=[common])
    cmd.set_defaults(handler=_db_migrate)
    return parser


def _one_line(message: str, url: str) -> str:
    """The message on one line, with the URL's password masked should it appear."""
    password = None
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
    if password:
        message = message.replace(url, mask_password(url)).replace(f":{password}@", ":***@")
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: `sys.argv[1:]`) and return its exit code."""
    url = DEFAULT_DATABASE_URL
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        args.explicit_database_url = getattr(args, "database_url", None)
        from_env = os.environ.get("AGENTDUR_DATABASE_URL")
        args.implicit_database_url = not (args.explicit_database_url or from_env)
        url = args.explicit_database_url or from_env or DEFAULT_DATABASE_URL
        args.database_url = url
        handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
        return handler(args, sys.stdout)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except RunNotFoundError as exc:
        # the handler leaves in args.database_url the database it read (an app's, say)
        where = mask_password(getattr(args, "database_url", url))
        print(f"{PROG}: error: {_one_line(run_not_found(exc, where), url)}", file=sys.stderr)
        return 2
    except (CommandError, UsageError, StoreUnavailable) as exc:
        print(f"{PROG}: error: {_one_line(str(exc), url)}", file=sys.stderr)
        return 2
    except AgentdurError as exc:
        print(f"{PROG}: error: {_one_line(str(exc), url)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `agentdur ... | head`: the reader has what it wanted
        return BROKEN_PIPE
    except KeyboardInterrupt:
        return interrupted()


def console_main() -> NoReturn:
    """Entry point of the `agentdur` console script."""
    console_exit(main)


if __name__ == "__main__":
    console_main()
