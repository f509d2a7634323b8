"""The step kernel: how every kind of step meets the recording, and how it is attempted.

Every step call, whatever its kind (a user `@step`, a transaction, an LLM call, a tool
call by effect, `recv`, `sleep`, an approval), goes through the same stages:

1. **Decide**, without I/O: `decide(recorded, requested)` compares what the recording
   holds at the step's index with what the code asks for now, and answers one of
   `REPLAY` (return the recorded outcome), `EXECUTE` (nothing recorded: run it live),
   `RESUME` (recorded STARTED or WAITING when the run stopped: the step kind settles it,
   by reconcile, a reviewer's decision or a message), `DIVERGE` (the code asks for
   another step, an LLM step for another request, or a step with other arguments) or
   `STOP` (a replay reached the end of an unfinished recording, or a step it would
   have to resume: a replay executes nothing, not even a reconcile hook).
   `RunContext.look_up` applies it to a run.
2. **Attempt**, in the one retry loop, `Attempts`: the step's retry policy with backoff;
   a wait longer than `IN_PROCESS_WAIT_SECONDS` releases the run as WAITING with the
   step's attempt count, resumed from there (`Pause`, for the step kinds that allow it);
   the run's signals (fenced, cancelled, released) stop it; a failure to *record* is
   never the step's failure (it propagates and nothing is retried); a database fault
   met by a transactional step's own transaction is retried without spending an
   attempt, or settled from the recording when its commit went through.
3. **Write**, through the one write path, `RunContext.write` / `arecord`: the store's
   writer, which also keeps the run's recorded map (nothing else writes either).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from agentdur import codec
from agentdur.errors import FencedError, RunCancelledError, SerializationError, StoreError
from agentdur.retry import RetryPolicy
from agentdur.store import StepInfo
from agentdur.transactions import TransactionFaults

if TYPE_CHECKING:
    from agentdur.context import RunContext

T = TypeVar("T")

FINISHED_STEP = ("SUCCEEDED", "ERROR")
RECORDING_FAILURES = (SerializationError, FencedError, RunCancelledError, StoreError)
"""Failures to record an outcome: never the step's own failure, never retried."""


class Action(enum.Enum):
    """What a step call does with the recording."""

    REPLAY = "replay"
    EXECUTE = "execute"
    RESUME = "resume"
    DIVERGE = "diverge"
    STOP = "stop"


@dataclass(frozen=True)
class Requested:
    """A step call as the code makes it now."""

    index: int
    name: str
    kind: str
    request_hash: str | None = None
    """An LLM step's request chain hash: the same step with another request diverges."""
    input_hash: str | None = None
    """A hash of a step's arguments: the same step called with others diverges. It is
    recorded in the step's `request_hash` column (what the step was asked to do)."""

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass(frozen=True)
class Decision:
    """The kernel's answer for one step call."""

    action: Action
    recorded: StepInfo | None = None
    found: str = ""
    """For DIVERGE: what the recording holds at the index."""


def decide(
    recorded: StepInfo | None,
    requested: Requested,
    *,
    replaying: bool,
    complete: bool,
    last_index: int,
) -> Decision:
    """What to do with a step call, from the recorded step at its index (no I/O).

    `replaying` is a replay (nothing executes, so a step recorded STARTED or WAITING
    stops it instead of resuming); `complete` says the recording is of a finished run,
    so a step it lacks is a divergence rather than the end of a prefix. A recorded
    `request_hash` is compared with the requested LLM request hash or input hash.
    """
    if recorded is None:
        if not replaying:
            return Decision(Action.EXECUTE)
        if not complete:
            return Decision(Action.STOP)
        return Decision(Action.DIVERGE, found=f"no step (the recording ends at step {last_index})")
    if recorded.name != requested.name or recorded.kind != requested.kind:
        return Decision(Action.DIVERGE, recorded, f"{recorded.kind} {recorded.name!r}")
    for wanted, what in ((requested.request_hash, "request"), (requested.input_hash, "input")):
        # A recording made before hashes were kept (None) is not compared.
        if wanted is not None and recorded.request_hash not in (None, wanted):
            assert recorded.request_hash is not None
            found = f"{requested.describe()} with {what} hash {recorded.request_hash[:12]}"
            return Decision(Action.DIVERGE, recorded, found)
    if recorded.status in FINISHED_STEP:
        return Decision(Action.REPLAY, recorded)
    if replaying:
        return Decision(Action.STOP, recorded)
    return Decision(Action.RESUME, recorded)


@dataclass
class Outcome(Generic[T]):
    """How a step's attempts ended: a value, the last error, or a commit found later."""

    attempts: int
    value: T | None = None
    error: Exception | None = None
    committed: StepInfo | None = None
    """A transactional attempt whose commit went through although its answer was lost."""


@dataclass(frozen=True)
class Pause:
    """What a step kind gives `Attempts` so a long wait between attempts releases the run.

    Without it a step waits in process, at most the policy's `max_delay`. With it, a
    wait longer than `IN_PROCESS_WAIT_SECONDS` (a provider's `Retry-After: 3600`, a long
    backoff) records `step` WAITING with the attempts spent and the time of the next
    one (`output.retry_at`, the last error as its error), and releases the run as
    WAITING until then. When the run resumes, the step kind finds the WAITING step
    (`decide` answers RESUME) and passes it as `resumed`: the attempts continue from
    the recorded count. Only for a step that runs alone (an LLM step): a release while
    sibling steps are in flight would abandon them.
    """

    step: StepInfo
    """The step as it would be recorded (run, index, name, kind, request hash...)."""
    input_data: Any = None
    resumed: StepInfo | None = None
    """The step recorded WAITING between attempts that this execution continues."""


