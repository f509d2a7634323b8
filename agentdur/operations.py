"""Replay, fork and the operator's actions on runs (send, approve, resolve): a part of
the Runtime, composed with the engine rather than derived from it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from agentdur import codec
from agentdur.context import ReplayStopped
from agentdur.engine import Engine
from agentdur.errors import (
    NonDeterminismError,
    NotRegisteredError,
    RunNotFoundError,
    UsageError,
)
from agentdur.fork import plan_fork
from agentdur.handle import RunHandle
from agentdur.model_switch import resolve_model_choice
from agentdur.recording import difference
from agentdur.store import FINISHED, StepInfo
from agentdur.tool_steps import approval_topic
from agentdur.workflow import Workflow


class Operations:
    """What a developer or an operator does to recorded runs: a part of the Runtime.

    It works through the engine (the store, the registry, the loop that executes runs)
    and is composed into `Runtime`, which exposes its methods.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- messages, approvals, resolutions ----------------------------------------------

    def send(self, run_id: str, topic: str, value: Any = None) -> None:
        """Deliver a message to a run's `recv(topic)`; a run waiting for it continues.

        The run continues in this process if its workflow is registered here, else in
        any executor that recovers it.
        """
        what = f"the message on topic {topic!r}"
        data = codec.to_json(value, what=what)
        store = self.engine._ensure_store()
        value_json = codec.dumps(data, what=what, limit=store.max_value_bytes)
        status = store.send_message(run_id, topic, value_json=value_json, now=self.engine.clock())
        if status is None:
            raise RunNotFoundError(run_id)
        if status in FINISHED:
            raise UsageError(f"run {run_id!r} is {status}: it receives no more messages")
        self.engine._resume(run_id)

    def approve(
        self, run_id: str, step_index: int, *, approved: bool = True, note: str | None = None
    ) -> None:
        """Record a reviewer's decision on a tool call waiting for approval.

        An approved call executes; a denied one goes back to the model as the tool's
        result, with the note.
        """
        step = self._waiting_step(run_id, step_index, "WAITING", "approval")
        if step.kind != "tool":
            raise UsageError(f"step {step_index} of run {run_id!r} is not a tool call")
        self.send(run_id, approval_topic(step_index), {"approved": approved, "note": note})

    def resolve(self, run_id: str, step_index: int, action: str, value: Any = None) -> None:
        """Settle an uncertain side effect so the run (NEEDS_ATTENTION) can go on.

        Args:
            action: "retry" executes the tool again (you checked the effect did not
                happen); "result" records `value` as its result (it did happen);
                "fail" records it as failed with `value` as the message, which the
                model receives as the tool's error.
        """
        if action not in ("retry", "result", "fail"):
            raise UsageError(f"action must be 'retry', 'result' or 'fail', not {action!r}")
        self._waiting_step(run_id, step_index, "STARTED", "resolution")
        output = error = None
        if action == "result":
            output = codec.dumps(codec.to_json(value, what="the resolved result"))
        elif action == "fail":
            error = codec.dumps(
                {"type": "ResolvedAsFailed", "message": str(value or "failed (resolved)")}
            )
        try:
            self.engine.store.resolve_step(
                run_id,
                step_index,
                action=action,
                output_json=output,
                error_json=error,
                now=self.engine.clock(),
            )
        except ValueError as exc:
            raise UsageError(f"cannot resolve step {step_index} of run {run_id!r}: {exc}") from None
        self.engine._resume(run_id)

    def _waiting_step(self, run_id: str, index: int, status: str, what: str) -> StepInfo:
        run = self.engine.get_run(run_id)
        steps = {s.step_index: s for s in self.engine.store.steps(run_id)}
        step = steps.get(index)
        if step is None or step.status != status:
            found = "not recorded" if step is None else f"{step.kind} step, {step.status}"
            raise UsageError(
                f"step {index} of run {run_id!r} ({run.status}) is not waiting for {what} ({found})"
            )
        return step

    # -- replay and fork ---------------------------------------------------------------

    def replay(
        self,
        run_id: str,
        *,
        until: int | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> Any:
        """Blocking form of `areplay`."""
        if self.engine._in_loop_thread():
            raise UsageError(
                "rt.replay() would block the runtime's event loop: use `await rt.areplay()`"
            )
        return self.engine._loop_thread().submit(self._replay(run_id, until, on_step)).result()

    async def areplay(
        self,
        run_id: str,
        *,
        until: int | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> Any:
        """Re-execute a run's code against its recording: no network, no tool, no write.

        Returns the recorded output (None when stopped early by `until`, or at the end of
        the recording of an unfinished run), re-raises the recorded error of a failed run,
        or raises `NonDeterminismError` where the code asks for something else than the
        recording holds. `on_step(step)` is called for each step as it is replayed;
        `until=k` stops after step k.
        """
        future = self.engine._loop_thread().submit(self._replay(run_id, until, on_step))
        return await asyncio.wrap_future(future)

    async def _replay(
        self, run_id: str, until: int | None, on_step: Callable[[StepInfo], None] | None
    ) -> Any:
        # Read off the loop: it runs other people's coroutines, and a long run's recording
        # takes a while to load.
        run = await asyncio.to_thread(self.engine.get_run, run_id)
        wf = self._require_workflow(run.workflow)
        steps = await asyncio.to_thread(self.engine.store.steps, run_id)
        recorded = {s.step_index: s for s in steps if until is None or s.step_index <= until}
        ctx = self.engine._context(
            run_id,
            wf.name,
            epoch=run.epoch,
            recorded=recorded,
            metadata=run.metadata,
            replay=True,
            on_step=on_step,
        )
        ctx.replay_complete = until is None and run.status in ("SUCCEEDED", "FAILED")
        args, kwargs = wf.decode_input(run.input)
        try:
            output = await self.engine._execute(ctx, wf, args, kwargs)
        except ReplayStopped:
            return None
        if until is None and run.status == "SUCCEEDED":
            replayed = codec.to_json(output, what="the replayed output")
            if replayed != run.output:
                recorded_text, replayed_text = codec.dumps(run.output), codec.dumps(replayed)
                raise NonDeterminismError(
                    run_id,
                    len(steps),
                    f"output {recorded_text[:200]}",
                    f"another output, {difference(recorded_text, replayed_text)}",
                )
        return output

    def fork(
        self,
        run_id: str,
        at_step: int,
        *,
        new_run_id: str | None = None,
        response: Any = None,
        model: Any = None,
        dry_run: bool = False,
    ) -> RunHandle:
        """Start a new run from a recorded one: keep steps 0..at_step-1, run from at_step.

        Args:
            run_id: the source run (a fork of a fork works).
            at_step: the first step that is not kept. An LLM step there sends a new
                request, unless `response` is given.
            new_run_id: the fork's id; generated when left out.
            response: replaces the LLM response at `at_step` (a `ModelResponse`, a dict
                or JSON text of that shape; missing fields are filled in); the run
                continues after it and the step is recorded as edited.
            model: switch the model for the rest of the run: a `Model`, a model name for
                the agent's provider, or "provider:name" (openai, openai-responses,
                anthropic).
            dry_run: execute no `side_effect` tool: its `simulate` hook answers, or the
                model is told the call was simulated.

        Unknown run, `at_step` out of range or `response` on a non-LLM step raise an
        exception and write nothing.
        """
        source = self.engine.get_run(run_id)
        wf = self._require_workflow(source.workflow)
        loop = self.engine._loop_thread()
        model_meta, model_instance = resolve_model_choice(model)
        now = self.engine.clock()
        new_id = new_run_id or uuid.uuid4().hex
        run, copied = plan_fork(
            source,
            self.engine.store.steps(run_id),
            at_step,
            new_run_id=new_id,
            owner=self.engine.executor_id,
            now=now,
            lease_seconds=self.engine.lease_seconds,
            response=response,
            model=model_meta,
            dry_run=dry_run,
        )
        edited = [s for s in copied if s.step_index >= at_step]  # a replaced response
        if not self.engine.store.create_forked_run(
            run, input_json=codec.dumps(run.input), below=at_step, steps=edited
        ):
            raise UsageError(f"cannot fork into run id {new_id!r}: a run with that id exists")
        ctx = self.engine._context(
            new_id,
            wf.name,
            epoch=1,
            recorded={s.step_index: s for s in copied},
            metadata=run.metadata,
        )
        if model_instance is not None:
            ctx.values["model_instance"] = model_instance
        return RunHandle(self.engine, new_id, self.engine._launch(loop, ctx, wf, run.input))

    def _require_workflow(self, name: str) -> Workflow[Any]:
        wf = self.engine._find_workflow(name)
        if wf is None:
            raise NotRegisteredError(
                f"workflow {name!r} is not registered in this process: import the module "
                "that defines it (for an agent: the module that constructs it)",
                name=name,
            )
        return wf
