"""Engine: the core of a Runtime, which starts, executes and recovers runs.

It owns the store, the executor identity, the background event loop every run executes
on, the heartbeat and the scheduler (ownership.py), and recovery. `Runtime` adds agents
and queues (runtime.py), replay, fork and operator actions (operations.py). Blocking
methods are thin faces over work done on the runtime's loop; their `a`-prefixed twins
await the same work from any event loop. The loop never waits on the database: every
write of an executing run goes through the store's writer (store/writer.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn

from typing_extensions import Self

from agentdur import codec
from agentdur.context import Interrupted, RunContext
from agentdur.errors import (
    RunInputMismatchError,
    RunNotFoundError,
    UsageError,
)
from agentdur.fork import fork_settings
from agentdur.handle import RunHandle
from agentdur.loop import LoopThread
from agentdur.options import checked_options
from agentdur.ownership import (
    Heartbeat,
    Scheduler,
    dead_executors,
    default_executor_id,
    this_process,
)
from agentdur.registry import Registry
from agentdur.store import RunInfo, SqlStore, StepInfo, open_store
from agentdur.tracing import Tracing, traced
from agentdur.workflow import Workflow, lookup_workflow

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///agentdur.db"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Engine:
    """Starts, executes and recovers runs; see `Runtime` for the arguments."""

    @checked_options()
    def __init__(
        self,
        database_url: str | None = None,
        *,
        executor_id: str | None = None,
        recover: bool = False,
        auto_migrate: bool = True,
        lease_seconds: float = 30.0,
        write_retry_seconds: float = 60.0,
        poll_interval: float = 1.0,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], datetime] = utc_now,
        tracer_provider: Any = None,
    ) -> None:
        if isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int):
            raise UsageError(f"max_value_bytes must be an int, got {max_value_bytes!r}")
        if max_value_bytes < 1:
            raise UsageError(f"max_value_bytes must be at least 1, got {max_value_bytes}")
        self._url = url = (
            database_url or os.environ.get("AGENTDUR_DATABASE_URL") or DEFAULT_DATABASE_URL
        )
        self.store: SqlStore = open_store(url, write_retry_seconds=write_retry_seconds)
        self.store.max_value_bytes = max_value_bytes
        self.identity = this_process()
        self.executor_id = (
            executor_id
            or os.environ.get("AGENTDUR_EXECUTOR_ID")
            or default_executor_id(self.identity)
        )
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.clock = clock
        self._tracing = Tracing(tracer_provider)
        self._recover_on_open = recover
        self._auto_migrate = auto_migrate
        self._open_lock = threading.RLock()
        self._schema_checked = False
        self._loop: LoopThread | None = None
        self._heartbeat: Heartbeat | None = None
        self._scheduler: Scheduler | None = None
        self._active: dict[str, RunContext] = {}
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._unwritten: dict[tuple[str, int], Any] = {}
        self.registry = Registry()
        """The workflows (agents among them) this Runtime starts and recovers."""
        self._known_queues: set[str] = set()
        self._unrunnable: set[str] = set()
        self._starting: set[str] = set()
        """Runs created RUNNING here whose execution is not registered yet."""
        self._claim_lock = threading.Lock()
        """One claim at a time: a run claimed here is launched before the next claim."""

    @property
    def database_url(self) -> str:
        """The database URL, password masked."""
        return self.store.url

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Self:
        """Connect, check or migrate the schema, start the loop, heartbeat and scheduler."""
        with self._open_lock:
            if self._loop is not None:
                return self
            self._ensure_store()
            self._loop = LoopThread()
            self._heartbeat = Heartbeat(
                self._heartbeat_store(),
                executor_id=self.executor_id,
                identity=self.identity,
                interval=self.lease_seconds / 3,
                lease_seconds=self.lease_seconds,
                clock=self.clock,
                executing=self._executing,
                lost=self._notice_lost,
            )
            self._heartbeat.start()
            self._scheduler = Scheduler(self._tick, interval=self.poll_interval)
        if self._recover_on_open:
            self.recover()
        self._scheduler.start()
        return self

    def _heartbeat_store(self) -> SqlStore:
        """A store of its own for the heartbeat: its own connection, never queued."""
        if self._url.endswith(":memory:"):
            return self.store  # one connection is the whole database
        store = open_store(self._url, write_retry_seconds=self.store.write_retry_seconds)
        store.open()
        return store

    def close(self) -> None:
        """Stop the loop and release connections (idempotent).

        Runs still executing stay RUNNING under this executor and are resumed by any
        executor with `recover=True` once their lease expires, or at once by a process
        restarted on this host.
        """
        with self._open_lock:
            loop, self._loop = self._loop, None
            scheduler, self._scheduler = self._scheduler, None
            heartbeat, self._heartbeat = self._heartbeat, None
            if scheduler is not None:
                scheduler.stop()
            if loop is not None:
                loop.stop()
            if heartbeat is not None:
                heartbeat.stop()
            self.store.close()
            self._schema_checked = False

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
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
        info, input_json = self._new_run(wf, args, kwargs, run_id)
        self._starting.add(info.run_id)
        try:
            if not self.store.write(lambda: self.store.create_run(info, input_json=input_json)):
                return self._existing(info.run_id, wf, info.input)
            return self._launch_new(loop, info, wf, values)
        finally:
            self._starting.discard(info.run_id)
            self._tracing.discard(info.run_id)

    async def astart(
        self, fn: Workflow[Any] | str, /, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> RunHandle:
        """Start a run of a workflow and return its handle without waiting for it.

        Starting with a `run_id` that exists returns that run and executes nothing
        again; the same id with another workflow or input is `RunInputMismatchError`.
        Runs started concurrently are recorded together, in one commit.
        """
        return await self._astart(self._resolve(fn), args, kwargs, run_id=run_id)

    async def _astart(
        self,
        wf: Workflow[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None,
        values: dict[str, Any] | None = None,
    ) -> RunHandle:
        loop = self._loop if self._loop is not None else await asyncio.to_thread(self._loop_thread)
        info, input_json = self._new_run(wf, args, kwargs, run_id)
        self._starting.add(info.run_id)
        try:
            created = await self.store.awrite(
                lambda: self.store.create_run(info, input_json=input_json)
            )
            if not created:
                return await asyncio.to_thread(self._existing, info.run_id, wf, info.input)
            return self._launch_new(loop, info, wf, values)
        finally:
            self._starting.discard(info.run_id)
            self._tracing.discard(info.run_id)

    def _new_run(
        self, wf: Workflow[Any], args: tuple[Any, ...], kwargs: dict[str, Any], run_id: str | None
    ) -> tuple[RunInfo, str]:
        """A run to create RUNNING under this executor, and its input as JSON.

        Until it is launched, its id is in `_starting`, so that the scheduler does not
        take it for one of ours that a database fault released.
        """
        input_data = wf.encode_input(args, kwargs)
        now = self.clock()
        run_id = run_id or uuid.uuid4().hex
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
            metadata=self._tracing.new_run(run_id, wf.name),
        )
        what = f"the input of workflow {wf.name!r}"
        return info, codec.dumps(input_data, what=what, limit=self.store.max_value_bytes)

    def _launch_new(
        self,
        loop: LoopThread,
        info: RunInfo,
        wf: Workflow[Any],
        values: dict[str, Any] | None,
    ) -> RunHandle:
        ctx = self._context(info.run_id, wf.name, epoch=1, recorded={})
        ctx.values.update(values or {})
        return RunHandle(self, info.run_id, self._launch(loop, ctx, wf, info.input))

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
        return self.registry.find(name)

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
            unwritten=self._unwritten,
        )
        ctx.values["fork"] = fork_settings(metadata)
        self._tracing.attach(ctx, metadata)
        return ctx

    def _launch(
        self, loop: LoopThread, ctx: RunContext, wf: Workflow[Any], input_data: Any
    ) -> concurrent.futures.Future[Any]:
        args, kwargs = wf.decode_input(input_data)
        self._active[ctx.run_id] = ctx
        future = loop.submit(traced(ctx, self._execute(ctx, wf, args, kwargs)))
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
                what = f"the output of workflow {wf.name!r}"
                output = codec.to_json(result, what=what)
                codec.dumps(output, what=what, limit=self.store.max_value_bytes)
            except (KeyboardInterrupt, SystemExit) as exc:
                await self._interrupted(ctx, exc)
            except Exception as exc:
                ctx.check_signals()  # fenced, cancelled or suspended: that is the outcome
                await self._finish(ctx, "FAILED", error=codec.encode_error(exc))
                raise
            ctx.check_signals()
            await self._finish(ctx, "SUCCEEDED", output=output)
            return codec.from_json(output, wf.return_type)
        finally:
            ctx.deactivate(token)
            if self._active.get(ctx.run_id) is ctx:
                del self._active[ctx.run_id]

    async def _finish(
        self, ctx: RunContext, status: str, *, output: Any = None, error: Any = None
    ) -> None:
        if ctx.replay:
            return
        output_json = None if output is None else codec.dumps(output)
        error_json = None if error is None else codec.dumps(error)
        now = self.clock()
        await ctx.write(
            lambda: self.store.finish_run(
                ctx.run_id,
                epoch=ctx.epoch,
                status=status,
                output_json=output_json,
                error_json=error_json,
                now=now,
            )
        )

    async def _interrupted(self, ctx: RunContext, exc: BaseException) -> NoReturn:
        """KeyboardInterrupt or SystemExit in a run: release it, hand the signal back.

        The run is neither failed nor finished: it is made runnable again (any executor
        that recovers runs continues it from its last recorded step), and the exception
        reaches whoever waits on the run, while the runtime goes on serving other runs.
        """
        if not ctx.replay:
            try:
                await self.store.awrite(lambda: self.store.release_run(ctx.run_id, epoch=ctx.epoch))
            except Exception:
                logger.exception("run %s could not be released after %r", ctx.run_id, exc)
        raise Interrupted(exc)

    # -- recovery, heartbeat, cancel ---------------------------------------------------

    def recover(self) -> list[RunHandle]:
        """Resume every unfinished run this executor may take.

        That is any unowned runnable run, any run whose lease expired, any run whose
        owner is a dead process on this host, and this executor's own runs released by
        a database fault. A run whose workflow is not registered in this process is
        left untouched, with a warning.
        """
        return self._take(others=True)

    async def arecover(self) -> list[RunHandle]:
        """Async twin of `recover`."""
        return await asyncio.to_thread(self.recover)

    def _tick(self) -> None:
        """One scheduler tick: due wake-ups, released runs, and (recover=True) takeovers."""
        now = self.clock()
        self.store.write(lambda: self.store.wake_queued(now=now))
        self._take(others=self._recover_on_open)

    def _take(self, *, others: bool) -> list[RunHandle]:
        loop = self._loop_thread()
        handles = []
        now = self.clock()
        dead = dead_executors(self.store, self.identity, self.executor_id) if others else []
        takeable = self.store.recoverable_runs(
            owner=self.executor_id, now=now, others=others, dead=dead
        )
        for run_id, workflow_name in takeable:
            if run_id in self._starting:
                continue
            if run_id in self._active:
                handles.append(RunHandle(self, run_id, self._futures.get(run_id)))
                continue
            wf = self._find_workflow(workflow_name)
            if wf is None:
                if run_id not in self._unrunnable:
                    self._unrunnable.add(run_id)
                    logger.warning(
                        "run %s was not recovered: its workflow %r is not registered in "
                        "this process (import the module that defines it)",
                        run_id,
                        workflow_name,
                    )
                continue
            handle = self._claim_and_launch(loop, run_id, wf, now, others=others, dead=dead)
            if handle is not None:
                handles.append(handle)
        return handles

    def _claim_and_launch(
        self,
        loop: LoopThread,
        run_id: str,
        wf: Workflow[Any],
        now: datetime,
        *,
        others: bool = True,
        dead: list[str] | None = None,
    ) -> RunHandle | None:
        lease_until = now + timedelta(seconds=self.lease_seconds)
        with self._claim_lock:
            if run_id in self._active or run_id in self._starting:
                return RunHandle(self, run_id, self._futures.get(run_id))
            claimed = self.store.write(
                lambda: self.store.claim_run(
                    run_id,
                    owner=self.executor_id,
                    now=now,
                    lease_until=lease_until,
                    others=others,
                    dead=dead or [],
                )
            )
            if claimed is None:
                return None
            return self._continue(loop, claimed, wf)

    def _continue(self, loop: LoopThread, claimed: RunInfo, wf: Workflow[Any]) -> RunHandle:
        """Execute a run this executor just claimed, replaying what it recorded."""
        recorded = (
            {step.step_index: step for step in self.store.steps(claimed.run_id)}
            if claimed.attempts > 1 or claimed.forked_from
            else {}
        )
        ctx = self._context(
            claimed.run_id,
            wf.name,
            epoch=claimed.epoch,
            recorded=recorded,
            metadata=claimed.metadata,
        )
        if recorded:
            logger.info("continuing run %s from step %d", claimed.run_id, len(recorded))
        return RunHandle(self, claimed.run_id, self._launch(loop, ctx, wf, claimed.input))

    def _resume(self, run_id: str) -> RunHandle | None:
        """Continue a runnable run here, if its workflow is known in this process."""
        run = self.store.get_run(run_id)
        if run is None or run.status != "PENDING" or run_id in self._active:
            return None
        wf = self._find_workflow(run.workflow)
        if wf is None:
            return None
        return self._claim_and_launch(self._loop_thread(), run_id, wf, self.clock())

    def _launch_claimed(self, run: RunInfo) -> RunHandle | None:
        """Execute a run a worker took from a queue (back to the queue if unknown here)."""
        wf = self._find_workflow(run.workflow)
        if wf is None:
            logger.warning(
                "run %s of %r put back in queue %r: its workflow is not registered in this "
                "worker (import the module that defines it)",
                run.run_id,
                run.workflow,
                run.queue,
            )
            self.store.requeue_run(run.run_id, epoch=run.epoch)
            return None
        return self._continue(self._loop_thread(), run, wf)

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

    def _executing(self) -> list[tuple[str, int]]:
        """(run_id, epoch) of the runs this process executes now (for the heartbeat)."""
        return [(ctx.run_id, ctx.epoch) for ctx in list(self._active.values()) if not ctx.replay]

    def _notice_lost(self, run_id: str) -> None:
        """The heartbeat found a run no longer ours: tell its context why."""
        ctx = self._active.get(run_id)
        if ctx is None:
            return
        run = self.store.get_run(run_id)
        if run is None:
            return
        if run.status == "CANCELLED":
            ctx.cancelled = True
        elif run.status == "RUNNING" and (run.owner != self.executor_id or run.epoch != ctx.epoch):
            ctx.fenced = True

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

    async def aget_run(self, run_id: str) -> RunInfo:
        """Async twin of `get_run`."""
        return await asyncio.to_thread(self.get_run, run_id)

    async def alist_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Async twin of `list_runs`."""
        return await asyncio.to_thread(
            functools.partial(self.list_runs, status=status, workflow=workflow, limit=limit)
        )

    async def asteps(self, run_id: str) -> list[StepInfo]:
        """Async twin of `steps`."""
        return await asyncio.to_thread(self.steps, run_id)

    async def ahandle(self, run_id: str) -> RunHandle:
        """Async twin of `handle`."""
        return await asyncio.to_thread(self.handle, run_id)

    async def acancel(self, run_id: str) -> bool:
        """Async twin of `cancel`."""
        return await asyncio.to_thread(self.cancel, run_id)

    def _in_loop_thread(self) -> bool:
        return self._loop is not None and self._loop.in_loop_thread()
