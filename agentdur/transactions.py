"""Transactional steps' own transactions, and the database faults they meet.

A transactional step (`@agentdur.transaction`, or a tool with `transactional=True`)
writes through a connection of its own whose transaction also records the step. That
transaction is opened and committed in a worker thread, so waiting for SQLite's write
lock or for a free PostgreSQL connection never holds the event loop; while the body
runs, other runs' checkpoints go on through the writer (which on SQLite waits for the
lock only as long as the body holds it).

A transient fault (a dropped connection, a locked database) rolls back the body's
writes with the checkpoint, so the attempt is simply made again, for up to the store's
`write_retry_seconds`, without counting against the step's own retry policy. A commit
whose outcome was lost is settled by reading the recording: the step is there, or it
never happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

from agentdur.errors import StoreUnavailable
from agentdur.store import StepInfo
from agentdur.store.base import Cursor

if TYPE_CHECKING:
    from agentdur.context import RunContext

Verdict = Literal["committed", "retry", "failed"]


@asynccontextmanager
async def transaction_scope(ctx: RunContext) -> AsyncIterator[tuple[Any, Cursor]]:
    """(connection, cursor) of a transaction of its own, opened and closed off the loop."""
    scope = ctx.store.dedicated_transaction()
    pair = await asyncio.to_thread(scope.__enter__)
    try:
        yield pair
    except BaseException as exc:
        await asyncio.to_thread(scope.__exit__, type(exc), exc, exc.__traceback__)
        raise
    else:
        await asyncio.to_thread(scope.__exit__, None, None, None)


class TransactionFaults:
    """The database faults one transactional step met, retried for a bounded time."""

    def __init__(self, ctx: RunContext, step_index: int) -> None:
        self.ctx = ctx
        self.step_index = step_index
        self.committed: StepInfo | None = None
        self._first: float | None = None
        self._delay = 0.05

    def verdict(self, exc: BaseException) -> Verdict:
        """After a failed attempt (blocking: reads the recording; call from a thread).

        "committed": the commit went through although its answer was lost (the step is
        in `committed`); "retry": a transient fault, try the same attempt again after
        `pause()`; "failed": the body's own failure, for the step's retry policy.
        """
        store = self.ctx.store
        if not (store._is_driver_error(exc) or isinstance(exc, StoreUnavailable)):
            return "failed"
        try:
            found = store.get_step(self.ctx.run_id, self.step_index)
        except Exception:
            found = None
        if found is not None and found.status in ("SUCCEEDED", "ERROR"):
            self.committed = found
            self.ctx.recorded[self.step_index] = found
            return "committed"
        if not store._is_transient(exc):
            raise store._translate(exc) from exc
        now = time.monotonic()
        self._first = self._first if self._first is not None else now
        if now - self._first > store.write_retry_seconds:
            unavailable = StoreUnavailable(
                f"the database at {store.url} stayed unreachable for "
                f"{store.write_retry_seconds:g}s: {exc}",
                url=store.url,
            )
            self.ctx._release(unavailable)
        return "retry"

    def pause(self) -> float:
        """Seconds to wait before the next attempt (exponential, with jitter)."""
        delay = self._delay * (0.5 + random.random() / 2)
        self._delay = min(self._delay * 2, 1.0)
        return delay
