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
from typing import Any

from agentdur import codec
from agentdur.context import RunContext
from agentdur.errors import UncertainEffect
from agentdur.retry import RetryPolicy
from agentdur.store import StepInfo
from agentdur.tools import Tool, ToolContext

Outcome = tuple[StepInfo, BaseException | None]


def approval_topic(step_index: int) -> str:
    return f"approval:{step_index}"


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

    async def run(self) -> Outcome:
        if self.needs_approval:
            decision = self._approval()
            if not decision.get("approved"):
                note = decision.get("note")
                message = "a human reviewer denied this call" + (f": {note}" if note else "")
                error = {"type": "ApprovalDenied", "message": message}
                return self._record_error(1, error), None
        if self.dry_run and self.tool.effect == "side_effect":
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

    def _record_error(self, attempts: int, error: dict[str, Any]) -> StepInfo:
        return self.ctx.record(
            self._done("ERROR", attempts), input_data=self.input_data, error_data=error
        )

    async def _backoff(self, attempt: int, exc: Exception) -> bool:
        delay = self.policy.delay(attempt, exc)
        if delay is None:
            return False
        await asyncio.sleep(delay)
        return True

    # -- effect kinds ------------------------------------------------------------------

    async def _plain(self) -> Outcome:
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self.tool.call(self.arguments, self._tool_ctx(attempt))
            except Exception as exc:
                if await self._backoff(attempt, exc):
                    continue
                return self._record_error(attempt, codec.encode_error(exc)), exc
            step = self.ctx.record(
                self._done("SUCCEEDED", attempt),
                input_data=self.input_data,
                output_data=self._output(result),
            )
            return step, None

    async def _side_effect(self) -> Outcome:
        ctx, store = self.ctx, self.ctx.store
        key = self.tool.domain_key(self.arguments) or self.info.idempotency_key or ""
        self.info = replace(self.info, idempotency_key=key)
        if self.recorded is not None and self.recorded.status == "STARTED":
            if not self.tool.has_reconcile:
                self._needs_attention(
                    f"tool {self.tool.name!r} started at step {self.info.step_index} but its "
                    "outcome was never recorded (the process stopped during the call), and the "
                    "tool has no reconcile hook to ask whether the effect happened"
                )
            outcome = await self.tool.call_reconcile(self._tool_ctx(1))
            if outcome is not None:
                return self._finish(key, outcome, 1), None
        started = replace(self.info, status="STARTED")
        existing = ctx.guarded(
            lambda: store.begin_effect(
                started, epoch=ctx.epoch, key=key, input_json=self.input_json, now=ctx.clock()
            )
        )
        if existing is not None:
            if existing.status == "DONE":
                step = ctx.record(
                    self._done("SUCCEEDED", 1, deduplicated=True),
                    input_data=self.input_data,
                    output_data=existing.result,
                )
                return step, None
            self._needs_attention(
                f"the effect key {key!r} is held by run {existing.run_id} step "
                f"{existing.step_index}, whose outcome is not known"
            )
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self.tool.call(self.arguments, self._tool_ctx(attempt))
            except UncertainEffect as exc:
                self._needs_attention(f"tool {self.tool.name!r} cannot tell: {exc}")
            except Exception as exc:
                if await self._backoff(attempt, exc):
                    continue
                error = codec.encode_error(exc)
                step = self._done("ERROR", attempt)
                ctx.guarded(
                    functools.partial(
                        store.release_effect,
                        step,
                        epoch=ctx.epoch,
                        key=key,
                        input_json=self.input_json,
                        error_json=codec.dumps(error),
                    )
                )
                ctx.recorded[step.step_index] = replace(step, input=self.input_data, error=error)
                return ctx.recorded[step.step_index], exc
            return self._finish(key, result, attempt), None

    def _finish(self, key: str, result: Any, attempts: int) -> StepInfo:
        ctx = self.ctx
        output = self._output(result)
        step = self._done("SUCCEEDED", attempts)
        ctx.guarded(
            lambda: ctx.store.finish_effect(
                step,
                epoch=ctx.epoch,
                key=key,
                input_json=self.input_json,
                output_json=codec.dumps(output),
                now=ctx.clock(),
            )
        )
        done = replace(step, input=self.input_data, output=output)
        ctx.recorded[step.step_index] = done
        return done

    def _needs_attention(self, reason: str) -> None:
        self.ctx.suspend(
            "NEEDS_ATTENTION",
            reason={
                "type": "NeedsAttention",
                "message": reason,
                "step_index": self.info.step_index,
                "tool": self.tool.name,
            },
        )

    async def _transactional(self) -> Outcome:
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.ctx.store.dedicated_transaction() as (conn, cur):
                    result = await self.tool.call(self.arguments, self._tool_ctx(attempt, db=conn))
                    step = self.ctx.record(
                        self._done("SUCCEEDED", attempt),
                        input_data=self.input_data,
                        output_data=self._output(result),
                        cur=cur,
                    )
                return step, None
            except Exception as exc:
                self.ctx.check_signals()
                if await self._backoff(attempt, exc):
                    continue
                return self._record_error(attempt, codec.encode_error(exc)), exc

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
        return self.ctx.record(
            self._done("SUCCEEDED", 1, dry_run=True),
            input_data=self.input_data,
            output_data=output,
        )

    def _approval(self) -> dict[str, Any]:
        """The reviewer's decision, or release the run WAITING for one."""
        ctx = self.ctx
        found, value = ctx.guarded(
            lambda: ctx.store.take_or_wait(
                self.info,
                epoch=ctx.epoch,
                topic=approval_topic(self.info.step_index),
                consume=False,
                input_json=self.input_json,
                wake_at=None,
            )
        )
        if not found:
            ctx.waiting()
        return value if isinstance(value, dict) else {"approved": bool(value)}
