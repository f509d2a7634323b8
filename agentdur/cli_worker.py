"""`agentdur worker`: serve queues until SIGTERM.

    agentdur worker --app myapp:rt [--queue docs ...] [--concurrency 8] [--lease-seconds 30]

`--app MODULE:ATTR` names the application's Runtime (or a callable returning one);
importing MODULE defines its workflows, agents and queues. The worker takes runs from the
queues (default: every queue the module defines) within their limits, heartbeats,
recovers the runs of workers whose lease expired, and on SIGTERM takes no more work, lets
what it holds finish for `--grace` seconds and releases the rest for the other workers,
then exits 0. Ctrl-C does the same and exits 130 with one line on stderr; a second
Ctrl-C stops at once (what it held is recovered once its lease expires).

Each process is its own executor by default (`<host>:<pid>:<random>`, see ownership.py),
so any number of workers can share one database. `--database-url` or `--lease-seconds`
gives the worker a new Runtime with the app Runtime's other options and executor id;
without them the app's own Runtime is used as is.

Also runnable on its own: `python -m agentdur.cli_worker --app myapp:rt ...`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, NoReturn, TextIO

from agentdur.cli_args import positive_int, seconds
from agentdur.cli_format import CommandError
from agentdur.cli_replay import load_runtime, runtime_like
from agentdur.cli_terminal import BROKEN_PIPE, console_exit, interrupted
from agentdur.errors import AgentdurError, NotRegisteredError, StoreUnavailable, UsageError
from agentdur.queues import registered_queues
from agentdur.runtime import Runtime
from agentdur.worker import Worker

PROG = "agentdur worker"


def _add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--app",
        required=True,
        metavar="MODULE:ATTR",
        help="the application's Runtime (or a callable returning one), e.g. myapp.main:rt; "
        "importing MODULE defines the workflows, agents and queues",
    )
    cmd.add_argument(
        "--queue",
        action="append",
        metavar="Q",
        help="a queue to serve (repeat for several; default: every queue MODULE defines)",
    )
    cmd.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="at most N runs at once in this worker (default: only the queues' limits)",
    )
    cmd.add_argument(
        "--poll-interval",
        type=seconds,
        metavar="S",
        help="seconds between polls when idle (default 0.05 on SQLite; 1 on PostgreSQL, "
        "where LISTEN/NOTIFY wakes the worker at once and polling is only the fallback)",
    )
    cmd.add_argument(
        "--lease-seconds",
        type=_lease,
        metavar="S",
        help="how long this worker's runs stay its own without a heartbeat: others take "
        "them over this long after it dies (default: the app Runtime's, 30)",
    )
    cmd.add_argument(
        "--grace",
        type=seconds,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds to let held runs finish before releasing them (default 30)",
    )


def add_worker_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add the `worker` command to the `agentdur` command's subparsers."""
    cmd = subparsers.add_parser(
        "worker",
        help="serve queues: execute enqueued runs, recover dead workers' runs",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        parents=[parent],
    )
    _add_arguments(cmd)
    cmd.set_defaults(handler=cmd_worker)


def _lease(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds (more than 0), got {text!r}")
    return value


def worker_runtime(
    app: str, database_url: str | None, *, lease_seconds: float | None = None
) -> Runtime:
    """The app's Runtime, or one like it on `database_url` or with `lease_seconds`."""
    target = load_runtime(app, None)
    if database_url is None and lease_seconds is None:
        return target
    return runtime_like(
        target, database_url, executor_id=target.executor_id, lease_seconds=lease_seconds
    )


def _setup_logging() -> None:
    """Worker events (recoveries, releases, fenced runs) on stderr, unless the app logs."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    agentdur_logger = logging.getLogger("agentdur")
    if agentdur_logger.level == logging.NOTSET:
        agentdur_logger.setLevel(logging.INFO)


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the queues until SIGTERM (then 0) or Ctrl-C (then 130, one stderr line)."""
    explicit_url = getattr(args, "explicit_database_url", None)
    rt = worker_runtime(args.app, explicit_url, lease_seconds=args.lease_seconds)
    if args.queue:
        try:
            worker = Worker(
                rt,
                list(args.queue),
                concurrency=args.concurrency,
                poll_interval=args.poll_interval or None,
                grace=args.grace,
            )
        except NotRegisteredError as exc:
            defined = ", ".join(sorted(q.name for q in registered_queues())) or "none"
            raise CommandError(f"{exc} (queues defined by {args.app}: {defined})") from None
    else:
        if not registered_queues():
            raise CommandError(
                f"{args.app} defines no queue: construct agentdur.Queue(name, ...) in its "
                "module, or name one with --queue"
            )
        worker = Worker(
            rt,
            None,
            concurrency=args.concurrency,
            poll_interval=args.poll_interval or None,
            grace=args.grace,
        )
    _setup_logging()
    ctrl_c = threading.Event()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_ctrl_c(*_: Any) -> None:
            ctrl_c.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # again: at once
            worker.stop()

        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    names = ", ".join(q.name for q in worker.queues)
    try:
        print(f"worker {rt.executor_id} serving {names} on {rt.database_url}", file=out, flush=True)
        worker.run()
    finally:
        rt.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if ctrl_c.is_set():
        return interrupted(f"interrupted: worker {rt.executor_id} stopped")
    print(f"worker {rt.executor_id} stopped", file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`agentdur worker` on its own: the same options, exit codes as `agentdur`."""
    parser = argparse.ArgumentParser(prog=PROG, description="Serve agentdur queues.")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="database URL (default: the app Runtime's own)",
    )
    _add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed
        return exc.code if isinstance(exc.code, int) else 2
    args.explicit_database_url = args.database_url
    try:
        return cmd_worker(args, sys.stdout)
    except (CommandError, UsageError, StoreUnavailable) as exc:
        print(f"agentdur: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except AgentdurError as exc:
        print(f"agentdur: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return BROKEN_PIPE
    except KeyboardInterrupt:
        return interrupted()


def console_main() -> NoReturn:
    """`python -m agentdur.cli_worker`."""
    console_exit(main)


if __name__ == "__main__":
    console_main()
