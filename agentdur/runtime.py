"""Runtime: the object an application creates to run durable workflows.

It owns the store, the executor identity, the background event loop every run executes
on, the heartbeat that extends this executor's leases, and recovery. Blocking methods
(`run`, `start`, `recover`, ...) are thin faces over work done on the runtime's loop;
their `a`-prefixed twins await the same work from any event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from agentdur import codec, recording
from agentdur.agent import Agent, AgentResult, Prompt, find_agent, resolve_model_choice
from agentdur.context import ReplayStopped, RunContext
from agentdur.errors import (
    FencedError,
    NonDeterminismError,
    NotRegisteredError,
    RunInputMismatchError,
    RunNotFoundError,
    UsageError,
)
from agentdur.fork import fork_settings, plan_fork
from agentdur.handle import RunHandle
from agentdur.loop import LoopThread
from agentdur.models import Usage
from agentdur.store import FINISHED, RunInfo, SqlStore, StepInfo, open_store
from agentdur.streaming import AgentStream
from agentdur.tool_steps import approval_topic
from agentdur.workflow import Workflow, find_workflow, lookup_workflow

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///agentdur.db"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Runtime:
    """Runs workflows durably against one database.

    Args:
        database_url: `sqlite:///path.db`, `sqlite:////abs/path.db` or
            `postgresql://user:password@host:port/db`; defaults to the environment
            variable AGENTDUR_DATABASE_URL, else `sqlite:///agentdur.db`.
        executor_id: this process's identity as an owner of runs. A restarted process
            with the same id resumes its own runs at once; defaults to
            AGENTDUR_EXECUTOR_ID, else "local". Processes that run at the same time
            against one database need distinct ids (workers make their own).
        recover: resume this executor's unfinished runs (and expired ones) when opened.
        auto_migrate: apply pending schema migrations when opened; when false an older
            schema is an error that says to run `agentdur db migrate`.
        lease_seconds: how long a run stays owned without a heartbeat.
        clock: the source of the current time (tests move it instead of sleeping).

    The constructor does no I/O: the store opens on first use, on `open()`, or on
    entering `with Runtime(...) as rt`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        executor_id: str | None = None,
        recover: bool = False,
        auto_migrate: bool = True,
        lease_seconds: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        url = database_url or os.environ.get("AGENTDUR_DATABASE_URL") or DEFAULT_DATABASE_URL
        self.store: SqlStore = open_store(url)
        self.executor_id = executor_id or os.environ.get("AGENTDUR_EXECUTOR_ID") or "local"
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._recover_on_open = recover
        self._auto_migrate = auto_migrate
        self._open_lock = threading.RLock()
        self._schema_checked = False
        self._loop: LoopThread | None = None
        self._heartbeat: concurrent.futures.Future[None] | None = None
        self._active: dict[str, RunContext] = {}
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._agents: dict[str, Agent] = {}

    @property
    def database_url(self) -> str:
        """The database URL, password masked."""
        return self.store.url

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Runtime:
        """Connect, check or migrate the schema, start the loop and the heartbeat."""
        with self._open_lock:
            if self._loop is not None:
                return self
            self._ensure_store()
            self._loop = LoopThread()
            self._beat()
            self._heartbeat = self._loop.submit(self._heartbeat_loop())
        if self._recover_on_open:
            self.recover()
        return self

    def close(self) -> None:
        """Stop the loop and release connections (idempotent).

        Runs still executing stay RUNNING under this executor and are resumed by the
        next `recover()` of an executor with this id, or by any executor once their
        lease expires.
        """
        with self._open_lock:
            loop, self._loop = self._loop, None
            if loop is not None:
                if self._heartbeat is not None:
                    self._heartbeat.cancel()
                loop.stop()
            self.store.close()
            self._schema_checked = False

    def __enter__(self) -> Runtime:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Runtime:
        await asyncio.to_thread(self.open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def _ensure_store(self) -> SqlStore:
        """Connect and check the schema once; enough for reading without running."""
        with self._open_lock:
            if not self._schema_checked:
                self.store.open()
                try:
                    self.store.ensure_schema(migrate=self._auto_migrate)
                except BaseException:
                    self.store.close()
                    raise
                self._schema_checked = True
        return self.store

    def _loop_thread(self) -> LoopThread:
        if self._loop is None:
            self.open()
        assert self._loop is not None
        return self._loop

    # -- starting runs -----------------------------------------------------------------

    def start(
        self, fn: Workflow[Any] | str, /, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> RunHandle:
        """Blocking form of `astart`."""
        return self._start(self._resolve(fn), args, kwargs, run_id=run_id)

    def _start(
        self,
        wf: Workflow[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None,
        values: dict[str, Any] | None = None,
    ) -> RunHandle:
        loop = self._loop_thread()
        run_id = run_id or uuid.uuid4().hex
        input_data = wf.encode_input(args, kwargs)
        now = self.clock()
        info = RunInfo(
            run_id=run_id,
            workflow=wf.name,
            status="RUNNING",
            input=input_data,
            owner=self.executor_id,
            lease_until=now + timedelta(seconds=self.lease_seconds),
            epoch=1,
            attempts=1,
            created_at=now,
            started_at=now,
        )
        if not self.store.create_run(info, input_json=codec.dumps(input_data)):
            return self._existing(run_id, wf, input_data)
        ctx = self._context(run_id, wf.name, epoch=1, recorded={})
        ctx.values.update(values or {})
        return RunHandle(self, run_id, self._launch(loop, ctx, wf, input_data))

    async def astart(
        self, fn: Workflow[Any] | str, /, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> RunHandle:
        """Start a run of a workflow and return its handle without waiting for it.

        Starting with a `run_id` that exists returns that run and executes nothing
        again; the same id with another workflow or input is `RunInputMismatchError`.
        """
        return await asyncio.to_thread(
            functools.partial(self.start, fn, *args, run_id=run_id, **kwargs)
        )

    def run(
        self, fn: Workflow[Any] | str, /, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> Any:
        """Blocking form of `arun`."""
        return self.start(fn, *args, run_id=run_id, **kwargs).result()

    async def arun(
        self, fn: Workflow[Any] | str, /, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> Any:
        """Start a run and wait for its output (or its error, re-raised)."""
        handle = await self.astart(fn, *args, run_id=run_id, **kwargs)
        return await handle.aresult()

    def _resolve(self, fn: Workflow[Any] | str) -> Workflow[Any]:
        if isinstance(fn, Workflow):
            return fn
        if isinstance(fn, str):
            return lookup_workflow(fn)
        raise UsageError(
            f"{fn!r} is not a workflow: decorate it with @agentdur.workflow before starting it"
        )

    def _find_workflow(self, name: str) -> Workflow[Any] | None:
        if name.startswith("agent:"):
            agent = self._agents.get(name[6:]) or find_agent(name[6:])
            return agent.workflow if agent is not None else None
        return find_workflow(name)

    # -- agents ------------------------------------------------------------------------

    def register(self, agent: Agent) -> Agent:
        """Make an agent built at run time findable by name when its runs are recovered."""
        self._agents[agent.name] = agent
        return agent

    def start_agent(self, agent: Agent, prompt: Prompt, *, run_id: str | None = None) -> RunHandle:
        """Start an agent run; `handle.result()` gives `{"output", "usage"}`.

        Prefer `run_agent` / `arun_agent`, which return an `AgentResult`.
        """
        self.register(agent)
        return self._start(agent.workflow, (prompt,), {}, run_id=run_id)

    def run_agent(self, agent: Agent, prompt: Prompt, *, run_id: str | None = None) -> AgentResult:
        """Blocking form of `arun_agent`."""
        handle = self.start_agent(agent, prompt, run_id=run_id)
        return self.agent_result(agent, handle.run_id, handle.result())

    async def arun_agent(
        self, agent: Agent, prompt: Prompt, *, run_id: str | None = None
    ) -> AgentResult:
        """Run an agent durably on a prompt (a string or a list of messages).

        Every LLM call and tool call is a recorded step. Starting with an existing
        `run_id` returns that run's result without calling anything again.
        """
        handle = await asyncio.to_thread(self.start_agent, agent, prompt, run_id=run_id)
        data = await handle.aresult()
        return await asyncio.to_thread(self.agent_result, agent, handle.run_id, data)

    def stream_agent(
        self, agent: Agent, prompt: Prompt, *, run_id: str | None = None
    ) -> AgentStream:
        """Run an agent with the provider's streaming API, yielding events as they come.

        Iterate it (`for event in stream` or `async for event in stream`) for
        `TextDelta`, `ToolCallStarted` and `ToolCallDelta` events; `stream.result` is the
        `AgentResult` once the iteration ends. Each LLM step records the final assembled
        response; a step replayed from the recording yields its recorded text at once.
        """
        self.register(agent)
        stream = AgentStream(self, agent)
        handle = self._start(
            agent.workflow, (prompt,), {}, run_id=run_id, values={"emit": stream.put}
        )
        stream.attach(handle)
        return stream

    def agent_result(self, agent: Agent, run_id: str, data: dict[str, Any]) -> AgentResult:
        """The AgentResult of a finished agent run from its output and recorded steps."""
        output = data.get("output")
        if agent.output_type is not None:
            output = codec.from_json(output, agent.output_type)
        return AgentResult(
            output=output,
            run_id=run_id,
            messages=recording.conversation(self.steps(run_id)),
            usage=Usage.model_validate(data.get("usage") or {}),
        )

    def _existing(self, run_id: str, wf: Workflow[Any], input_data: Any) -> RunHandle:
        existing = self.get_run(run_id)
        if existing.workflow != wf.name:
            raise RunInputMismatchError(run_id, f"workflow {existing.workflow!r}")
        if existing.input != input_data:
            raise RunInputMismatchError(run_id, "another input")
        return RunHandle(self, run_id, self._futures.get(run_id))

    def _context(
        self,
        run_id: str,
        workflow: str,
        *,
        epoch: int,
        recorded: dict[int, StepInfo],
        metadata: Any = None,
        replay: bool = False,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> RunContext:
        ctx = RunContext(
            store=self.store,
            clock=self.clock,
            run_id=run_id,
            workflow=workflow,
            epoch=epoch,
            recorded=recorded,
            replay=replay,
            on_step=on_step,
        )
        ctx.values["fork"] = fork_settings(metadata)
        return ctx

    def _launch(
        self, loop: LoopThread, ctx: RunContext, wf: Workflow[Any], input_data: Any
    ) -> concurrent.futures.Future[Any]:
        args, kwargs = wf.decode_input(input_data)
        self._active[ctx.run_id] = ctx
        future = loop.submit(self._execute(ctx, wf, args, kwargs))
        self._futures[ctx.run_id] = future
        future.add_done_callback(lambda _: self._futures.pop(ctx.run_id, None))
        return future

    async def _execute(
        self, ctx: RunContext, wf: Workflow[Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        token = ctx.activate()
        try:
            try:
                if wf.is_async:
                    result = await wf.fn(*args, **kwargs)
                else:
                    call = functools.partial(contextvars.copy_context().run, wf.fn, *args, **kwargs)
                    result = await asyncio.get_running_loop().run_in_executor(None, call)
                output = codec.to_json(result, what=f"the output of workflow {wf.name!r}")
            except Exception as exc:
                ctx.check_signals()  # fenced, cancelled or suspended: that is the outcome
                self._finish(ctx, "FAILED", error=codec.encode_error(exc))
                raise
            ctx.check_signals()
            self._finish(ctx, "SUCCEEDED", output=output)
            return codec.from_json(output, wf.return_type)
        finally:
            ctx.deactivate(token)
            if self._active.get(ctx.run_id) is ctx:
                del self._active[ctx.run_id]

    def _finish(
        self, ctx: RunContext, status: str, *, output: Any = None, error: Any = None
    ) -> None:
        if ctx.replay:
            return
        try:
            self.store.finish_run(
                ctx.run_id,
                epoch=ctx.epoch,
                status=status,
                output_json=None if output is None else codec.dumps(output),
                error_json=None if error is None else codec.dumps(error),
                now=self.clock(),
            )
        except FencedError:
            ctx.explain_refusal()

    # -- recovery, heartbeat, cancel ---------------------------------------------------

    def recover(self) -> list[RunHandle]:
        """Resume every unfinished run this executor may take.

        That is its own runs from an earlier process with the same executor id, and any
        run whose lease expired. A run whose workflow is not registered in this process
        is left untouched, with a warning.
        """
        loop = self._loop_thread()
        handles = []
        now = self.clock()
        for run_id, workflow_name in self.store.recoverable_runs(owner=self.executor_id, now=now):
            if run_id in self._active:
                handles.append(RunHandle(self, run_id, self._futures.get(run_id)))
                continue
            wf = self._find_workflow(workflow_name)
            if wf is None:
                logger.warning(
                    "run %s was not recovered: its workflow %r is not registered in this "
                    "process (import the module that defines it)",
                    run_id,
                    workflow_name,
                )
                continue
            handle = self._claim_and_launch(loop, run_id, wf, now)
            if handle is not None:
                handles.append(handle)
        return handles

    def _claim_and_launch(
        self, loop: LoopThread, run_id: str, wf: Workflow[Any], now: datetime
    ) -> RunHandle | None:
        claimed = self.store.claim_run(
            run_id,
            owner=self.executor_id,
            now=now,
            lease_until=now + timedelta(seconds=self.lease_seconds),
        )
        if claimed is None:
            return None
        recorded = {step.step_index: step for step in self.store.steps(run_id)}
        ctx = self._context(
            run_id, wf.name, epoch=claimed.epoch, recorded=recorded, metadata=claimed.metadata
        )
        logger.info("continuing run %s from step %d", run_id, len(recorded))
        return RunHandle(self, run_id, self._launch(loop, ctx, wf, claimed.input))

    async def arecover(self) -> list[RunHandle]:
        """Async twin of `recover`."""
        return await asyncio.to_thread(self.recover)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: it stops at its next step boundary with status CANCELLED.

        Returns False if the run had already finished.
        """
        self._loop_thread()
        cancelled = self.store.cancel_run(run_id, now=self.clock())
        if not cancelled:
            self.get_run(run_id)  # raises RunNotFoundError for an unknown id
        ctx = self._active.get(run_id)
        if ctx is not None:
            ctx.cancelled = True
        return cancelled

    def _beat(self) -> set[str]:
        now = self.clock()
        return self.store.heartbeat(
            executor_id=self.executor_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            now=now,
            lease_until=now + timedelta(seconds=self.lease_seconds),
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                owned = self._beat()
            except Exception:
                logger.exception("heartbeat failed; retrying")
                continue
            for run_id, ctx in list(self._active.items()):
                if run_id not in owned and not ctx.replay:
                    self._notice_lost(ctx)

    def _notice_lost(self, ctx: RunContext) -> None:
        run = self.store.get_run(ctx.run_id)
        if run is None:
            return
        if run.status == "CANCELLED":
            ctx.cancelled = True
        elif run.status == "RUNNING" and run.owner != self.executor_id:
            ctx.fenced = True

    # -- messages, approvals, resolutions ----------------------------------------------

    def send(self, run_id: str, topic: str, value: Any = None) -> None:
        """Deliver a message to a run's `recv(topic)`; a run waiting for it continues.

        The run continues in this process if its workflow is registered here, else in
        any executor that recovers it.
        """
        data = codec.to_json(value, what=f"the message on topic {topic!r}")
        status = self._ensure_store().send_message(
            run_id, topic, value_json=codec.dumps(data), now=self.clock()
        )
        if status is None:
            raise RunNotFoundError(run_id)
        if status in FINISHED:
            raise UsageError(f"run {run_id!r} is {status}: it receives no more messages")
        self._resume(run_id)

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
            self.store.resolve_step(
                run_id,
                step_index,
                action=action,
                output_json=output,
                error_json=error,
                now=self.clock(),
            )
        except ValueError as exc:
            raise UsageError(f"cannot resolve step {step_index} of run {run_id!r}: {exc}") from None
        self._resume(run_id)

    def _waiting_step(self, run_id: str, index: int, status: str, what: str) -> StepInfo:
        run = self.get_run(run_id)
        steps = {s.step_index: s for s in self.store.steps(run_id)}
        step = steps.get(index)
        if step is None or step.status != status:
            found = "not recorded" if step is None else f"{step.kind} step, {step.status}"
            raise UsageError(
                f"step {index} of run {run_id!r} ({run.status}) is not waiting for {what} ({found})"
            )
        return step

    def _resume(self, run_id: str) -> RunHandle | None:
        """Continue a runnable run here, if its workflow is known in this process."""
        run = self.store.get_run(run_id)
        if run is None or run.status != "PENDING" or run_id in self._active:
            return None
        wf = self._find_workflow(run.workflow)
        if wf is None:
            return None
        return self._claim_and_launch(self._loop_thread(), run_id, wf, self.clock())

    # -- replay and fork ---------------------------------------------------------------

    def replay(
        self,
        run_id: str,
        *,
        until: int | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> Any:
        """Blocking form of `areplay`."""
        if self._in_loop_thread():
            raise UsageError(
                "rt.replay() would block the runtime's event loop: use `await rt.areplay()`"
            )
        return self._loop_thread().submit(self._replay(run_id, until, on_step)).result()

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
        future = self._loop_thread().submit(self._replay(run_id, until, on_step))
        return await asyncio.wrap_future(future)

    async def _replay(
        self, run_id: str, until: int | None, on_step: Callable[[StepInfo], None] | None
    ) -> Any:
        run = self.get_run(run_id)
        wf = self._require_workflow(run.workflow)
        steps = self.store.steps(run_id)
        recorded = {s.step_index: s for s in steps if until is None or s.step_index <= until}
        ctx = self._context(
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
            output = await self._execute(ctx, wf, args, kwargs)
        except ReplayStopped:
            return None
        if until is None and run.status == "SUCCEEDED":
            replayed = codec.to_json(output, what="the replayed output")
            if replayed != run.output:
                raise NonDeterminismError(
                    run_id,
                    len(steps),
                    f"output {codec.dumps(run.output)[:200]}",
                    f"output {codec.dumps(replayed)[:200]}",
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
        source = self.get_run(run_id)
        wf = self._require_workflow(source.workflow)
        loop = self._loop_thread()
        model_meta, model_instance = resolve_model_choice(model)
        now = self.clock()
        new_id = new_run_id or uuid.uuid4().hex
        run, copied = plan_fork(
            source,
            self.store.steps(run_id),
            at_step,
            new_run_id=new_id,
            owner=self.executor_id,
            now=now,
            lease_seconds=self.lease_seconds,
            response=response,
            model=model_meta,
            dry_run=dry_run,
        )
        if not self.store.create_forked_run(run, input_json=codec.dumps(run.input), steps=copied):
            raise UsageError(f"cannot fork into run id {new_id!r}: a run with that id exists")
        ctx = self._context(
            new_id,
            wf.name,
            epoch=1,
            recorded={s.step_index: s for s in copied},
            metadata=run.metadata,
        )
        if model_instance is not None:
            ctx.values["model_instance"] = model_instance
        return RunHandle(self, new_id, self._launch(loop, ctx, wf, run.input))

    def _require_workflow(self, name: str) -> Workflow[Any]:
        wf = self._find_workflow(name)
        if wf is None:
            raise NotRegisteredError(
                f"workflow {name!r} is not registered in this process: import the module "
                "that defines it (for an agent: the module that constructs it)",
                name=name,
            )
        return wf

    # -- reading -----------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunInfo:
        """The run as recorded; `RunNotFoundError` if there is none."""
        run = self._ensure_store().get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return run

    def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Recorded runs, newest first."""
        return self._ensure_store().list_runs(status=status, workflow=workflow, limit=limit)

    def steps(self, run_id: str) -> list[StepInfo]:
        """The recorded steps of a run in index order."""
        self.get_run(run_id)
        return self.store.steps(run_id)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run (to wait for its result)."""
        self.get_run(run_id)
        return RunHandle(self, run_id, self._futures.get(run_id))

    def _in_loop_thread(self) -> bool:
        return self._loop is not None and self._loop.in_loop_thread()
