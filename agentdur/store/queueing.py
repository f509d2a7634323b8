"""Store operations of queues and rate limiters.

A claim locks the queue's row, counts what runs and what started within the rate
window, and takes ENQUEUED runs (SKIP LOCKED on PostgreSQL), all in one transaction.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta

from agentdur.store.core import RunInfo, StoreCore


class QueueOps(StoreCore):
    """Queues, their claims, and model rate limiters."""

    # -- queues and rate limits --------------------------------------------------------

    def ensure_queue(self, name: str, *, now: datetime) -> None:
        """The queue's lock row (claims lock it to check limits)."""
        with self.statement() as cur:
            cur.execute(self.sql.ENSURE_QUEUE, {"name": name, "now": self._time_param(now)})

    def enqueue_run(self, run: RunInfo, *, input_json: str) -> bool:
        """Insert an ENQUEUED run and wake idle workers; False if its id or its dedup_id
        (among the queue's unfinished runs) is taken."""
        params = self._run_params(run)
        params["input"] = self._json_param(input_json)
        with self.transaction() as cur:
            cur.execute(self.sql.ENQUEUE_RUN, params)
            if cur.rowcount != 1:
                return False
            cur.execute(self.sql.NOTIFY_ENQUEUED, {"queue": run.queue})
        return True

    def find_queued_duplicate(self, queue: str, dedup_id: str) -> RunInfo | None:
        with self.statement() as cur:
            cur.execute(self.sql.FIND_QUEUED_DUPLICATE, {"queue": queue, "dedup_id": dedup_id})
            row = cur.fetchone()
        return self._run(row) if row else None

    def dequeue(
        self,
        queue: str,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        concurrency: int | None,
        rate: tuple[int, float] | None,
        clock: Callable[[], datetime] | None = None,
    ) -> list[RunInfo]:
        """Take up to `limit` ENQUEUED runs of a queue, within its global limits.

        The queue row is locked first (when the queue has limits), so the running count
        and the starts within the rate window (recorded start times, a sliding window)
        are checked and the runs taken in one transaction, whatever the number of
        workers. With `clock`, `now` (the recorded start time) is read again once the
        lock is held and the running runs counted, and `lease_until` moved by as much: a
        worker that waited for the lock would otherwise record a start earlier than the
        finish that made room for it.
        """
        with self.transaction() as cur:
            if concurrency is not None or rate is not None:
                # Without limits there is nothing to count: SKIP LOCKED alone keeps two
                # workers from taking one run, and they need not wait for each other.
                cur.execute(self.sql.LOCK_QUEUE, {"queue": queue})
            if concurrency is not None:
                cur.execute(self.sql.QUEUE_RUNNING, {"queue": queue})
                running = cur.fetchone()
                limit = min(limit, concurrency - int(running[0] if running else 0))
            if clock is not None:  # after the count: every finish it saw is earlier
                counted_at = clock()
                lease_until += counted_at - now
                now = counted_at
            if rate is not None:
                since = now - timedelta(seconds=rate[1])
                cur.execute(
                    self.sql.QUEUE_STARTED_SINCE,
                    {"queue": queue, "since": self._time_param(since)},
                )
                started = cur.fetchone()
                limit = min(limit, rate[0] - int(started[0] if started else 0))
            if limit <= 0:
                return []
            cur.execute(self.sql.QUEUE_READY, {"queue": queue, "limit": limit})
            ready = [row[0] for row in cur.fetchall()]
            taken = []
            for run_id in ready:
                cur.execute(
                    self.sql.TAKE_QUEUED,
                    {
                        "run_id": run_id,
                        "owner": owner,
                        "now": self._time_param(now),
                        "lease_until": self._time_param(lease_until),
                    },
                )
                row = cur.fetchone()
                if row is not None:
                    taken.append(self._run(row))
        return taken

    def queue_rate_wait(self, queue: str, *, now: datetime, rate: tuple[int, float]) -> float:
        """Seconds until the queue's rate window lets one more run start (0: it does now)."""
        since = now - timedelta(seconds=rate[1])
        params = {"queue": queue, "since": self._time_param(since)}
        with self.statement() as cur:
            cur.execute(self.sql.QUEUE_STARTED_SINCE, params)
            row = cur.fetchone()
            if row is None or int(row[0]) < rate[0]:
                return 0.0
            cur.execute(self.sql.QUEUE_FIRST_START_SINCE, params)
            row = cur.fetchone()
        first = self._time_value(row[0]) if row else None
        if first is None:
            return 0.0
        return max(0.0, (first + timedelta(seconds=rate[1]) - now).total_seconds())

    def requeue_run(self, run_id: str, *, epoch: int) -> bool:
        """Put a taken run back in its queue (a worker that cannot run it)."""
        with self.statement() as cur:
            cur.execute(self.sql.REQUEUE_RUN, {"run_id": run_id, "epoch": epoch})
            return cur.rowcount == 1

    def release_owned(self, owner: str) -> int:
        """Give up an executor's running runs (clean shutdown): any executor may take them."""
        with self.statement() as cur:
            cur.execute(self.sql.RELEASE_OWNED, {"owner": owner})
            return cur.rowcount

    def rate_acquire(
        self,
        limiter: str,
        *,
        now: datetime,
        per_seconds: float,
        limit: int,
        token_limit: int | None,
        tokens: int,
        event: str,
        clock: Callable[[], datetime] | None = None,
    ) -> float:
        """Admit one request of a limiter, or say how many seconds to wait first.

        A sliding window over the recorded admissions: at most `limit` requests (and
        `token_limit` tokens) within any `per_seconds`. Admission is recorded in the same
        transaction that checked the window, under the limiter's lock row. With `clock`,
        `now` is read again once the lock is held: recorded admission times then follow
        the order of admission, and no process prunes an admission another, which waited
        for the lock with an older `now`, still needs to count.
        """
        with self.transaction() as cur:
            cur.execute(self.sql.ENSURE_QUEUE, {"name": limiter, "now": self._time_param(now)})
            cur.execute(self.sql.LOCK_QUEUE, {"queue": limiter})
            if clock is not None:
                now = clock()
            since = now - timedelta(seconds=per_seconds)
            cur.execute(
                self.sql.RATE_PRUNE, {"limiter": limiter, "before": self._time_param(since)}
            )
            cur.execute(
                self.sql.RATE_WINDOW, {"limiter": limiter, "since": self._time_param(since)}
            )
            row = cur.fetchone()
            count, used, oldest = (int(row[0]), int(row[1]), row[2]) if row else (0, 0, None)
            over_tokens = token_limit is not None and count > 0 and used + tokens > token_limit
            if count >= limit or over_tokens:
                first = self._time_value(oldest) or now
                return max(0.01, (first + timedelta(seconds=per_seconds) - now).total_seconds())
            cur.execute(
                self.sql.RATE_INSERT,
                {
                    "limiter": limiter,
                    "now": self._time_param(now),
                    "event": event,
                    "tokens": tokens,
                },
            )
        return 0.0

    def rate_settle(self, limiter: str, event: str, tokens: int) -> None:
        """Correct an admission's token estimate with the usage the provider reported."""
        with self.statement() as cur:
            cur.execute(
                self.sql.RATE_SETTLE, {"limiter": limiter, "event": event, "tokens": tokens}
            )

    @abstractmethod
    def wait_for_enqueue(self, timeout: float) -> bool:
        """Block until a run is enqueued (PostgreSQL: NOTIFY; True) or `timeout` (False)."""
