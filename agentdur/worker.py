"""The worker loop behind `rt.serve()` and `agentdur worker`.

It heartbeats (through the Runtime), takes runs from its queues within their limits,
executes them on the runtime's loop, and regularly recovers runs whose owner's lease
expired (a dead worker's runs) or that became runnable again (approved, resolved,
messaged). Idle, it waits for a NOTIFY on PostgreSQL, or polls SQLite. On SIGTERM (or
`stop()`) it takes no more work, lets what it holds finish for `grace` seconds, then
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

from agentdur.queues import Queue, lookup_queue, registered_queues

if TYPE_CHECKING:
    from agentdur.runtime import Runtime

logger = logging.getLogger(__name__)


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
        self._running: dict[str, tuple[str, concurrent.futures.Future[Any]]] = {}

    def stop(self) -> None:
        """Take no more work; the loop ends after the grace period."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        rt = self.rt
        rt.open()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
        logger.info("worker %s serving %s", rt.executor_id, ", ".join(q.name for q in self.queues))
        if rt.store.dialect == "postgres":
            threading.Thread(target=self._listen, name="agentdur-listen", daemon=True).start()
        last_recovery = 0.0
        while not self._stopping.is_set():
            if time.monotonic() - last_recovery > max(0.5, rt.lease_seconds / 3):
                rt.recover()
                last_recovery = time.monotonic()
            self._forget_finished()
            self._wake.clear()
            taken = sum(self._take(queue) for queue in self.queues)
            if not taken:
                self._wake.wait(self.poll_interval)
        self._drain()

    def _listen(self) -> None:
        """Wake the loop on every NOTIFY of an enqueue (PostgreSQL)."""
        while not self._stopping.is_set():
            try:
                if self.rt.store.wait_for_enqueue(1.0):
                    self._wake.set()
            except Exception:
                logger.exception("listening for enqueued runs failed; polling instead")
                return

    def _full(self) -> bool:
        return self.concurrency is not None and len(self._running) >= self.concurrency

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
        rate = queue.rate_limit
        runs = rt.store.dequeue(
            queue.name,
            owner=rt.executor_id,
            now=now,
            lease_until=now + timedelta(seconds=rt.lease_seconds),
            limit=capacity,
            concurrency=queue.concurrency,
            rate=(rate.limit, rate.per_seconds) if rate else None,
        )
        for run in runs:
            handle = rt._launch_claimed(run)
            if handle is None or handle._future is None:
                continue
            self._running[run.run_id] = (queue.name, handle._future)
            handle._future.add_done_callback(lambda _: self._wake.set())
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
