"""The store's one write path: a writer thread that commits queued writes in groups.

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
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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
    fn: Callable[[], T]
    future: concurrent.futures.Future[T] = field(default_factory=concurrent.futures.Future)


class GroupWriter:
    """A thread that executes store writes in groups, one transaction per group."""

    def __init__(self, store: StoreCore, *, retry_seconds: float) -> None:
        self._store = store
        self.retry_seconds = retry_seconds
        self._jobs: deque[_Job[Any]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._main, name=f"agentdur-writer {store.url}", daemon=True
        )
        self._thread.start()

    def in_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue a write; the future resolves once the transaction holding it committed."""
        job: _Job[T] = _Job(fn)
        with self._ready:
            if self._closed:
                raise StoreUnavailable(
                    f"the store of {self._store.url} is closed", url=self._store.url
                )
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def call(self, fn: Callable[[], T]) -> T:
        """Blocking form of `acall`, for threads other than an event loop's."""
        if self.in_writer_thread():
            return fn()
        return self.submit(fn).result()

    async def acall(self, fn: Callable[[], T]) -> T:
        """Execute a write in the next group and return its result (or raise its error)."""
        return await asyncio.wrap_future(self.submit(fn))

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread (idempotent)."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        if not self.in_writer_thread():
            self._thread.join(timeout)

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
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 1.0)
                continue
            _deliver(group, outcomes)
            return

    def _attempt(self, group: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self._store._group_transaction():
            for job in group:
                try:
                    outcomes.append((True, job.fn()))
                except BaseException as exc:
                    if self._store._is_driver_error(exc):
                        raise  # the transaction is unusable: retry or isolate the group
                    outcomes.append((False, exc))
        return outcomes


def _deliver(group: list[_Job[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    for job, (ok, value) in zip(group, outcomes, strict=True):
        if job.future.set_running_or_notify_cancel():
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
