"""The step kernel: how every kind of step meets the recording, and how it is attempted.

Every step call, whatever its kind (a user `@step`, a transaction, an LLM call, a tool
call by effect, `recv`, `sleep`, an approval), goes through the same stages:

1. **Decide**, without I/O: `decide(recorded, requested)` compares what the recording
   holds at the step's index with what the code asks for now, and answers one of
   `REPLAY` (return the recorded outcome), `EXECUTE` (nothing recorded: run it live),
   `RESUME` (recorded STARTED or WAITING when the run stopped: the step kind settles it,
   by reconcile, a reviewer's decision or a message), `DIVERGE` (the code asks for
   another step, or an LLM step for another request) or `STOP` (a replay reached the
   end of an unfinished recording). `RunContext.look_up` applies it to a run.
2. **Attempt**, in the one retry loop, `Attempts`: the step's retry policy with backoff;
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

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

    `replaying` is a replay (nothing executes); `complete` says the recording is of a
    finished run, so a step it lacks is a divergence rather than the end of a prefix.
    """
    if recorded is None:
        if not replaying:
            return Decision(Action.EXECUTE)
        if not complete:
            return Decision(Action.STOP)
        return Decision(Action.DIVERGE, found=f"no step (the recording ends at step {last_index})")
    if recorded.name != requested.name or recorded.kind != requested.kind:
        return Decision(Action.DIVERGE, recorded, f"{recorded.kind} {recorded.name!r}")
    if (
        requested.request_hash is not None
        and recorded.request_hash is not None
        and recorded.request_hash != requested.request_hash
    ):
        found = f"{requested.describe()} with request hash {recorded.request_hash[:12]}"
        return Decision(Action.DIVERGE, recorded, found)
    if recorded.status in FINISHED_STEP:
        return Decision(Action.REPLAY, recorded)
    return Decision(Action.RESUME, recorded)


@dataclass
class Outcome(Generic[T]):
    """How a step's attempts ended: a value, the last error, or a commit found later."""

    attempts: int
    value: T | None = None
    error: Exception | None = None
    committed: StepInfo | None = None
    """A transactional attempt whose commit went through although its answer was lost."""


class Attempts:
    """The one retry loop: attempts of a step under its policy, until one succeeds.

    `fatal` exceptions leave the loop at once (raised to the caller, e.g. a tool's
    `UncertainEffect`); with `transactional`, database faults of the step's own
    transaction are retried or settled (see `TransactionFaults`).
    """

    def __init__(
        self,
        ctx: RunContext,
        policy: RetryPolicy,
        *,
        index: int,
        transactional: bool = False,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.fatal = fatal
        self.faults = TransactionFaults(ctx, index) if transactional else None

    async def run(self, attempt: Callable[[int], Awaitable[T]]) -> Outcome[T]:
        number = 0
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
                delay = self.policy.delay(number, exc)
                if delay is None:
                    return Outcome(number, error=exc)
                await asyncio.sleep(delay)

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
