"""Queues and rate limits: named at import time, enforced across every worker.

A `Queue` registers itself by name when constructed (like workflows), so a worker that
imports the application finds it. Its `concurrency` and `rate_limit` hold globally: a
worker takes runs in one transaction that locks the queue's row, counts its running
runs and the runs started within the rate window (recorded start times), and takes at
most what is left. `worker_concurrency` caps one process.

A `RateLimit` on a model adapter (`OpenAIChat(..., rate_limit=RateLimit(5, 60))`) limits
the requests sent to that model by every process sharing the database, the same way: a
sliding window over recorded admissions, optionally counting tokens too.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from agentdur.errors import NotRegisteredError, UsageError
from agentdur.options import checked_options

_QUEUES: dict[str, Queue] = {}


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` starts (requests) in any window of `per_seconds`.

    `tokens=` (keyword-only) also caps the tokens within the window: a request's input
    tokens are estimated before it is sent and corrected with the reported usage.
    """

    limit: int
    per_seconds: float
    tokens: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.per_seconds <= 0:
            raise UsageError("RateLimit needs limit >= 1 and per_seconds > 0")
        if self.tokens is not None and self.tokens < 1:
            raise UsageError("RateLimit tokens= must be at least 1")


class Queue:
    """A named queue of runs, with global and per-worker limits.

    Args:
        name: how runs record the queue and how workers find it.
        concurrency: at most this many of its runs RUNNING at once, across all workers.
        worker_concurrency: at most this many of its runs in one worker process.
        rate_limit: at most `limit` of its runs begin executing in any `per_seconds`.
    """

    @checked_options()
    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        if not name:
            raise UsageError("a queue needs a name")
        for label, value in (
            ("concurrency", concurrency),
            ("worker_concurrency", worker_concurrency),
        ):
            if value is not None and value < 1:
                raise UsageError(f"queue {name!r}: {label} must be at least 1")
        self.name = name
        self.concurrency = concurrency
        self.worker_concurrency = worker_concurrency
        self.rate_limit = rate_limit
        _QUEUES[name] = self

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"


def lookup_queue(queue: Queue | str) -> Queue:
    """The Queue object for a Queue or a registered name."""
    if isinstance(queue, Queue):
        return queue
    found = _QUEUES.get(queue)
    if found is None:
        raise NotRegisteredError(
            f"queue {queue!r} is not defined in this process: construct "
            f"agentdur.Queue({queue!r}, ...) at import time",
            name=queue,
        )
    return found


def registered_queues() -> list[Queue]:
    return list(_QUEUES.values())


def estimate_tokens(payload: Any) -> int:
    """A rough input-token estimate (4 characters a token) for a rate limiter."""
    return max(1, len(str(payload)) // 4)


async def admit(store: Any, limiter: str, limit: RateLimit, *, clock: Any, tokens: int) -> str:
    """Wait until the limiter admits one request; returns the admission's id."""
    event = uuid.uuid4().hex
    while True:
        wait = await store.awrite(
            lambda: store.rate_acquire(
                limiter,
                now=clock(),
                per_seconds=limit.per_seconds,
                limit=limit.limit,
                token_limit=limit.tokens,
                tokens=tokens,
                event=event,
                clock=clock,
            )
        )
        if wait <= 0:
            return event
        await asyncio.sleep(min(wait, 5.0))
