"""The state of one executing run: its step cursor, its recording, its signals, and its
one write path.

Every kind of step follows the same protocol against a `RunContext` (kernel.py says
why each stage is where it is):

1. `index = ctx.next_index()`, synchronously when the step is *called*, so concurrent
   steps get the same indices on every execution;
2. `ctx.look_up(Requested(index, name, kind))`: the kernel's decision (replay, execute,
   resume, or a `NonDeterminismError` for a divergence);
3. attempts in the kernel's retry loop, then `ctx.arecord(...)` / `ctx.write(...)`: the
   one write path, through the store's writer, refused if another executor took the
   run over (`FencedError`) or it was cancelled, and the only writer of `ctx.recorded`.

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
    StoreUnavailable,
)
from agentdur.kernel import Action, Decision, Requested, decide
from agentdur.store import FINISHED, SqlStore, StepInfo, payloads

if TYPE_CHECKING:
    from agentdur.store.base import Cursor

logger = logging.getLogger(__name__)

T = TypeVar("T")

_current: ContextVar[RunContext | None] = ContextVar("agentdur_run", default=None)


class ReplayStopped(BaseException):
    """Internal: a replay reached its `until` step or the end of an unfinished recording.

    A BaseException so that workflow code catching `Exception` cannot swallow it.
    """


class RunSuspended(BaseException):
    """Internal: the run was released and stops executing in this process.

    `status` is WAITING or NEEDS_ATTENTION (whoever delivers the event, a message, an
    approval, an operator's resolution or the wake-up time, makes it runnable again, and
    any executor continues it by replaying its recording), or RELEASED: the database
    stayed unreachable, the run is still RUNNING under this executor, and recovery
    continues it from its last recorded step once the database answers.
    """

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class Interrupted(Exception):
    """Internal: carries a KeyboardInterrupt or SystemExit raised in a run to its caller.

    An Exception, not the signal itself, so that it crosses the event loop (which would
    stop on a bare KeyboardInterrupt); `RunHandle` raises the original one.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


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
        unwritten: dict[tuple[str, int], Any] | None = None,
    ) -> None:
        self.store = store
        self.unwritten = {} if unwritten is None else unwritten
        """Outcomes of side effects this process knows but could not record, by
        (run_id, step index), shared by every execution in the process: a run released
        by a database fault settles its STARTED step from here when it resumes."""
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

    def look_up(
        self, requested: Requested, *, explain: Callable[[StepInfo], str] | None = None
    ) -> Decision:
        """The kernel's decision for a step call against this run's recording.

        Raises `NonDeterminismError` for a divergence (`explain` says how an LLM
        request or a step's arguments differ) and `ReplayStopped` where a replay's
        recording ends or reaches a step it would have to resume.
        """
        self.check_signals()
        recorded = self.recorded.get(requested.index)
        ends_early = recorded is None and self.replay and self.replay_complete
        decision = decide(
            recorded,
            requested,
            replaying=self.replay,
            complete=self.replay_complete,
            # Only a divergence past the end names it; scanning every step is O(steps).
            last_index=max(self.recorded, default=-1) if ends_early else -1,
        )
        if decision.action is Action.STOP:
            raise ReplayStopped
        if decision.action is Action.DIVERGE:
            wanted = requested.describe()
            recorded = decision.recorded
            same_step = (requested.name, requested.kind)
            if recorded is not None and (recorded.name, recorded.kind) == same_step:
                change = explain(recorded) if explain is not None else "another request"
                wanted = f"the same step with {change}"
            raise NonDeterminismError(self.run_id, requested.index, decision.found, wanted)
        if decision.action is Action.REPLAY and self.on_step is not None:
            assert decision.recorded is not None
            self.on_step(decision.recorded)
        return decision

    def _record_job(
        self,
        step: StepInfo,
        input_data: Any,
        output_data: Any,
        error_data: Any,
        cur: Cursor | None,
    ) -> Callable[[], None]:
        # Encoded here, in the caller, so a value JSON cannot hold (or one over the cap)
        # fails before any write, as a SerializationError naming the step.
        input_json = self.encode(input_data, "input", step)
        output_json = self.encode(output_data, "output", step)
        error_json = self.encode(error_data, "error", step)
        return lambda: self.store.record_step(
            step,
            epoch=self.epoch,
            input_json=input_json,
            output_json=output_json,
            error_json=error_json,
            cur=cur,
        )

    def encode(self, data: Any, part: str, step: StepInfo) -> str | None:
        """`data` as the JSON text the store keeps (None stays None), checked against the
        cap on recorded values; an error names `part` ("input", "output"...) of `step`."""
        data = payloads.stored(data)
        if data is None:
            return None
        noun = {"llm": "LLM step", "tool": "tool step"}.get(step.kind, "step")
        if step.kind == "tool" and part == "output":
            part = "result"
        what = f"the {part} of {noun} {step.step_index} {step.name!r}"
        return codec.dumps(data, what=what, limit=self.store.max_value_bytes)

    async def arecord(
        self,
        step: StepInfo,
        *,
        input_data: Any = None,
        output_data: Any = None,
        error_data: Any = None,
        cur: Cursor | None = None,
    ) -> StepInfo:
        """Write a step; never in replay mode. Raises FencedError/RunCancelledError if refused.

        With `cur` (a transactional step's own transaction) the write joins that
        transaction; otherwise it goes to the store's writer and this coroutine resumes
        once it is durable.
        """
        step = _with_payload(step, input_data, output_data, error_data)
        if self.replay:
            return step
        job = self._record_job(step, input_data, output_data, error_data, cur)
        if cur is not None:
            await asyncio.to_thread(self._guard_sync, job)
        else:
            await self.write(job)
        self.recorded[step.step_index] = step
        return step

    def record(
        self,
        step: StepInfo,
        *,
        input_data: Any = None,
        output_data: Any = None,
        error_data: Any = None,
        cur: Cursor | None = None,
    ) -> StepInfo:
        """Blocking form of `arecord`, for sync steps (they run in worker threads)."""
        step = _with_payload(step, input_data, output_data, error_data)
        if self.replay:
            return step
        job = self._record_job(step, input_data, output_data, error_data, cur)
        self._guard_sync(job if cur is not None else lambda: self.store.write(job))
        self.recorded[step.step_index] = step
        return step

    async def write(self, job: Callable[[], T], *, records: StepInfo | None = None) -> T:
        """Run a store write for this run through the store's writer (the one write path).

        `records` is the step the write records, kept in the run's recorded map once
        the write is durable. A refusal (another executor took the run, or it was
        cancelled) and a database that stays unreachable are turned into the run's
        signals: the first two stop it, the last releases it for recovery; none of
        them is the step's failure.
        """
        if self.replay:
            raise ReplayStopped
        try:
            result = await self.store.awrite(job)
        except FencedError:
            await asyncio.to_thread(self.explain_refusal)
            raise
        except StoreUnavailable as exc:
            self._release(exc)
        if records is not None:
            self.recorded[records.step_index] = records
        return result

    def remember(self, step: StepInfo) -> None:
        """Keep a step a write just recorded whose value only that write knew.

        Part of the write path: for a message `take_or_wait` consumed, or a ledger
        result `begin_effect` deduplicated, known once the write returned.
        """
        self.recorded[step.step_index] = step

    def write_sync(self, job: Callable[[], T], *, records: StepInfo | None = None) -> T:
        """Blocking form of `write`, for worker threads."""
        if self.replay:
            raise ReplayStopped
        result = self._guard_sync(lambda: self.store.write(job))
        if records is not None:
            self.recorded[records.step_index] = records
        return result

    def _guard_sync(self, write: Callable[[], T]) -> T:
        try:
            return write()
        except FencedError:
            self.explain_refusal()
            raise
        except StoreUnavailable as exc:
            self._release(exc)

    def _release(self, exc: StoreUnavailable) -> NoReturn:
        logger.warning(
            "run %s released for recovery: %s (its steps so far are recorded; it resumes "
            "from there once the database answers)",
            self.run_id,
            exc,
        )
        self.suspended = "RELEASED"
        raise RunSuspended("RELEASED") from exc

    def explain_refusal(self) -> None:
        """A write was refused: find out whether the run was cancelled or taken over."""
        run = self.store.get_run(self.run_id)
        if run is not None and run.status == "CANCELLED":
            self.cancelled = True
            raise RunCancelledError(self.run_id)
        self.fenced = True
        if run is not None and run.status in FINISHED:
            logger.warning(
                "run %s was taken over by another executor (epoch %s), which finished it "
                "(%s); this executor (epoch %s) stops working on it",
                self.run_id,
                run.epoch,
                run.status,
                self.epoch,
            )
        else:
            logger.warning(
                "run %s was taken over by %s (epoch %s); this executor stops working on it",
                self.run_id,
                (run.owner or "no executor yet") if run else "nobody (the run is gone)",
                run.epoch if run else "?",
            )
        raise FencedError(self.run_id, self.epoch)

    async def suspend(self, status: str, *, reason: dict[str, Any] | None = None) -> NoReturn:
        """Release the run as NEEDS_ATTENTION (with the reason) and stop executing it."""
        error_json = None if reason is None else codec.dumps(reason)
        await self.write(
            lambda: self.store.suspend_run(
                self.run_id,
                epoch=self.epoch,
                status=status,
                wake_at=None,
                error_json=error_json,
            )
        )
        self.suspended = status
        raise RunSuspended(status)

    def waiting(self) -> NoReturn:
        """The store released the run as WAITING: stop executing it."""
        self.suspended = "WAITING"
        raise RunSuspended("WAITING")


def _with_payload(step: StepInfo, input_data: Any, output_data: Any, error_data: Any) -> StepInfo:
    """The step carrying exactly these values (itself when it already does)."""
    input_data, output_data, error_data = (
        payloads.full(input_data),
        payloads.full(output_data),
        payloads.full(error_data),
    )
    if step.input is input_data and step.output is output_data and step.error is error_data:
        return step
    return replace(step, input=input_data, output=output_data, error=error_data)
