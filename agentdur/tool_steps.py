"""Executing one tool step by its effect kind: the effect ledger, approval, dry runs.

- `read_only` and `idempotent` tools run (with retries) and are recorded in one write;
  `ctx.idempotency_key` is `run_id:index`, stable across retries and recovery.
- `side_effect` tools claim a ledger entry (keyed by the tool's domain key, or
  `run_id:index`) and record the step STARTED in one transaction *before* the call, then
  mark both done after it. A second call under a key whose effect is DONE does not run:
  it returns the first result, recorded as deduplicated. A tool that raises counts as
  not executed (the entry is released, the error goes to the model), unless it raises
  `UncertainEffect`. A step found STARTED after a crash is never re-run blindly: the
  tool's `reconcile` hook decides, or the run stops as NEEDS_ATTENTION.
- `transactional=True` tools get `ctx.db`, a connection whose transaction also writes
  the step's checkpoint: the tool's writes and the checkpoint commit together.
- A tool that needs approval records its step WAITING and releases the run until
  `Runtime.approve` delivers the decision.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from typing import Any, NoReturn

from agentdur import codec
from agentdur.context import RunContext, RunSuspended
from agentdur.errors import UncertainEffect
from agentdur.kernel import Attempts
from agentdur.retry import RetryPolicy
from agentdur.store import StepInfo
from agentdur.tools import Tool, ToolContext
from agentdur.transactions import transaction_scope

Outcome = tuple[StepInfo, BaseException | None]


_UNKNOWN = object()


def approval_topic(step_index: int) -> str:
    return f"approval:{step_index}"


class _InFlight:
    """The tool executions of one run under way in this process (one turn's calls).

    A call that must release the run (WAITING for approval, NEEDS_ATTENTION) waits until
    its siblings have finished and recorded their outcomes: released earlier, the run
    would refuse their checkpoints, and an effect that did happen would stay STARTED.
    """

    def __init__(self) -> None:
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.running += 1
        self.idle.clear()

    def leave(self) -> None:
        self.running -= 1
        if self.running == 0:
            self.idle.set()


def _in_flight(ctx: RunContext) -> _InFlight:
    flight = ctx.values.get("tools_in_flight")
    if not isinstance(flight, _InFlight):
        flight = ctx.values["tools_in_flight"] = _InFlight()
    return flight


class ToolExecution:
    """One execution (or continuation) of a tool step whose arguments are valid."""

    def __init__(
        self,
        ctx: RunContext,
        info: StepInfo,
        tool: Tool,
        arguments: dict[str, Any],
        input_data: dict[str, Any],
        recorded: StepInfo | None,
        *,
        dry_run: bool,
        needs_approval: bool,
    ) -> None:
        self.ctx = ctx
        self.info = info
        self.tool = tool
        self.arguments = arguments
        self.input_data = input_data
        self.input_json = codec.dumps(input_data)
        self.recorded = recorded
        self.dry_run = dry_run
        self.needs_approval = needs_approval
        self.policy = RetryPolicy(retries=tool.retries, backoff=1.0, max_delay=30.0)
        self.flight = _in_flight(ctx)
        self.counted = False

    async def run(self) -> Outcome:
        self.flight.enter()
        self.counted = True
        try:
            return await self._run()
        finally:
            if self.counted:
                self.flight.leave()

    async def _run(self) -> Outcome:
        simulated = self.dry_run and self.tool.effect == "side_effect"
        if self.tool.effect == "side_effect" and not self.tool.transactional:
            # The ledger key is the step's idempotency key from the start, so a step
            # recorded WAITING for approval already carries the key it will claim.
            key = self.tool.domain_key(self.arguments) or self.info.idempotency_key or ""
            self.info = replace(self.info, idempotency_key=key)
        if self.needs_approval and not simulated:  # nothing to approve in a dry run
            decision = await self._approval()
            if not decision.get("approved"):
                note = decision.get("note")
                message = "a human reviewer denied this call" + (f": {note}" if note else "")
                error = {"type": "ApprovalDenied", "message": message}
                return await self._record_error(1, error), None
        if simulated:
            return await self._simulate(), None
        if self.tool.transactional:
            return await self._transactional()
        if self.tool.effect == "side_effect":
            return await self._side_effect()
        return await self._plain()

    # -- helpers -----------------------------------------------------------------------

    def _tool_ctx(self, attempt: int, *, db: Any = None) -> ToolContext:
        return ToolContext(
            run_id=self.ctx.run_id,
            step_index=self.info.step_index,
            idempotency_key=self.info.idempotency_key or "",
            attempt=attempt,
            dry_run=self.dry_run,
            db=db,
            tool_name=self.tool.name,
        )

    def _done(self, status: str, attempts: int, **changes: Any) -> StepInfo:
        return replace(
            self.info, status=status, attempts=attempts, finished_at=self.ctx.clock(), **changes
        )

    def _output(self, result: Any) -> Any:
        what = f"the result of tool step {self.info.step_index} {self.tool.name!r}"
        return codec.to_json(result, what=what)

    async def _record_error(self, attempts: int, error: dict[str, Any]) -> StepInfo:
        return await self.ctx.arecord(
            self._done("ERROR", attempts), input_data=self.input_data, error_data=error
        )

    async def _siblings(self) -> bool:
        """True if other tool calls of this run are under way (they start with this one)."""
        await asyncio.sleep(0)  # the turn's other calls start (and count) on this tick
        return self.flight.running > 1

    async def _wait_for_siblings(self) -> None:
        """Before releasing the run: wait until the other calls have recorded their outcome.

        Raises RunSuspended if one of them released the run meanwhile.
        """
        self.flight.leave()
        self.counted = False
        await asyncio.sleep(0)
        while self.flight.running > 0:
            await self.flight.idle.wait()
        self.ctx.check_signals()
        self.flight.enter()
        self.counted = True

    def _attempts(self, **options: Any) -> Attempts:
        return Attempts(self.ctx, self.policy, index=self.info.step_index, **options)

    # -- effect kinds ------------------------------------------------------------------

    async def _plain(self) -> Outcome:
        outcome = await self._attempts().run(
            lambda attempt: self.tool.call(self.arguments, self._tool_ctx(attempt))
        )
        if outcome.error is not None:
            error = codec.encode_error(outcome.error)
            return await self._record_error(outcome.attempts, error), outcome.error
        step = await self.ctx.arecord(
            self._done("SUCCEEDED", outcome.attempts),
            input_data=self.input_data,
            output_data=self._output(outcome.value),
        )
        return step, None

    async def _side_effect(self) -> Outcome:
        ctx, store = self.ctx, self.ctx.store
        key = self.info.idempotency_key or ""
        if self.recorded is not None and self.recorded.status == "STARTED":
            known = ctx.unwritten.pop((ctx.run_id, self.info.step_index), _UNKNOWN)
            if known is not _UNKNOWN:  # this process saw the call end, the database did not
                return await self._finish(key, known, self.recorded.attempts), None
            if not self.tool.has_reconcile:
                await self._needs_attention(
                    f"tool {self.tool.name!r} started at step {self.info.step_index} but its "
                    "outcome was never recorded (the process stopped during the call), and the "
                    "tool has no reconcile hook to ask whether the effect happened"
                )
            try:
                outcome = await self.tool.call_reconcile(self._tool_ctx(1))
            except Exception as exc:  # cannot tell: an operator must decide, not the run fail
                await self._needs_attention(
                    f"the reconcile hook of tool {self.tool.name!r} (step "
                    f"{self.info.step_index}) raised {type(exc).__name__}: {exc}; resolve the "
                    "step once you know whether the effect happened"
                )
            if outcome is not None:
                return await self._finish(key, outcome, 1), None
        started, now = replace(self.info, status="STARTED"), ctx.clock()
        existing = await ctx.write(
            lambda: store.begin_effect(
                started, epoch=ctx.epoch, key=key, input_json=self.input_json, now=now
            )
        )
        if existing is not None:
            if existing.status == "DONE":  # begin_effect recorded the step deduplicated
                step = replace(
                    self.info,
                    status="SUCCEEDED",
                    attempts=1,
                    finished_at=now,
                    deduplicated=True,
                    input=self.input_data,
                    output=existing.result,
                )
                ctx.remember(step)
                return step, None
            # Record the step STARTED (without the entry, which stays the holder's) with
            # the suspension, so the operator can resolve it: `retry` asks the ledger again.
            await self._needs_attention(
                f"the effect key {key!r} is held by run {existing.run_id} step "
                f"{existing.step_index}, whose outcome is not known",
                step=started,
            )
        try:
            called = await self._attempts(fatal=(UncertainEffect,)).run(
                lambda attempt: self.tool.call(self.arguments, self._tool_ctx(attempt))
            )
        except UncertainEffect as exc:
            await self._needs_attention(f"tool {self.tool.name!r} cannot tell: {exc}")
        if called.error is None:
            return await self._finish(key, called.value, called.attempts), None
        error = codec.encode_error(called.error)
        step = self._done("ERROR", called.attempts)
        await ctx.write(
            functools.partial(
                store.release_effect,
                step,
                epoch=ctx.epoch,
                key=key,
                input_json=self.input_json,
                error_json=codec.dumps(error),
            ),
            records=replace(step, input=self.input_data, error=error),
        )
        return ctx.recorded[step.step_index], called.error

    async def _finish(self, key: str, result: Any, attempts: int) -> StepInfo:
        ctx = self.ctx
        output = self._output(result)
        step = self._done("SUCCEEDED", attempts)
        output_json, now = codec.dumps(output), ctx.clock()
        done = replace(step, input=self.input_data, output=output)
        try:
            await ctx.write(
                lambda: ctx.store.finish_effect(
                    step,
                    epoch=ctx.epoch,
                    key=key,
                    input_json=self.input_json,
                    output_json=output_json,
                    now=now,
                ),
                records=done,
            )
        except RunSuspended:
            if ctx.suspended == "RELEASED":  # kept, to settle the step when it resumes here
                ctx.unwritten[(ctx.run_id, step.step_index)] = result
            raise
        return done

    async def _needs_attention(self, reason: str, *, step: StepInfo | None = None) -> NoReturn:
        """Release the run as NEEDS_ATTENTION with the reason (and `step`, written with it)."""
        ctx = self.ctx
        await self._wait_for_siblings()
        error = {
            "type": "NeedsAttention",
            "message": reason,
            "step_index": self.info.step_index,
            "tool": self.tool.name,
        }
        if step is None:
            await ctx.suspend("NEEDS_ATTENTION", reason=error)
        error_json = codec.dumps(error)
        await ctx.write(
            lambda: ctx.store.suspend_run(
                ctx.run_id,
                epoch=ctx.epoch,
                status="NEEDS_ATTENTION",
                wake_at=None,
                error_json=error_json,
                step=step,
                input_json=self.input_json,
            ),
            records=replace(step, input=self.input_data),
        )
        ctx.suspended = "NEEDS_ATTENTION"
        raise RunSuspended("NEEDS_ATTENTION")

    async def _transactional(self) -> Outcome:
        async def attempt(number: int) -> StepInfo:
            async with transaction_scope(self.ctx) as (conn, cur):
                result = await self.tool.call(self.arguments, self._tool_ctx(number, db=conn))
                return await self.ctx.arecord(
                    self._done("SUCCEEDED", number),
                    input_data=self.input_data,
                    output_data=self._output(result),
                    cur=cur,
                )

        outcome = await self._attempts(transactional=True).run(attempt)
        if outcome.committed is not None:
            return outcome.committed, None
        if outcome.error is not None:
            error = codec.encode_error(outcome.error)
            return await self._record_error(outcome.attempts, error), outcome.error
        assert outcome.value is not None
        return outcome.value, None

    async def _simulate(self) -> StepInfo:
        """A dry run: the simulate hook answers, or the model is told nothing happened."""
        if self.tool.has_simulate:
            result = await self.tool.call_simulate(self.arguments, self._tool_ctx(1))
            output = self._output(result)
        else:
            output = {
                "simulated": True,
                "message": f"DRY RUN: {self.tool.name} was NOT executed and nothing happened in "
                "the outside world; this result is simulated. Do not tell the user it was done.",
            }
        return await self.ctx.arecord(
            self._done("SUCCEEDED", 1, dry_run=True),
            input_data=self.input_data,
            output_data=output,
        )

    async def _approval(self) -> dict[str, Any]:
        """The reviewer's decision, or release the run WAITING for one."""
        ctx = self.ctx
        found, value = False, None
        if await self._siblings():
            found, value = await self._take_decision(wait=False)
            if not found:
                # Recorded now, while the run is ours, so the reviewer sees every call of
                # the turn that waits; the run is released once the others have finished.
                waiting = replace(self.info, status="WAITING", finished_at=None)
                await ctx.arecord(waiting, input_data=self.input_data)
                await self._wait_for_siblings()
        if not found:
            found, value = await self._take_decision(wait=True)
        if not found:
            ctx.waiting()
        return value if isinstance(value, dict) else {"approved": bool(value)}

    async def _take_decision(self, *, wait: bool) -> tuple[bool, Any]:
        """Read the decision; with `wait`, record the step WAITING and release the run if
        there is none (one transaction, the run row locked: no decision is missed)."""
        ctx = self.ctx
        return await ctx.write(
            lambda: ctx.store.take_or_wait(
                self.info,
                epoch=ctx.epoch,
                topic=approval_topic(self.info.step_index),
                consume=False,
                input_json=self.input_json,
                wake_at=None,
                wait=wait,
            )
        )
