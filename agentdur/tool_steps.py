"""Executing one tool step by its effect kind: the effect ledger, approval, dry runs.

- `read_only` and `idempotent` tools run (with retries) and are recorded in one write;
  `ctx.idempotency_key` is `run_id:index`, stable across retries and recovery.
- `side_effect` tools claim a ledger entry (keyed by the tool's domain key, prefixed by
  the run's key scope, or `run_id:index`) and record the step STARTED in one transaction
  *before* the call, then mark both done after it. A second call under a key whose
  effect is DONE does not run: it returns the first result, recorded as deduplicated; a
  key held by a call of the same turn waits for that call's outcome. A tool that raises
  counts as not executed (the entry is released, the error goes to the model), unless
  the exception leaves the effect uncertain (`UncertainEffect`, a transport timeout or
  disconnect after sending: see uncertain.py), which `reconcile` settles or the run stops
  as NEEDS_ATTENTION. A step found STARTED after a crash is never re-run blindly: the
  tool's `reconcile` hook decides, or the run stops as NEEDS_ATTENTION, naming every
  call of the turn left so.
- Any tool may raise `NotApplied(text)`: the step is recorded as not applied, never
  retried, a ledger entry is released, and the model is told exactly the text.
- In a dry-run fork only `read_only` tools execute; the others are simulated.
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
from agentdur.errors import NotApplied, UncertainEffect, ValueTooLarge
from agentdur.kernel import Attempts
from agentdur.retry import RetryPolicy
from agentdur.store import StepInfo, payloads
from agentdur.store.core import Effect as LedgerEntry
from agentdur.tools import Tool, ToolContext
from agentdur.transactions import transaction_scope
from agentdur.uncertain import is_uncertain

Outcome = tuple[StepInfo, BaseException | None]


_UNKNOWN = object()


def approval_topic(step_index: int) -> str:
    return f"approval:{step_index}"


def not_applied_error(exc: NotApplied) -> dict[str, Any]:
    """How a `NotApplied` refusal is recorded: the model is told exactly its message."""
    return {"type": "NotApplied", "message": str(exc)}


class _Uncertain(UncertainEffect):
    """A side-effecting call failed in a way that may come after its request was sent."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(
            f"{type(exc).__name__}: {exc} (raised after its request may have been sent)"
        )
        self.original = exc


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
        self.finished: dict[int, asyncio.Event] = {}
        """Per step index of a call under way here: set once the call has ended."""
        self.attention: list[tuple[dict[str, Any], StepInfo | None, str]] = []
        """The calls of this turn that stop the run NEEDS_ATTENTION: (what the run's
        error says of it, its STARTED step to record or None, its input JSON)."""
        self.attention_written: asyncio.Event | None = None
        """Set once one of them has written the run's suspension for all of them."""

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
        input_data: Any,
        recorded: StepInfo | None,
        *,
        dry_run: bool,
        needs_approval: bool,
        key_scope: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.key_scope = key_scope
        self.info = info
        self.tool = tool
        self.arguments = arguments
        self.input_data = payloads.full(input_data)
        """The step's input in memory; `record_input` is what is written (it may name the
        LLM step's call instead of repeating its id and arguments, payloads.py)."""
        self.record_input = input_data
        self.input_json = codec.dumps(payloads.stored(input_data))
        self.recorded = recorded
        self.dry_run = dry_run
        self.needs_approval = needs_approval
        self.policy = RetryPolicy(retries=tool.retries, backoff=1.0, max_delay=30.0)
        self.flight = _in_flight(ctx)
        self.counted = False
        self.attempt = 1

    async def run(self) -> Outcome:
        self.flight.enter()
        self.counted = True
        finished = self.flight.finished[self.info.step_index] = asyncio.Event()
        try:
            return await self._run()
        finally:
            finished.set()
            if self.counted:
                self.flight.leave()

    async def _run(self) -> Outcome:
        simulated = self.dry_run and self.tool.effect != "read_only"
        if self.tool.effect == "side_effect" and not self.tool.transactional:
            # The ledger key is the step's idempotency key from the start, so a step
            # recorded WAITING for approval already carries the key it will claim.
            domain = self.tool.domain_key(self.arguments)
            if domain is not None and self.key_scope:
                domain = f"{self.key_scope}/{domain}"
            key = domain or self.info.idempotency_key or ""
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
            arguments=self.arguments,
            fencing_token=self.ctx.epoch,
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
            self._done("ERROR", attempts), input_data=self.record_input, error_data=error
        )

    async def _siblings(self) -> bool:
        """True if other tool calls of this run are under way (they start with this one)."""
        await asyncio.sleep(0)  # the turn's other calls start (and count) on this tick
        return self.flight.running > 1

    async def _wait_for(self, finished: asyncio.Event) -> None:
        """Wait, not counted as under way, until a sibling call has ended."""
        self.flight.leave()
        self.counted = False
        await finished.wait()
        self.ctx.check_signals()
        self.flight.enter()
        self.counted = True

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

    async def _call(self, attempt: int) -> Any:
        self.attempt = attempt
        return await self.tool.call(self.arguments, self._tool_ctx(attempt))

    async def _plain(self) -> Outcome:
        try:
            outcome = await self._attempts(fatal=(NotApplied,)).run(self._call)
        except NotApplied as exc:
            return await self._record_error(self.attempt, not_applied_error(exc)), None
        if outcome.error is not None:
            error = codec.encode_error(outcome.error)
            return await self._record_error(outcome.attempts, error), outcome.error
        try:
            step = await self.ctx.arecord(
                self._done("SUCCEEDED", outcome.attempts),
                input_data=self.record_input,
                output_data=self._output(outcome.value),
            )
        except ValueTooLarge as exc:  # safe to call again: the model may ask for less
            error = {k: v for k, v in codec.encode_error(exc).items() if k != "traceback"}
            return await self._record_error(outcome.attempts, error), exc
        return step, None

    async def _side_effect(self) -> Outcome:
        ctx = self.ctx
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
        started = replace(self.info, status="STARTED")
        existing = await self._claim(key, started)
        if isinstance(existing, StepInfo):
            return existing, None
        if existing is not None:
            # Record the step STARTED (without the entry, which stays the holder's) with
            # the suspension, so the operator can resolve it: `retry` asks the ledger again.
            await self._needs_attention(
                f"the effect key {key!r} is held by run {existing.run_id} step "
                f"{existing.step_index}, whose outcome is not known",
                step=started,
            )
        try:
            called = await self._attempts(fatal=(UncertainEffect, NotApplied)).run(self._guarded)
        except NotApplied as exc:
            return await self._release(key, not_applied_error(exc)), None
        except UncertainEffect as exc:
            return await self._uncertain(key, exc)
        if called.error is None:
            return await self._finish(key, called.value, called.attempts), None
        self.attempt = called.attempts
        return await self._release(key, codec.encode_error(called.error)), called.error

    async def _claim(self, key: str, started: StepInfo) -> LedgerEntry | StepInfo | None:
        """Claim the ledger entry: None when it is ours, the step recorded deduplicated
        when the key's effect is done, else the entry of the key's holder.

        A holder that is a call of this turn still under way here is waited for: once it
        has an outcome, this call is deduplicated (it applied) or claims the key (not).
        """
        ctx, store = self.ctx, self.ctx.store
        while True:
            now = ctx.clock()
            existing = await ctx.write(
                functools.partial(
                    store.begin_effect,
                    started,
                    epoch=ctx.epoch,
                    key=key,
                    input_json=self.input_json,
                    now=now,
                )
            )
            if existing is None:
                return None
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
                return step
            sibling = self.flight.finished.get(existing.step_index)
            if existing.run_id != ctx.run_id or sibling is None or sibling.is_set():
                return existing
            await self._wait_for(sibling)

    async def _guarded(self, attempt: int) -> Any:
        """One call of a side-effecting tool; an exception after which the effect may
        have happened becomes an `UncertainEffect` (never retried)."""
        try:
            return await self._call(attempt)
        except (UncertainEffect, NotApplied):
            raise
        except Exception as exc:
            if is_uncertain(exc, self.tool.uncertain_on):
                raise _Uncertain(exc) from exc
            raise

    async def _uncertain(self, key: str, exc: UncertainEffect) -> Outcome:
        """The call may have taken effect: its reconcile hook says, or an operator."""
        reason = f"tool {self.tool.name!r} cannot tell: {exc}"
        if not self.tool.has_reconcile:
            await self._needs_attention(reason)
        try:
            outcome = await self.tool.call_reconcile(self._tool_ctx(self.attempt))
        except Exception as failure:
            await self._needs_attention(
                f"{reason}; its reconcile hook raised {type(failure).__name__}: {failure}"
            )
        if outcome is not None:
            return await self._finish(key, outcome, self.attempt), None
        # The effect did not happen: the call counts as not executed.
        original = exc.original if isinstance(exc, _Uncertain) else exc
        if not isinstance(original, Exception):
            original = exc
        return await self._release(key, codec.encode_error(original)), original

    async def _release(self, key: str, error: dict[str, Any]) -> StepInfo:
        """The call did not take effect: free the ledger entry and record the error."""
        ctx = self.ctx
        step = self._done("ERROR", self.attempt)
        await ctx.write(
            functools.partial(
                ctx.store.release_effect,
                step,
                epoch=ctx.epoch,
                key=key,
                input_json=self.input_json,
                error_json=codec.dumps(error),
            ),
            records=replace(step, input=self.input_data, error=error),
        )
        return ctx.recorded[step.step_index]

    async def _finish(self, key: str, result: Any, attempts: int) -> StepInfo:
        ctx = self.ctx
        output = self._output(result)
        step = self._done("SUCCEEDED", attempts)
        what = f"the result of tool step {step.step_index} {self.tool.name!r}"
        try:
            output_json = codec.dumps(output, what=what, limit=ctx.store.max_value_bytes)
        except ValueTooLarge as exc:
            # The effect happened: recorded as done (its key dedupes) without the result.
            output = {"result_not_recorded": str(exc)}
            output_json = codec.dumps(output)
        now = ctx.clock()
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
        """Release the run as NEEDS_ATTENTION with the reason (and `step`, written with it).

        The calls of a turn that need attention each add themselves, wait until the other
        calls have ended, and one of them writes the suspension naming all of them.
        """
        ctx, flight = self.ctx, self.flight
        entry = {"step_index": self.info.step_index, "tool": self.tool.name, "message": reason}
        recorded = None if step is None else replace(step, input=self.input_data)
        flight.attention.append((entry, recorded, self.input_json))
        await self._wait_for_siblings()
        if flight.attention_written is not None:  # another call of the turn writes it
            await flight.attention_written.wait()
            ctx.check_signals()
            raise RunSuspended("NEEDS_ATTENTION")
        flight.attention_written = written = asyncio.Event()
        stopped = sorted(flight.attention, key=lambda item: int(item[0]["step_index"]))
        first = stopped[0][0]
        error: dict[str, Any] = {"type": "NeedsAttention", **first}
        if len(stopped) > 1:
            listed = "; ".join(f"step {e['step_index']}: {e['message']}" for e, _, _ in stopped)
            error["message"] = f"{len(stopped)} tool calls need attention: {listed}"
            error["steps"] = [e for e, _, _ in stopped]
        steps = [(st, input_json) for _, st, input_json in stopped if st is not None]
        error_json = codec.dumps(error)
        try:
            await ctx.write(
                lambda: ctx.store.suspend_run(
                    ctx.run_id,
                    epoch=ctx.epoch,
                    status="NEEDS_ATTENTION",
                    wake_at=None,
                    error_json=error_json,
                    steps=steps,
                )
            )
        finally:
            written.set()
        for recorded_step, _ in steps:  # part of the write path: that write recorded them
            ctx.remember(recorded_step)
        ctx.suspended = "NEEDS_ATTENTION"
        raise RunSuspended("NEEDS_ATTENTION")

    async def _transactional(self) -> Outcome:
        async def attempt(number: int) -> StepInfo:
            self.attempt = number
            async with transaction_scope(self.ctx) as (conn, cur):
                result = await self.tool.call(self.arguments, self._tool_ctx(number, db=conn))
                return await self.ctx.arecord(
                    self._done("SUCCEEDED", number),
                    input_data=self.record_input,
                    output_data=self._output(result),
                    cur=cur,
                )

        try:
            outcome = await self._attempts(transactional=True, fatal=(NotApplied,)).run(attempt)
        except NotApplied as exc:  # its transaction was rolled back
            return await self._record_error(self.attempt, not_applied_error(exc)), None
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
            input_data=self.record_input,
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
                await ctx.arecord(waiting, input_data=self.record_input)
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
