"""Helpers of the queue tests: worker processes, and limits read from recorded times.

`Workers` runs `agentdur worker --app tests.apps.queue_app:rt` (the real command) in
processes of their own, their output in files of the test's folder. Each step of the
app appends `run_id index pid event` to one log file, which is how a test sees who
executed what, and how often.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import agentdur
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.apps.queue_app:rt"
WORKER = [sys.executable, "-m", "agentdur.cli", "worker"]
"""The `agentdur worker` command."""


class Workers:
    """Worker processes of one test, their output in files; all killed at the end."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.log = folder / "steps.log"
        self.log.touch()
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        n = len(self.procs)
        environment = {
            **os.environ,
            "QUEUE_APP_DB": self.url,
            "QUEUE_APP_LOG": str(self.log),
            # A worker that does not stop is made to print every thread's stack (SIGABRT).
            "PYTHONFAULTHANDLER": "1",
            **env,
        }
        with (
            open(self.folder / f"worker{n}.out", "w") as out,
            open(self.folder / f"worker{n}.err", "w") as err,
        ):
            proc = subprocess.Popen(
                [*WORKER, "--app", APP, *args],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=err,
                text=True,
            )
        self.procs.append(proc)
        return proc

    def wait_ready(self, *procs: subprocess.Popen[str]) -> None:
        """Until each process printed that it serves (it claims work right after)."""
        for proc in procs:
            wait_for(lambda proc=proc: "serving" in self.output(proc)[0], what="worker start")

    def output(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        n = self.procs.index(proc)
        return (
            (self.folder / f"worker{n}.out").read_text(),
            (self.folder / f"worker{n}.err").read_text(),
        )

    def stop(self, proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: where each thread hangs
            proc.wait(timeout=10)
            out, err = self.output(proc)
            raise AssertionError(
                f"worker {proc.pid} did not stop within {timeout}s of SIGTERM.\n"
                f"stdout:\n{out}\nstderr (thread stacks at the end):\n{err[-20000:]}"
            ) from None

    def lines(self) -> list[tuple[str, int, int, str]]:
        """(run_id, step index, pid, event) per line of the step log."""
        rows = []
        for line in self.log.read_text().splitlines():
            run_id, index, pid, event = line.split()
            rows.append((run_id, int(index), int(pid), event))
        return rows

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def max_overlap(runs: list[agentdur.RunInfo]) -> int:
    """The most runs RUNNING at one instant, from their recorded start and finish times."""
    edges: list[tuple[datetime, int]] = []
    for run in runs:
        assert run.started_at is not None and run.finished_at is not None, run
        edges += [(run.started_at, 1), (run.finished_at, -1)]
    current = most = 0
    for _, delta in sorted(edges):  # at equal times a finish (-1) sorts before a start
        current += delta
        most = max(most, current)
    return most


def window_gaps(times: list[datetime | None], limit: int) -> list[float]:
    """Seconds from each start to the limit-th start after it.

    A rate limit of `limit` per W seconds holds when every gap is at least W: no window
    of W seconds then holds more than `limit` starts.
    """
    ordered = sorted(t for t in times if t is not None)
    assert len(ordered) == len(times), "a start time is missing"
    return [(b - a).total_seconds() for a, b in zip(ordered, ordered[limit:], strict=False)]