class Attempts:
    """The one retry loop: attempts of a step under its policy, until one succeeds.

    `fatal` exceptions leave the loop at once (raised to the caller, e.g. a tool's
    `UncertainEffect`); with `transactional`, database faults of the step's own
    transaction are retried or settled (see `TransactionFaults`). `pause` lets a long
    wait release the run (see `Pause`); `on_retry(next_attempt, error)` is called
    before each wait, so a stream can say the attempt restarts.
    """

    def __init__(
        self,
        ctx: RunContext,
        policy: RetryPolicy,
        *,
        index: int,
        transactional: bool = False,
        fatal: tuple[type[BaseException], ...] = (),
        pause: Pause | None = None,
        on_retry: Callable[[int, Exception], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.fatal = fatal
        self.faults = TransactionFaults(ctx, index) if transactional else None
        self.pause = pause
        self.on_retry = on_retry

    async def run(self, attempt: Callable[[int], Awaitable[T]]) -> Outcome[T]:
        number = await self._resume()
        while True:
            number += 1
            try:
                return Outcome(number, value=await attempt(number))
            except Exception as exc:
                verdict = (
                    await asyncio.to_thread(self._verdict, exc)
                    if self.faults is not None
                    else self._verdict(exc)
                )
                if verdict == "committed":
                    return Outcome(number, committed=self._committed())
                if verdict == "retry":
                    number -= 1  # the database's fault, not the step's: no attempt spent
                    await asyncio.sleep(self._pause())
                    continue
                if self.pause is None:
                    delay = self.policy.delay(number, exc)
                else:  # the full wait: a long one releases the run instead
                    delay = self.policy.wait(number, exc)
                if delay is None:
                    return Outcome(number, error=exc)
                if self.on_retry is not None:
                    self.on_retry(number + 1, exc)
                if self.pause is not None and delay > _in_process_limit():
                    await self._release(number, exc, delay)
                await asyncio.sleep(delay)

    async def _resume(self) -> int:
        """The attempts a resumed WAITING step already spent (0 for a fresh step), after
        waiting for the recorded time of the next one (or releasing the run again)."""
        recorded = self.pause.resumed if self.pause is not None else None
        if recorded is None or recorded.status != "WAITING":
            return 0
        if self.ctx.replay:  # replay executes nothing: the recording ends here
            from agentdur.context import ReplayStopped

            raise ReplayStopped
        until = datetime.fromisoformat((recorded.output or {})["retry_at"])
        remaining = (until - self.ctx.clock()).total_seconds()
        if remaining > _in_process_limit():
            await self._suspend(until)
        if remaining > 0:
            await asyncio.sleep(remaining)
        self.ctx.check_signals()
        return recorded.attempts

    async def _release(self, number: int, exc: Exception, delay: float) -> NoReturn:
        """Record the step WAITING after attempt `number` and release the run until its
        next attempt. Two writes: a crash between them leaves a RUNNING run whose
        recovery resumes the WAITING step, which releases it again."""
        assert self.pause is not None
        ctx = self.ctx
        until = ctx.clock() + timedelta(seconds=delay)
        waiting = replace(self.pause.step, status="WAITING", attempts=number, finished_at=None)
        await ctx.arecord(
            waiting,
            input_data=self.pause.input_data,
            output_data={"retry_at": until.isoformat()},
            error_data=codec.encode_error(exc),
        )
        await self._suspend(until)

    async def _suspend(self, until: datetime) -> NoReturn:
        ctx = self.ctx
        await ctx.write(
            lambda: ctx.store.suspend_run(
                ctx.run_id, epoch=ctx.epoch, status="WAITING", wake_at=until, error_json=None
            )
        )
        ctx.waiting()

    def run_sync(self, attempt: Callable[[int], T]) -> Outcome[T]:
        """Blocking form of `run`, for sync steps (they run in worker threads)."""
        number = 0
        while True:
            number += 1
            try:
                return Outcome(number, value=attempt(number))
            except Exception as exc:
                verdict = self._verdict(exc)
                if verdict == "committed":
                    return Outcome(number, committed=self._committed())
                if verdict == "retry":
                    number -= 1
                    time.sleep(self._pause())
                    continue
                delay = self.policy.delay(number, exc)
                if delay is None:
                    return Outcome(number, error=exc)
                time.sleep(delay)

    def _verdict(self, exc: Exception) -> str:
        """ "failed" (the step's own failure), or for a transaction "retry"/"committed".

        Signals, recording failures and fatal exceptions are raised from here.
        """
        self.ctx.check_signals()
        if isinstance(exc, RECORDING_FAILURES + self.fatal):
            raise exc
        return self.faults.verdict(exc) if self.faults is not None else "failed"

    def _committed(self) -> StepInfo:
        assert self.faults is not None and self.faults.committed is not None
        return self.faults.committed

    def _pause(self) -> float:
        assert self.faults is not None
        return self.faults.pause()


def _in_process_limit() -> float:
    """The longest wait slept in process (`workflow.IN_PROCESS_WAIT_SECONDS`, shared with
    durable sleep; imported here because workflow.py imports this module)."""
    from agentdur.workflow import IN_PROCESS_WAIT_SECONDS

    return IN_PROCESS_WAIT_SECONDS
