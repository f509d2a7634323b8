"""The `agentdur` command: look at recorded runs and migrate the schema.

This module only parses arguments and prints; every read goes through `Runtime`'s read
API (`get_run`, `list_runs`, `steps`), which opens the store and checks the schema but
starts no event loop. Commands go noun then verb (`agentdur runs list`, `runs show ID`,
`db migrate`). Output is an aligned table by default and JSON with `--json`.

Exit codes: 0 on success; 2 for a usage or lookup error (bad arguments, bad or
unreachable database URL, unknown run, schema mismatch), reported as one line on stderr
that starts with `agentdur: error: ` and names the fix; 1 for any other agentdur error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

from agentdur.engine import DEFAULT_DATABASE_URL
from agentdur.errors import AgentdurError, RunNotFoundError, StoreUnavailable, UsageError
from agentdur.runtime import Runtime
from agentdur.store import FINISHED, UNFINISHED, RunInfo, SqliteStore, StepInfo, mask_password

PROG = "agentdur"
DETAIL_WIDTH = 60
VALUE_WIDTH = 200


class CommandError(Exception):
    """A usage or lookup problem found by the CLI itself; exits 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one line instead of usage text and exit."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see `{self.prog} --help`)")


# -- formatting ------------------------------------------------------------------------


def _time(when: datetime | None) -> str:
    """A time in UTC as `YYYY-MM-DD HH:MM:SS`, or `-`."""
    if when is None:
        return "-"
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(seconds: float | None) -> str:
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


def _millis(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _run_duration(run: RunInfo) -> float | None:
    if run.finished_at is None:
        return None
    return (run.finished_at - (run.started_at or run.created_at)).total_seconds()


def _compact(value: Any, width: int) -> str:
    """`value` as one line of compact JSON, cut to `width` characters."""
    return _cut(json.dumps(value, default=str, ensure_ascii=False), width)


def _cut(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _error_text(error: Any) -> str:
    """A recorded error (`{"type", "message", ...}`) as `Type: message`."""
    if isinstance(error, dict):
        kind = error.get("type") or "Error"
        message = error.get("message")
        return f"{kind}: {message}" if message else str(kind)
    return _compact(error, VALUE_WIDTH)


def _tokens(usage: Any) -> str:
    """`12 in / 30 out tokens` from an llm step's usage dict."""
    if not isinstance(usage, dict) or not usage:
        return ""
    counts = [usage.get("input_tokens"), usage.get("output_tokens")]
    if counts == [None, None]:
        return _compact(usage, DETAIL_WIDTH)
    got, sent = ("?" if count is None else str(count) for count in counts)
    return f"{got} in / {sent} out tokens"


def _detail(step: StepInfo) -> str:
    """What to know about a step at a glance: model and tokens, tool arguments, error."""
    if step.kind == "llm":
        tokens = _tokens(step.usage)
        parts = [f"{step.model or '?'} ({tokens})" if tokens else step.model or ""]
    elif step.input is not None:
        parts = [_compact(step.input, DETAIL_WIDTH)]
    else:
        parts = []
    if step.error is not None:
        parts.append(_cut(_error_text(step.error), DETAIL_WIDTH))
    flags = [
        ("inherited", step.inherited_from is not None),
        ("edited", step.edited),
        ("dry-run", step.dry_run),
        ("deduplicated", step.deduplicated),
    ]
    parts += [f"[{name}]" for name, on in flags if on]
    return " | ".join(part for part in parts if part)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
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


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _print_json(data: Any, out: TextIO) -> None:
    print(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False), file=out)


def _steps_table(steps: Sequence[StepInfo]) -> str:
    rows = [
        [
            str(s.step_index),
            s.kind,
            s.name,
            s.status,
            str(s.attempts),
            _millis(s.duration),
            _detail(s),
        ]
        for s in steps
    ]
    headers = ["#", "KIND", "NAME", "STATUS", "ATTEMPTS", "MS", "DETAIL"]
    return _table(headers, rows, right={0, 4, 5})


# -- commands --------------------------------------------------------------------------


def _runtime(args: argparse.Namespace) -> Runtime:
    """A Runtime for reading; a SQLite file that does not exist is an error, not created."""
    rt = Runtime(args.database_url)
    store = rt.store
    if isinstance(store, SqliteStore) and not Path(store.path).expanduser().exists():
        raise CommandError(
            f"no SQLite database at {store.path}: check --database-url or "
            "AGENTDUR_DATABASE_URL, or create one with `agentdur db migrate`"
        )
    return rt


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
        print("no runs found", file=out)
        return 0
    rows = [
        [r.run_id, r.workflow, r.status, _time(r.created_at), _seconds(_run_duration(r))]
        for r in runs
    ]
    headers = ["RUN ID", "WORKFLOW", "STATUS", "CREATED (UTC)", "DURATION"]
    print(_table(headers, rows, right={4}), file=out)
    if more:
        print(f"(showing the newest {args.limit} runs; raise --limit to see more)", file=sys.stderr)
    return 0


def _runs_show(args: argparse.Namespace, out: TextIO) -> int:
    rt = _runtime(args)
    try:
        run = rt.get_run(args.run_id)
        steps = rt.steps(args.run_id)
    finally:
        rt.close()
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
        ("created", _time(run.created_at)),
        ("started", _time(run.started_at)),
        ("finished", _time(run.finished_at)),
        ("duration", _seconds(_run_duration(run))),
        ("input", _compact(run.input, VALUE_WIDTH)),
    ]
    if run.error is not None:
        header.append(("error", _cut(_error_text(run.error), VALUE_WIDTH)))
    elif run.status == "SUCCEEDED" or run.output is not None:
        header.append(("output", _compact(run.output, VALUE_WIDTH)))
    width = max(len(key) for key, _ in header)
    for key, value in header:
        print(f"{key.ljust(width)}  {value}", file=out)
    print(file=out)
    print(_steps_table(steps) if steps else "no steps recorded", file=out)
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
        print(_steps_table(steps) if steps else "no steps recorded", file=out)
    return 0


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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


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
    cmd.add_argument("--limit", type=_positive, default=100, metavar="N", help="default 100")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(handler=_runs_list)
    cmd = verbs.add_parser("show", help="one run and its steps", parents=[common])
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument("--json", action="store_true", help="print JSON (the run with its steps)")
    cmd.set_defaults(handler=_runs_show)
    cmd = verbs.add_parser("steps", help="the recorded steps of one run", parents=[common])
    cmd.add_argument("run_id", metavar="RUN_ID")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(handler=_runs_steps)

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
    try:
        args = build_parser().parse_args(argv)
        url = getattr(args, "database_url", None) or (
            os.environ.get("AGENTDUR_DATABASE_URL") or DEFAULT_DATABASE_URL
        )
        args.database_url = url
        handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
        return handler(args, sys.stdout)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except RunNotFoundError as exc:
        hint = f"{exc}; `agentdur runs list` shows the runs in {mask_password(url)}"
        print(f"{PROG}: error: {_one_line(hint, url)}", file=sys.stderr)
        return 2
    except (CommandError, UsageError, StoreUnavailable) as exc:
        print(f"{PROG}: error: {_one_line(str(exc), url)}", file=sys.stderr)
        return 2
    except AgentdurError as exc:
        print(f"{PROG}: error: {_one_line(str(exc), url)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def console_main() -> NoReturn:
    """Entry point of the `agentdur` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
