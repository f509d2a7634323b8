"""Runtime: the object an application creates to run durable workflows and agents.

It is the engine (engine.py: starts, executes and recovers runs) with parts composed
in, each working through it: `Operations` (operations.py: operators' decisions, replay,
fork) and `Retention` (retention.py: gc). This module adds agents and queues, and the
Runtime's methods for the parts' work.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from agentdur import codec, recording
from agentdur.agent import Agent, AgentResult, Prompt
from agentdur.audit import Audit
from agentdur.engine import Engine
from agentdur.errors import UsageError
from agentdur.handle import RunHandle
from agentdur.models import Usage
from agentdur.operations import Operations
from agentdur.queues import Queue, lookup_queue
from agentdur.retention import DEFAULT_BATCH, GcReport, Retention
from agentdur.store import RunInfo, StepInfo
from agentdur.streaming import AgentStream
from agentdur.worker import Worker
from agentdur.workflow import Workflow


class Runtime(Engine):
    """Runs workflows durably against one database.

    Args:
        database_url: `sqlite:///path.db`, `sqlite:////abs/path.db` or
            `postgresql://user:password@host:port/db`; defaults to the environment
            variable AGENTDUR_DATABASE_URL, else `sqlite:///agentdur.db`.
        executor_id: a fixed identity as an owner of runs, for deployments that name
            their executors (a restarted process with the same id resumes its own runs
            at once). Defaults to AGENTDUR_EXECUTOR_ID, else a fresh id per process,
            `<host>:<pid>:<random>`: two processes never execute the same run at once,
            and a process restarted on the same host still resumes the runs of its
            dead predecessor at once (the executor row names host, pid and process
            start time). Never give two live processes the same id.
        recover: when opened, and then for as long as the Runtime is open, take over
            runs no live executor holds: unowned ones, those whose lease expired, and
            those whose owner is a dead process on this host.
        auto_migrate: apply pending schema migrations when opened; when false an older
            schema is an error that says to run `agentdur db migrate`.
        lease_seconds: how long a run stays owned without a heartbeat (heartbeats come
            every third of it, from a thread and connection of their own).
        write_retry_seconds: how long a write is retried through database faults (a
            dropped connection, a locked database, a server restart) before the run is
            released for recovery; a run is never failed because a write failed.
        poll_interval: seconds between the scheduler's ticks, which wake WAITING runs
            whose time came and take over runs (with `recover`).
        max_value_bytes: the cap on one recorded value as JSON, in UTF-8 bytes (default
            16 MiB): a run's input and output, a step's arguments, output or error, a
            tool's result, a message sent with `send`, an LLM step's request messages and
            raw response body. A value over it is a `ValueTooLarge` naming the step (a
            read-only or idempotent tool's result: a tool error the model sees).
        clock: the source of the current time (tests move it instead of sleeping).
        tracer_provider: an OpenTelemetry `TracerProvider` for run and step spans;
            defaults to the global one. Without opentelemetry installed, or with no
            provider given or set globally, nothing is traced (docs/deployment.md).

    The constructor does no I/O: the store opens on first use, on `open()`, or on
    entering `with Runtime(...) as rt`.
    """

    # -- the parts ---------------------------------------------------------------------

    @functools.cached_property
    def _operations(self) -> Operations:
        return Operations(self)

    @functools.cached_property
    def _retention(self) -> Retention:
        return Retention(self)

    def send(self, run_id: str, topic: str, value: Any = None) -> None:
        return self._operations.send(run_id, topic, value)

    async def asend(self, run_id: str, topic: str, value: Any = None) -> None:
        """Async twin of `send`."""
        await asyncio.to_thread(self.send, run_id, topic, value)

    def approve(
        self, run_id: str, step_index: int, *, approved: bool = True, note: str | None = None
    ) -> None:
        return self._operations.approve(run_id, step_index, approved=approved, note=note)

    async def aapprove(
        self, run_id: str, step_index: int, *, approved: bool = True, note: str | None = None
    ) -> None:
        """Async twin of `approve`."""
        await asyncio.to_thread(
            functools.partial(self.approve, run_id, step_index, approved=approved, note=note)
        )

    def resolve(self, run_id: str, step_index: int, action: str, value: Any = None) -> None:
        return self._operations.resolve(run_id, step_index, action, value)

    async def aresolve(self, run_id: str, step_index: int, action: str, value: Any = None) -> None:
        """Async twin of `resolve`."""
        await asyncio.to_thread(self.resolve, run_id, step_index, action, value)

    def replay(
        self,
        run_id: str,
        *,
        until: int | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> Any:
        return self._operations.replay(run_id, until=until, on_step=on_step)

    async def areplay(
        self,
        run_id: str,
        *,
        until: int | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> Any:
        return await self._operations.areplay(run_id, until=until, on_step=on_step)

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
        return self._operations.fork(
            run_id, at_step, new_run_id=new_run_id, response=response, model=model, dry_run=dry_run
        )

    async def afork(
        self,
        run_id: str,
        at_step: int,
        *,
        new_run_id: str | None = None,
        response: Any = None,
        model: Any = None,
        dry_run: bool = False,
    ) -> RunHandle:
        """Async twin of `fork`."""
        return await asyncio.to_thread(
            functools.partial(
                self.fork,
                run_id,
                at_step,
                new_run_id=new_run_id,
                response=response,
                model=model,
                dry_run=dry_run,
            )
        )

    def gc(
        self,
        *,
        older_than: timedelta,
        statuses: Sequence[str] | None = None,
        dry_run: bool = False,
        batch: int = DEFAULT_BATCH,
        domain_keys: bool = False,
    ) -> GcReport:
        return self._retention.gc(
            older_than=older_than,
            statuses=statuses,
            dry_run=dry_run,
            batch=batch,
            domain_keys=domain_keys,
        )

    async def agc(
        self,
        *,
        older_than: timedelta,
        statuses: Sequence[str] | None = None,
        dry_run: bool = False,
        batch: int = DEFAULT_BATCH,
        domain_keys: bool = False,
    ) -> GcReport:
        """Async twin of `gc` (the batches run in a thread; the event loop never waits)."""
        return await asyncio.to_thread(
            functools.partial(
                self.gc,
                older_than=older_than,
                statuses=statuses,
                dry_run=dry_run,
                batch=batch,
                domain_keys=domain_keys,
            )
        )

    @property
    def audit(self) -> Audit:
        """Queries over every run's tool calls and token usage (`agentdur.audit.Audit`)."""
        return Audit(self)

    # -- agents ------------------------------------------------------------------------

    def register(self, agent: Agent, *, replace: bool = False) -> Agent:
        """Hold an agent in this Runtime, so that its runs are found when recovered.

        Another agent already held under the same name is a `UsageError` (the
        recording could not tell which one ran), unless `replace` swaps the new one in:
        how a changed agent is replayed against runs recorded with the old one.
        """
        self.registry.add(agent.workflow, what="agent", replace=replace)
        return agent

    def start_agent(
        self,
        agent: Agent,
        prompt: Prompt,
        *,
        run_id: str | None = None,
        key_scope: str | None = None,
    ) -> RunHandle:
        """Start an agent run; `handle.result()` gives `{"output", "usage"}`.

        Prefer `run_agent` / `arun_agent`, which return an `AgentResult`.
        """
        self.register(agent)
        return self._start(agent.workflow, (prompt,), _scope(key_scope), run_id=run_id)

    async def astart_agent(
        self,
        agent: Agent,
        prompt: Prompt,
        *,
        run_id: str | None = None,
        key_scope: str | None = None,
    ) -> RunHandle:
        """Async twin of `start_agent`."""
        self.register(agent)
        return await self._astart(agent.workflow, (prompt,), _scope(key_scope), run_id=run_id)

    def run_agent(
        self,
        agent: Agent,
        prompt: Prompt,
        *,
        run_id: str | None = None,
        key_scope: str | None = None,
    ) -> AgentResult:
        """Blocking form of `arun_agent`."""
        handle = self.start_agent(agent, prompt, run_id=run_id, key_scope=key_scope)
        return self.agent_result(agent, handle.run_id, handle.result())

    async def arun_agent(
        self,
        agent: Agent,
        prompt: Prompt,
        *,
        run_id: str | None = None,
        key_scope: str | None = None,
    ) -> AgentResult:
        """Run an agent durably on a prompt (a string or a list of messages).

        Every LLM call and tool call is a recorded step. Starting with an existing
        `run_id` returns that run's result without calling anything again.

        Args:
            key_scope: prefixed to the domain keys of this run's side effects
                (`tenant-42/refund:A17`), so the effect ledger deduplicates per scope
                (a tenant, a test world) instead of across the whole database. Recorded
                with the run's input: recovery and forks keep it.
        """
        handle = await self.astart_agent(agent, prompt, run_id=run_id, key_scope=key_scope)
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

    # -- queues ------------------------------------------------------------------------

    def enqueue(
        self,
        fn: Workflow[Any] | Agent | str,
        /,
        *args: Any,
        queue: Queue | str,
        run_id: str | None = None,
        priority: int = 0,
        dedup_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Put a run of a workflow (or an agent, with its prompt) in a queue.

        The run is ENQUEUED until a worker (`rt.serve()`, `agentdur worker`) takes it
        within the queue's limits; lower `priority` values are taken first, then older
        runs. A `dedup_id` already used by an unfinished run of the queue, or an existing
        `run_id`, returns that run instead of enqueueing another.
        """
        target = lookup_queue(queue)
        if isinstance(fn, Agent):
            self.register(fn)
            wf = fn.workflow
        else:
            wf = self._resolve(fn)
        store = self._ensure_store()
        run_id = run_id or uuid.uuid4().hex
        input_data = wf.encode_input(args, kwargs)
        now = self.clock()
        if target.name not in self._known_queues:
            store.ensure_queue(target.name, now=now)
            self._known_queues.add(target.name)
        info = RunInfo(
            run_id=run_id,
            workflow=wf.name,
            status="ENQUEUED",
            input=input_data,
            queue=target.name,
            priority=priority,
            dedup_id=dedup_id,
            created_at=now,
        )
        if store.enqueue_run(info, input_json=codec.dumps(input_data)):
            return RunHandle(self, run_id)
        if dedup_id is not None and store.get_run(run_id) is None:
            duplicate = store.find_queued_duplicate(target.name, dedup_id)
            if duplicate is not None:
                return RunHandle(self, duplicate.run_id)
        return self._existing(run_id, wf, input_data)

    async def aenqueue(
        self,
        fn: Workflow[Any] | Agent | str,
        /,
        *args: Any,
        queue: Queue | str,
        run_id: str | None = None,
        priority: int = 0,
        dedup_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Async twin of `enqueue`."""
        return await asyncio.to_thread(
            functools.partial(
                self.enqueue,
                fn,
                *args,
                queue=queue,
                run_id=run_id,
                priority=priority,
                dedup_id=dedup_id,
                **kwargs,
            )
        )

    def serve(
        self,
        queues: list[Queue | str] | None = None,
        *,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        grace: float = 30.0,
    ) -> None:
        """Work as a queue worker until SIGTERM (blocking).

        Takes runs from `queues` (default: every queue defined in this process) within
        their limits, runs at most `concurrency` at once, and recovers runs of executors
        whose lease expired. Use a distinct `executor_id` per worker process.
        """
        Worker(
            self, queues, concurrency=concurrency, poll_interval=poll_interval, grace=grace
        ).run()


def _scope(key_scope: str | None) -> dict[str, Any]:
    """The agent workflow's keyword arguments for a key scope (none without one, so the
    input of a run without a scope is what it always was)."""
    if key_scope is None:
        return {}
    if not isinstance(key_scope, str) or not key_scope:
        raise UsageError(f"key_scope must be a non-empty str, got {key_scope!r}")
    return {"key_scope": key_scope}


def _document_from(part: type, names: tuple[str, ...]) -> None:
    """Give the Runtime's methods for a part's work the part's docstrings: each
    parameter is documented once, where the work is done."""
    for name in names:
        getattr(Runtime, name).__doc__ = getattr(part, name).__doc__


_document_from(Operations, ("send", "approve", "resolve", "replay", "areplay", "fork"))
_document_from(Retention, ("gc",))
