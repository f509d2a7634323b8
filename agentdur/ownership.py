"""Who owns which run: executor identity, heartbeats, and the scheduler that takes runs.

Each process is its own executor by default: its id names the host and the pid plus a
random part, and its row in `executors` records the host, the pid and the process's
start time. So two processes started with the same defaults never execute one run at
once, and a process restarted on the same host can tell that an owner there is dead
(no such pid, or a pid reused by a process started later) and take that owner's runs
at once; an owner on another host loses its runs when their leases expire.

Two threads per executor, so that neither waits on the event loop nor the loop on them:

- `Heartbeat`, on a database connection of its own: extends the leases of exactly the
  `(run_id, epoch)` pairs this process executes now, and reports those it no longer
  holds (taken over, cancelled, released).
- `Scheduler`: wakes runs whose wake-up time came (a durable sleep, a `recv` timeout) and
  resumes this executor's own runs that a database fault released; with `recover=True`
  it also keeps taking over unowned runs, runs with an expired lease and runs of dead
  owners on this host. One query a tick; queue runs go back to their queue instead, so
  a queue's concurrency also holds for runs resumed from WAITING.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentdur.store import SqlStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessIdentity:
    """This process as an executor row describes it."""

    host: str
    pid: int
    started: str | None
    """The kernel's start time of the pid (Linux: clock ticks since boot), else None."""


def process_started(pid: int) -> str | None:
    """When process `pid` started, as `<pid namespace>:<start time>`; None if unknown.

    The start time (field 22 of /proc/<pid>/stat) tells a live process from a dead one
    whose pid was reused. The pid namespace says which processes may be compared at
    all: containers that share a host name but not a pid namespace cannot see each
    other's processes, so none of them may judge another dead.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    fields = _stat(pid)
    return f"{namespace}:{fields[19]}" if fields is not None and len(fields) > 19 else None


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def this_process() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), pid, process_started(pid))


def default_executor_id(identity: ProcessIdentity) -> str:
    """A fresh id for this process: readable (host, pid) and unique (random part)."""
    return f"{identity.host}:{identity.pid}:{uuid.uuid4().hex[:8]}"


def is_dead(pid: int, started: str | None, me: ProcessIdentity) -> bool:
    """Whether another executor's process, recorded as (pid, start) on this host, is gone.

    Only a process of our own pid namespace can be judged (see `process_started`). An
    executor recorded with our own pid is another Runtime of this process if its start
    time is ours, else an earlier process that had our pid (a restarted container's
    pid 1, say).
    """
    if started is None or me.started is None:
        return False  # no start time to go by (not Linux): wait for the lease
    if started.rpartition(":")[0] != me.started.rpartition(":")[0]:
        return False  # another pid namespace: its processes are not ours to see
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        return True  # exited, not yet reaped by its parent: it runs nothing any more
    return process_started(pid) != started


def dead_executors(store: SqlStore, identity: ProcessIdentity, me: str) -> list[str]:
    """Ids of other executors recorded on this host whose process is dead."""
    return [
        executor_id
        for executor_id, pid, started in store.executors_on_host(identity.host)
        if executor_id != me and is_dead(pid, started, identity)
    ]


class Heartbeat:
    """A thread that extends the leases of the runs this process executes."""

    def __init__(
        self,
        store: SqlStore,
        *,
        executor_id: str,
        identity: ProcessIdentity,
        interval: float,
        lease_seconds: float,
        clock: Callable[[], datetime],
        executing: Callable[[], Sequence[tuple[str, int]]],
        lost: Callable[[str], None],
    ) -> None:
        self._store = store
        self._executor_id = executor_id
        self._identity = identity
        self._interval = interval
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._executing = executing
        self._lost = lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agentdur-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()  # the executor row exists before any run is claimed
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._store.close()

    def beat(self) -> None:
        runs = list(self._executing())
        now = self._clock()
        extended = self._store.heartbeat(
            executor_id=self._executor_id,
            host=self._identity.host,
            pid=self._identity.pid,
            process_started=self._identity.started,
            now=now,
            lease_until=now + timedelta(seconds=self._lease_seconds),
            runs=runs,
        )
        for run_id, _ in runs:
            if run_id not in extended:
                self._lost(run_id)

    def _main(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception as exc:
                logger.warning("heartbeat failed (%s: %s); retrying", type(exc).__name__, exc)


class Scheduler:
    """A thread that wakes due runs and takes over runs this executor may take."""

    def __init__(self, tick: Callable[[], None], *, interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agentdur-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def _main(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception as exc:
                logger.warning("scheduler tick failed (%s: %s); retrying", type(exc).__name__, exc)
