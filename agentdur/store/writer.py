"""The store's one write path: writer threads that commit queued writes in groups.

Every write a run makes while it executes (a checkpoint, a ledger entry, a run's
outcome) is a job: a call of a blocking store method. Jobs are queued from any thread
or event loop; the writer thread takes every job queued at that moment and executes them
in one transaction on a connection of its own (group commit: one commit, one fsync, for
all of them), then resolves each job's future. A caller resumes only after the commit
that holds its write, so each caller sees its own write durable, and an event loop that
queued a job never waits on the database.

Inside a group, a job's `store.statement()` and `store.transaction()` join the group's
transaction (the latter under a savepoint, so a job that raises is undone alone). Fencing
is still checked per row: a job whose conditional write touches no row raises
`FencedError` for its own caller and leaves the others alone.

A store has one writer thread (SQLite: one write lock) or a few (PostgreSQL, where a
group's statements each cost a round trip, so groups on several connections overlap
their waits). Each thread takes the next group when it is free; one run's writes are
never in two groups at once, since a run awaits each write before the next.

Faults are normal here. A transient failure (a dropped connection, a locked database, a
server restart) rolls the group back and retries it on a new connection with backoff,
for up to `retry_seconds`; after that every job of the group fails with
`StoreUnavailable`, which the run treats as "release me for recovery", never as its own
failure. A job that fails for its own reasons (a value the database refuses) is isolated:
the group is retried one job per transaction, so only that job fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agentdur.errors import StoreUnavailable

if TYPE_CHECKING:
    from agentdur.store.core import StoreCore

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 1000
"""Jobs committed in one transaction at most; more wait for the next group."""


@dataclass
class _Job(Generic[T]):
    """A write, and where its outcome goes: a thread's future or an event loop's."""

    fn: Callable[[], T]
    future: concurrent.futures.Future[T] | None = None
    waiter: asyncio.Future[T] | None = None


class GroupWriter:
    """A thread that executes store writes in groups, one transaction per group."""

    def __init__(self, store: StoreCore, *, retry_seconds: float, threads: int = 1) -> None:
        self._store = store
        self.retry_seconds = retry_seconds
        self._jobs: deque[_Job[Any]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._main, name=f"agentdur-writer-{i} {store.url}", daemon=True
            )
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def in_writer_thread(self) -> bool:
        return threading.current_thread() in self._threads

    def _queue(self, job: _Job[Any]) -> None:
        with self._ready:
            if self._closed:
                raise StoreUnavailable(
                    f"the store of {self._store.url} is closed", url=self._store.url
                )
            self._jobs.append(job)
            self._ready.notify()

    def call(self, fn: Callable[[], T]) -> T:
        """Blocking form of `acall`, for threads other than an event loop's."""
        if self.in_writer_thread():
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue(_Job(fn, future=future))
        return future.result()

    async def acall(self, fn: Callable[[], T]) -> T:
        """Execute a write in the next group and return its result (or raise its error).

        Once queued, the write is made even if the waiting task is cancelled meanwhile.
        """
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue(_Job(fn, waiter=waiter))
        return await waiter

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread (idempotent)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if not self.in_writer_thread():
            for thread in self._threads:
                thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------

    def _main(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closed:
                    self._ready.wait()
                if not self._jobs:
                    break
                group = [self._jobs.popleft() for _ in range(min(len(self._jobs), MAX_GROUP))]
            self._commit(group)
        self._store._close_writer()

    def _commit(self, group: list[_Job[Any]]) -> None:
        """Commit a group, retrying transient faults; deliver each job's outcome."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.02
        while True:
            try:
                outcomes = self._attempt(group)
            except BaseException as exc:
                if not self._store._is_transient(exc):
                    if len(group) > 1:
                        for job in group:  # isolate the job the database refused
                            self._commit([job])
                        return
                    _deliver(group, [(False, self._store._translate(exc))])
                    return
                if time.monotonic() + delay > deadline:
                    error = StoreUnavailable(
                        f"the database at {self._store.url} stayed unreachable for "
                        f"{self.retry_seconds:g}s: {type(exc).__name__}: {exc}".strip(),
                        url=self._store.url,
                    )
                    error.__cause__ = exc
                    _deliver(group, [(False, error)] * len(group))
                    return
                logger.warning(
                    "database write failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__,
                    str(exc).strip(),
                    delay,
                )
                self._store._close_writer()
                self._store._after_fault()
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 1.0)
                continue
            _deliver(group, outcomes)
            return

    def _attempt(self, group: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        if len(group) == 1:
            # Alone, a write is its own transaction on the store's ordinary connection:
            # on PostgreSQL one round trip instead of three (BEGIN, write, COMMIT).
            return [self._run(group[0])]
        with self._store._group_transaction():
            return [self._run(job) for job in group]

    def _run(self, job: _Job[Any]) -> tuple[bool, Any]:
        try:
            return True, job.fn()
        except BaseException as exc:
            if self._store._is_driver_error(exc):
                raise  # the transaction is unusable: retry or isolate the group
            return False, exc


def _deliver(group: list[_Job[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each job its outcome; one wake-up per event loop for the whole group."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for job, (ok, value) in zip(group, outcomes, strict=True):
        if job.waiter is not None:
            by_loop.setdefault(job.waiter.get_loop(), []).append((job.waiter, ok, value))
        elif job.future is not None and job.future.set_running_or_notify_cancel():
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for waiter, ok, value in settled:
        if waiter.done():
            continue  # its task was cancelled; the write was made all the same
        if ok:
            waiter.set_result(value)
        else:
            waiter.set_exception(value)
