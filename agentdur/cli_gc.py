"""`agentdur gc`: delete old finished runs (retention).

    agentdur gc --older-than 30d [--status SUCCEEDED ...] [--dry-run] [--batch N]
                [--include-domain-keys] [--json] [--database-url URL]

Deletes runs that finished (SUCCEEDED, FAILED or CANCELLED; `--status` narrows) longer
ago than the duration, with their steps, messages and their own ledger entries, one short
transaction per batch (`Runtime.gc`), and the big values kept once (blobs) that no
remaining step references. Ledger entries under domain keys are kept unless
`--include-domain-keys`. Exit codes follow cli.py: 0 when gc ran (whatever it deleted),
2 for a usage error (a bad duration, a missing database).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TextIO

from agentdur.cli_args import duration, positive_int
from agentdur.cli_format import CommandError, format_time, table, to_json_text
from agentdur.retention import DEFAULT_BATCH, GcReport
from agentdur.runtime import Runtime
from agentdur.store import FINISHED, SqliteStore


def add_gc_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add `gc` to the `agentdur` command's subparsers (`parent`: the common options)."""
    cmd = subparsers.add_parser(
        "gc",
        help="delete old finished runs with their steps, messages and ledger entries",
        description="Delete runs that finished longer ago than --older-than, in batches.",
        parents=[parent],
    )
    cmd.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="runs that finished longer ago than this: 30d, 12h, 15m, 0s, 2w, 1d12h",
    )
    cmd.add_argument(
        "--status",
        type=str.upper,
        choices=FINISHED,
        nargs="+",
        action="extend",
        metavar="STATUS",
        help=f"only runs in these statuses (default all of {', '.join(FINISHED)})",
    )
    cmd.add_argument(
        "--dry-run", action="store_true", help="delete nothing; report what would be deleted"
    )
    cmd.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"runs deleted per transaction (default {DEFAULT_BATCH})",
    )
    cmd.add_argument(
        "--include-domain-keys",
        action="store_true",
        help="also delete the runs' ledger entries under domain keys (lets those effects "
        "happen again)",
    )
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.set_defaults(handler=cmd_gc)


def cmd_gc(args: argparse.Namespace, out: TextIO) -> int:
    """`agentdur gc --older-than DURATION ...`."""
    rt = Runtime(args.database_url)
    store = rt.store
    if isinstance(store, SqliteStore) and not Path(store.path).expanduser().exists():
        raise CommandError(
            f"no SQLite database at {store.path}: give --database-url or set AGENTDUR_DATABASE_URL"
        )
    try:
        report = rt.gc(
            older_than=args.older_than,
            statuses=args.status,
            dry_run=args.dry_run,
            batch=args.batch,
            domain_keys=args.include_domain_keys,
        )
    finally:
        rt.close()
    if args.json:
        print(to_json_text(dataclasses.asdict(report)), file=out)
    else:
        print(report_text(report), file=out)
    return 0


def report_text(report: GcReport) -> str:
    """The report as a human reads it."""
    verb = "would delete" if report.dry_run else "deleted"
    batches = "batch" if report.batches == 1 else "batches"
    lines = [
        f"{verb} {_plural(report.runs, 'run')} that finished before "
        f"{format_time(report.cutoff)} UTC ({', '.join(report.statuses)}) "
        f"in {report.batches} {batches}:",
        table(
            ["WHAT", "COUNT"],
            [
                ["runs", str(report.runs)],
                ["steps", str(report.steps)],
                ["messages", str(report.messages)],
                ["ledger entries (run_id:index keys)", str(report.ledger_entries)],
                ["ledger entries (domain keys)", _domain_count(report)],
                ["blobs (big values kept once)", _blob_count(report)],
            ],
            right={1},
        ),
    ]
    if report.domain_keys_kept and report.domain_key_entries:
        keep = "would keep" if report.dry_run else "kept"
        lines.append(
            f"{keep} {_plural(report.domain_key_entries, 'ledger entry', 'ledger entries')} "
            "under domain keys: deleting one would let that effect (a refund, say) happen "
            "again in a later run with the same key; --include-domain-keys deletes them"
        )
    if report.fork_sources_kept:
        keep = "would keep" if report.dry_run else "kept"
        lines.append(
            f"{keep} {_plural(report.fork_sources_kept, 'run')} that kept runs were forked "
            "from (the root of their run tree)"
        )
    if not report.dry_run and report.batches:
        lines.append(f"longest batch: {report.longest_batch_seconds * 1000:.1f} ms")
    return "\n".join(lines)


def _domain_count(report: GcReport) -> str:
    if not report.domain_keys_kept:
        return str(report.domain_key_entries)
    return f"0 ({report.domain_key_entries} kept)" if report.domain_key_entries else "0"


def _blob_count(report: GcReport) -> str:
    if not report.blobs:
        return "0"
    return f"{report.blobs} ({_size(report.blob_bytes)} stored)"


def _size(count: int) -> str:
    """Bytes as a person reads them: 812 B, 4.0 KiB, 1.2 MiB, 3.5 GiB."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"
