"""The state of one executing run: its step cursor, its recording, and the step protocol.

Every kind of step (a user `@step`, an LLM call, a tool call, a durable sleep) follows
the same protocol against a `RunContext`:

1. `index = ctx.next_index()`, synchronously when the step is *called*, so concurrent
   steps get the same indices on every execution;
2. `ctx.replayed(index, name, kind)` returns the recorded step if there is one (and raises
   `NonDeterminismError` if the recording holds another step there);
3. otherwise the step executes and `ctx.record(...)` writes it: one statement that the
   store refuses if another executor took the run over (`FencedError`) or the run was
   cancelled.

Fencing and cancellation are sticky: once seen, every later step call raises again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agentdur import codec
from agentdur.errors import (
    FencedError,
    NonDeterminismError,
    OutsideRunError,
    RunCancelledError,
)
from agentdur.store import SqlStore, StepInfo

if TYPE_CHECKING:
    from agentdur.store.base import Cursor

logger = logging.getLogger(__name__)

FINISHED_STEP = ("SUCCEEDED", "ERROR")
T = TypeVar("T")

_current: ContextVar[RunContext | None] = ContextVar("agentdur_run", default=None)


class ReplayStopped(BaseException):
    """Internal: a replay reached its `until` step or the end of an unfinished recording.

    A BaseException so that workflow code catching `Exception` cannot swallow it.
    """


class RunSuspended(BaseException):
    """Internal: the run was released as WAITING or NEEDS_ATTENTION and stops executing.

    Whoever delivers the event (a message, an approval, an operator's resolution) makes
    it runnable again, and any executor continues it by replaying its recording.
    """

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def current_run(what: str) -> RunContext:
    """The run executing in this context, or a clear error naming `what` was misused."""
    ctx = _current.get()
    if ctx is None:
        raise OutsideRunError(
            f"{what} was called outside a run. Start its workflow through a Runtime: "
            "`rt.run(my_workflow, ...)` (or `rt.start`, `await rt.arun`)."
        )
    return ctx


def in_run() -> bool:
    """True inside a run (a workflow body or something it called)."""
    return _current.get() is not None


class RunContext:
    """One execution of a run: live, recovering, or replaying without writes."""

    def __init__(
        self,
        *,
        store: SqlStore,
        clock: Callable[[], datetime],
        run_id: str,
        workflow: str,
        epoch: int,
        recorded: dict[int, StepInfo],
        replay: bool = False,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.run_id = run_id
        self.workflow = workflow
        self.epoch = epoch
        self.recorded = recorded
        self.replay = replay
        self.on_step = on_step
        self.cancelled = False
        self.fenced = False
        self.suspended: str | None = None
        self._next = 0
        self.replay_complete = False
        """Replay of a finished run: a step missing from the recording is a divergence."""
        self.values: dict[str, Any] = {}
        """Per-run state kept by higher layers (the agent loop keeps its model here)."""

    def activate(self) -> Any:
        """Make this the current run in this context; returns the token to reset."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: Any) -> None:
        _current.reset(token)

    def next_index(self) -> int:
        """Assign the next step index (call synchronously, when the step is called)."""
        index = self._next
        self._next += 1
        return index

    def check_signals(self) -> None:
        """Raise if the run was fenced or cancelled (sticky)."""
        if self.fenced:
            raise FencedError(self.run_id, self.epoch)
        if self.cancelled:
            raise RunCancelledError(self.run_id)
        if self.suspended:
            raise RunSuspended(self.suspended)

    def replayed(
        self,
        index: int,
        name: str,
        kind: str,
        *,
        request_hash: str | None = None,
        explain: Callable[[StepInfo], str] | None = None,
    ) -> StepInfo | None:
        """The recorded step at `index`, or None if it must execute now.

        Raises `NonDeterminismError` when the recording holds another step there, or
        (replay mode) when the code asks for a step the recording does not have.
        """
        self.check_signals()
        recorded = self.recorded.get(index)
        requested = f"{kind} {name!r}"
        if recorded is None:
            if self.replay and not self.replay_complete:
                raise ReplayStopped
            if self.replay:
                last = max(self.recorded, default=-1)
                raise NonDeterminismError(
                    self.run_id, index, f"no step (the recording ends at step {last})", requested
                )
            return None
        if recorded.name != name or recorded.kind != kind:
            raise NonDeterminismError(
                self.run_id, index, f"{recorded.kind} {recorded.name!r}", requested
            )
        if (
            request_hash is not None
            and recorded.request_hash is not None
            and recorded.request_hash != request_hash
        ):
            change = explain(recorded) if explain is not None else "another request"
            raise NonDeterminismError(
                self.run_id,
                index,
                f"{kind} {name!r} with request hash {recorded.request_hash[:12]}",
                f"the same step with {change}",
            )
        if self.on_step is not None and recorded.status in FINISHED_STEP:
            self.on_step(recorded)
        return recorded

    def record(
        self,
        step: StepInfo,
        *,
        input_data: Any = None,
        output_data: Any = None,
        error_data: Any = None,
        cur: Cursor | None = None,
    ) -> StepInfo:
        """Write a step; never in replay mode. Raises FencedError/RunCancelledError if refused."""
        step = replace(step, input=input_data, output=output_data, error=error_data)
        if self.replay:
            return step
        try:
            self.store.record_step(
                step,
                epoch=self.epoch,
                input_json=None if input_data is None else codec.dumps(input_data),
                output_json=None if output_data is None else codec.dumps(output_data),
                error_json=None if error_data is None else codec.dumps(error_data),
                cur=cur,
            )
        except FencedError:
            self.explain_refusal()
        self.recorded[step.step_index] = step
        return step

    def explain_refusal(self) -> None:
        """A write was refused: find out whether the run was cancelled or taken over."""
        run = self.store.get_run(self.run_id)
        if run is not None and run.status == "CANCELLED":
            self.cancelled = True
            raise RunCancelledError(self.run_id)
        self.fenced = True
        logger.warning(
            "run %s was taken over by %s (epoch %s); this executor stops working on it",
            self.run_id,
            run.owner if run else "nobody",
            run.epoch if run else "?",
        )
        raise FencedError(self.run_id, self.epoch)

    def guarded(self, write: Callable[[], T]) -> T:
        """Run a store write that names this run's epoch; explain a refusal."""
        if self.replay:
            raise ReplayStopped
        try:
            return write()
        except FencedError:
            self.explain_refusal()
            raise

    def suspend(self, status: str, *, reason: dict[str, Any] | None = None) -> NoReturn:
        """Release the run as NEEDS_ATTENTION (with the reason) and stop executing it."""
        self.guarded(
            lambda: self.store.suspend_run(
                self.run_id,
                epoch=self.epoch,
                status=status,
                wake_at=None,
                error_json=None if reason is None else codec.dumps(reason),
            )
        )
        self.suspended = status
        raise RunSuspended(status)

    def waiting(self) -> NoReturn:
        """The store released the run as WAITING: stop executing it."""
        self.suspended = "WAITING"
        raise RunSuspended("WAITING")

    async def sleep_until(self, until: datetime) -> None:
        """Sleep until a wall-clock time, waking early if the run is cancelled or fenced."""
        while not self.replay:
            self.check_signals()
            remaining = (until - self.clock()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.25))
