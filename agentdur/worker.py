"""The worker loop behind `rt.serve()` and `agentdur worker`.

It heartbeats (through the Runtime), takes runs from its queues within their limits,
executes them on the runtime's loop, and regularly recovers runs whose owner's lease
expired (a dead worker's runs) or that became runnable again (approved, resolved,
messaged). Idle, it waits for a NOTIFY on PostgreSQL, or polls SQLite; it also wakes when
its next recovery is due and when a rate-limited queue's window frees a slot. On SIGTERM
(or `stop()`) it takes no more work, lets what it holds finish for `grace` seconds, then
releases the rest for other workers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import signal
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agentdur.errors import FencedError
from agentdur.queues import Queue, lookup_queue, registered_queues

if TYPE_CHECKING:
    from agentdur.handle import RunHandle
    from agentdur.runtime import Runtime

logger = logging.getLogger(__name__)

_ERROR_PAUSE = 1.0
"""Seconds to wait after a failed round (database unreachable, ...) before trying again."""
_STREAM, _GATHER = 0.02, 0.003
"""A NOTIFY within _STREAM s of the last is part of a stream: gather for _GATHER s."""


class Worker:
    """Serves queues for one Runtime until stopped."""

    def __init__(
        self,
        runtime: Runtime,
        queues: list[Queue | str] | None = None,
        *,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        grace: float = 30.0,
    ) -> None:
        self.rt = runtime
        self.queues = [lookup_queue(q) for q in queues] if queues else registered_queues()
        self.concurrency = concurrency
        is_sqlite = runtime.store.dialect == "sqlite"
        self.poll_interval = poll_interval or (0.05 if is_sqlite else 1.0)
        self.grace = grace
        self._stopping = threading.Event()
        self._wake = threading.Event()
        """Set when a local run finishes or (PostgreSQL) a run is enqueued anywhere."""
        self._running: dict[str, tuple[str | None, concurrent.futures.Future[Any]]] = {}
        self._rate_waits: list[float] = []
        """Seconds until each rate-limited queue (that held back work) frees a slot."""

    def stop(self) -> None:
        """Take no more work; the loop ends after the grace period."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        rt = self.rt
        rt.open()
        previous_handler: Any = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGTERM, lambda *_: self.stop())
        logger.info("worker %s serving %s", rt.executor_id, ", ".join(q.name for q in self.queues))
        for queue in self.queues:  # claims lock this row: without it nothing would be locked
            rt.store.ensure_queue(queue.name, now=rt.clock())
        listener = self._start_listener()
        recovery_every = max(0.5, rt.lease_seconds / 3)
        next_recovery = 0.0
        try:
            while not self._stopping.is_set():
                try:
                    if time.monotonic() >= next_recovery:
                        self._recover()
                        next_recovery = time.monotonic() + recovery_every
                    self._forget_finished()
                    self._wake.clear()
                    self._rate_waits = []
                    taken = sum(self._take(queue) for queue in self.queues)
                except Exception:
                    logger.exception("worker %s: a round failed; trying again", rt.executor_id)
                    self._wake.wait(_ERROR_PAUSE)
                    continue
                if not taken:
                    wait = min(self.poll_interval, next_recovery - time.monotonic())
                    if self._rate_waits:
                        wait = min(wait, min(self._rate_waits) + 0.005)
                    self._wake.wait(max(0.0, wait))
        finally:
            self._stopping.set()
            self._drain()
            if listener is not None:
                listener.join(timeout=5.0)
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)

    def _start_listener(self) -> threading.Thread | None:
        """LISTEN before the first claim (PostgreSQL), so no enqueue falls in between."""
        if self.rt.store.dialect != "postgres":
            return None
        try:
            self.rt.store.wait_for_enqueue(0)
        except Exception:
            logger.exception("listening for enqueued runs failed; polling instead")
            return None
        thread = threading.Thread(target=self._listen, name="agentdur-listen", daemon=True)
        thread.start()
        return thread

    def _listen(self) -> None:
        """Wake the loop on a NOTIFY of an enqueue (PostgreSQL).

        A lone enqueue wakes the loop at once. In a stream of enqueues every idle worker
        is notified of each one, and each would claim (mostly nothing) per NOTIFY; so
        within a stream the wake waits `_GATHER` seconds and takes the lot in one claim.
        """
        store = self.rt.store
        last = 0.0
        while not self._stopping.is_set():
            try:
                if not store.wait_for_enqueue(0.5):
                    continue
                if time.monotonic() - last < _STREAM:
                    time.sleep(_GATHER)
                last = time.monotonic()
                while time.monotonic() - last < _GATHER and store.wait_for_enqueue(0):
                    pass  # those are covered by this wake too
                self._wake.set()
            except Exception:
                if not self._stopping.is_set():
                    logger.exception("listening for enqueued runs failed; polling instead")
                return

    def _recover(self) -> None:
        """Take over runs whose owner's lease expired (and our own from before)."""
        for handle in self.rt.recover():
            if handle._future is not None and handle.run_id not in self._running:
                self._track(handle, self.rt.get_run(handle.run_id).queue)

    def _track(self, handle: RunHandle, queue: str | None) -> None:
        future = handle._future
        assert future is not None
        self._running[handle.run_id] = (queue, future)
        run_id = handle.run_id

        def finished(done: concurrent.futures.Future[Any]) -> None:
            self._wake.set()
            if not done.cancelled() and isinstance(done.exception(), FencedError):
                logger.warning(
                    "worker %s: run %s was fenced (another executor took it over); "
                    "this worker stopped working on it",
                    self.rt.executor_id,
                    run_id,
                )

        future.add_done_callback(finished)

    def _forget_finished(self) -> None:
        for run_id, (_, future) in list(self._running.items()):
            if future.done():
                del self._running[run_id]

    def _take(self, queue: Queue) -> int:
        capacity = 1_000 if self.concurrency is None else self.concurrency - len(self._running)
        if queue.worker_concurrency is not None:
            mine = sum(1 for name, _ in self._running.values() if name == queue.name)
            capacity = min(capacity, queue.worker_concurrency - mine)
        if capacity <= 0:
            return 0
        rt = self.rt
        now = rt.clock()
        rate = (queue.rate_limit.limit, queue.rate_limit.per_seconds) if queue.rate_limit else None
        runs = rt.store.dequeue(
            queue.name,
            owner=rt.executor_id,
            now=now,
            lease_until=now + timedelta(seconds=rt.lease_seconds),
            limit=capacity,
            concurrency=queue.concurrency,
            rate=rate,
            clock=rt.clock,
        )
        if rate is not None and len(runs) < capacity:
            wait = rt.store.queue_rate_wait(queue.name, now=rt.clock(), rate=rate)
            if wait > 0:
                self._rate_waits.append(wait)
        for run in runs:
            handle = rt._launch_claimed(run)
            if handle is None or handle._future is None:
                continue
            self._track(handle, queue.name)
        return len(runs)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace
        for _, future in list(self._running.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(BaseException):  # outcomes are recorded; we only wait
                future.result(timeout=remaining)
        released = self.rt.store.release_owned(self.rt.executor_id)
        if released:
            logger.info("worker %s released %d unfinished runs", self.rt.executor_id, released)
