"""`@workflow`, `@step` and durable `sleep`: the user-facing durable primitives.

A workflow is registered by name when it is decorated (at import time), so a process
that recovers a run finds its code by the name recorded on the run. A step call takes
its index synchronously (see context.py), then either returns the recorded outcome or
executes, retrying per its `RetryPolicy`, and records the outcome in one write.

Async steps are awaited on the runtime's loop; sync steps run where they are called:
inside a sync workflow, which the runtime runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, overload

from agentdur import codec, tracing
from agentdur.context import RunContext, current_run
from agentdur.errors import (
    NotRegisteredError,
    OutsideRunError,
    UsageError,
)
from agentdur.kernel import Action, Attempts, Requested
from agentdur.options import checked_options
from agentdur.recording import difference
from agentdur.retry import RetryPolicy
from agentdur.store import StepInfo
from agentdur.tools import is_async_callable
from agentdur.transactions import transaction_scope

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

_WORKFLOWS: dict[str, Workflow[Any]] = {}
_inside_step: ContextVar[RunContext | None] = ContextVar("agentdur_inside_step", default=None)
"""The run whose step body is executing here: a step called inside it is a plain call.

It holds the run rather than a flag, so a run started from inside a step body (which
inherits this context) still records its own steps.
"""


class Workflow(Generic[R]):
    """A registered workflow function. Start it with `rt.run(wf, ...)`, not by calling it."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self.is_async = is_async_callable(fn)
        self.signature = inspect.signature(fn)
        self.parameter_types = codec.parameter_annotations(fn)
        self.return_type = codec.return_annotation(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise OutsideRunError(
            f"workflow {self.name!r} was called directly. Start it through a Runtime so it is "
            f"durable: `rt.run({self.fn.__name__}, ...)` or `handle = rt.start(...)`."
        )

    def encode_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The run's input as JSON: `{"args": [...], "kwargs": {...}}`."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"cannot start workflow {self.name!r}: {exc}") from None
        return {
            "args": codec.to_json(list(args), what=f"the input of workflow {self.name!r}"),
            "kwargs": codec.to_json(kwargs, what=f"the input of workflow {self.name!r}"),
        }

    def decode_input(self, data: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Rebuild typed arguments from the recorded input, using the parameter annotations."""
        names = list(self.signature.parameters)
        args = [
            codec.from_json(value, self.parameter_types.get(names[i], inspect.Parameter.empty))
            if i < len(names)
            else value
            for i, value in enumerate(data.get("args", []))
        ]
        kwargs = {
            key: codec.from_json(value, self.parameter_types.get(key, inspect.Parameter.empty))
            for key, value in data.get("kwargs", {}).items()
        }
        return args, kwargs


def register_workflow(wf: Workflow[Any]) -> None:
    """Add a workflow to the process-wide registry; a clash of names is an error."""
    existing = _WORKFLOWS.get(wf.name)
    if existing is not None and existing.fn is not wf.fn:
        same_place = (
            existing.fn.__module__ == wf.fn.__module__
            and existing.fn.__qualname__ == wf.fn.__qualname__
        )
        if not same_place:
            raise UsageError(
                f"workflow name {wf.name!r} is taken by {existing.fn.__module__}."
                f"{existing.fn.__qualname__}; give one of them another name: "
                "@agentdur.workflow(name=...)"
            )
    _WORKFLOWS[wf.name] = wf


def lookup_workflow(name: str) -> Workflow[Any]:
    """The registered workflow of that name, or NotRegisteredError."""
    try:
        return _WORKFLOWS[name]
    except KeyError:
        raise NotRegisteredError(
            f"workflow {name!r} is not registered in this process: import the module that "
            "defines it before starting or recovering its runs",
            name=name,
        ) from None


def find_workflow(name: str) -> Workflow[Any] | None:
    return _WORKFLOWS.get(name)


@overload
def workflow(fn: F, /) -> Workflow[Any]: ...
@overload
def workflow(*, name: str | None = None) -> Callable[[F], Workflow[Any]]: ...
@checked_options("workflow()")
def workflow(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Declare a durable workflow: its body is re-executed on recovery, its steps are not.

    The body must be deterministic except through steps. `name` defaults to the
    function's qualified name and is what runs record.
    """

    def decorate(func: Callable[..., Any]) -> Workflow[Any]:
        wf: Workflow[Any] = Workflow(func, name or func.__qualname__)
        register_workflow(wf)
        return wf

    return decorate(fn) if fn is not None else decorate


class Step:
    """A function whose outcome is recorded; calling it inside a run is a durable step.

    Called inside another step's body it is a plain call: no index, no recording, no
    retries of its own; the outer step records the outcome of the whole.
    """

    kind = "step"

    def __init__(self, fn: Callable[..., Any], name: str, policy: RetryPolicy) -> None:
        self.fn = fn
        self.name = name
        self.policy = policy
        self.is_async = is_async_callable(fn)
        self.return_type = codec.return_annotation(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current_run(f"step {self.name!r}")
        if _inside_step.get() is ctx:
            # Only the outer step is recorded (and replayed, and retried): this one is
            # part of its body, so it takes no index and executes on every attempt.
            return self._plain_call(args, kwargs)
        index = ctx.next_index()
        if self.is_async:
            return self._run_async(ctx, index, args, kwargs)
        _refuse_on_loop(self.name)
        return self._run_sync(ctx, index, args, kwargs)

    def _plain_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The function itself (a coroutine for an async step), for a call inside a step."""
        return self.fn(*args, **kwargs)

    def _replayed(self, ctx: RunContext, index: int, arguments: Any) -> StepInfo | None:
        """The recorded outcome to return, or None to execute (a step never resumes).

        `arguments` is the step's input record: called with other arguments than the
        recording holds at its index, the step diverges.
        """
        requested = Requested(index, self.name, self.kind, input_hash=input_hash(arguments))
        decision = ctx.look_up(
            requested,
            explain=lambda step: (
                "other arguments, "
                + difference(codec.dumps_sorted(step.input), codec.dumps_sorted(arguments))
            ),
        )
        return decision.recorded if decision.action is Action.REPLAY else None

    def _outcome(self, recorded: StepInfo) -> Any:
        if recorded.status == "ERROR":
            raise codec.decode_error(recorded.error or {})
        return codec.from_json(recorded.output, self.return_type)

    def _scope(self, ctx: RunContext) -> AbstractContextManager[tuple[tuple[Any, ...], Any]]:
        """Where one attempt of a sync step runs: (extra leading arguments, cursor)."""
        return nullcontext(((), None))

    def _ascope(self, ctx: RunContext) -> AbstractAsyncContextManager[tuple[tuple[Any, ...], Any]]:
        """Where one attempt of an async step runs: (extra leading arguments, cursor)."""
        return nullcontext(((), None))

    def _attempts(self, ctx: RunContext, index: int) -> Attempts:
        return Attempts(ctx, self.policy, index=index, transactional=self.kind == "transaction")

    async def _run_async(
        self, ctx: RunContext, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        arguments = _input_record(args, kwargs)
        recorded = self._replayed(ctx, index, arguments)
        if recorded is not None:
            return self._outcome(recorded)
        started = ctx.clock()

        async def attempt(number: int) -> StepInfo:
            async with self._ascope(ctx) as (extra, cur):
                inside = _inside_step.set(ctx)
                try:
                    result = await self.fn(*extra, *args, **kwargs)
                finally:
                    _inside_step.reset(inside)
                step = self._success(ctx, index, arguments, started, number, result)
                return await ctx.arecord(
                    step, input_data=step.input, output_data=step.output, cur=cur
                )

        with tracing.step_span(ctx, index, self.name, self.kind):
            outcome = await self._attempts(ctx, index).run(attempt)
            if outcome.error is not None:
                step = self._failure(ctx, index, arguments, started, outcome.attempts)
                error = codec.encode_error(outcome.error)
                await ctx.arecord(step, input_data=step.input, error_data=error)
                raise outcome.error
            return self._outcome(outcome.committed or _done(outcome.value))

    def _run_sync(
        self, ctx: RunContext, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        arguments = _input_record(args, kwargs)
        recorded = self._replayed(ctx, index, arguments)
        if recorded is not None:
            return self._outcome(recorded)
        started = ctx.clock()

        def attempt(number: int) -> StepInfo:
            with self._scope(ctx) as (extra, cur):
                inside = _inside_step.set(ctx)
                try:
                    result = self.fn(*extra, *args, **kwargs)
                finally:
                    _inside_step.reset(inside)
                step = self._success(ctx, index, arguments, started, number, result)
                return ctx.record(step, input_data=step.input, output_data=step.output, cur=cur)

        with tracing.step_span(ctx, index, self.name, self.kind):
            outcome = self._attempts(ctx, index).run_sync(attempt)
            if outcome.error is not None:
                step = self._failure(ctx, index, arguments, started, outcome.attempts)
                error = codec.encode_error(outcome.error)
                ctx.record(step, input_data=step.input, error_data=error)
                raise outcome.error
            return self._outcome(outcome.committed or _done(outcome.value))

    def _success(
        self,
        ctx: RunContext,
        index: int,
        arguments: Any,
        started: datetime,
        attempt: int,
        result: Any,
    ) -> StepInfo:
        """The step to record for a result, its output the result as JSON.

        The caller returns what a replay would return (the JSON decoded again), so live
        and recovered runs see the same value.
        """
        output = codec.to_json(result, what=f"the output of step {index} {self.name!r}")
        return self._info(
            ctx,
            index,
            "SUCCEEDED",
            started,
            attempt,
            input=arguments,
            output=output,
        )

    def _failure(
        self,
        ctx: RunContext,
        index: int,
        arguments: Any,
        started: datetime,
        attempt: int,
    ) -> StepInfo:
        return self._info(ctx, index, "ERROR", started, attempt, input=arguments)

    def _info(
        self,
        ctx: RunContext,
        index: int,
        status: str,
        started: datetime,
        attempts: int,
        **payload: Any,
    ) -> StepInfo:
        return StepInfo(
            **payload,
            run_id=ctx.run_id,
            step_index=index,
            name=self.name,
            kind=self.kind,
            status=status,
            attempts=attempts,
            started_at=started,
            finished_at=ctx.clock(),
            request_hash=input_hash(payload.get("input")),
        )


class TransactionStep(Step):
    """A step whose function writes through `db`, in one transaction with its checkpoint.

    The function takes the connection as its first parameter (sqlite3 or psycopg, the
    runtime's own database) and is called without it: `add_order(order)`. Its writes
    and the step's checkpoint commit together or not at all: exactly once.
    """

    kind = "transaction"

    def _plain_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise UsageError(
            f"transaction step {self.name!r} was called inside another step, where it has "
            "no transaction of its own to write through: call it from the workflow body"
        )

    @contextmanager
    def _scope(self, ctx: RunContext) -> Iterator[tuple[tuple[Any, ...], Any]]:
        with ctx.store.dedicated_transaction() as (conn, cur):
            yield (conn,), cur

    @asynccontextmanager
    async def _ascope(self, ctx: RunContext) -> AsyncIterator[tuple[tuple[Any, ...], Any]]:
        async with transaction_scope(ctx) as (conn, cur):
            yield (conn,), cur


def transaction(
    fn: Any = None, /, *, name: str | None = None, retries: int = 0, backoff: float = 1.0
) -> Any:
    """Declare a transactional step: `fn(db, ...)` writes through `db`, exactly once.

    `db` is a connection to the runtime's database whose transaction also records the
    step, so the writes and the checkpoint commit together. Call it without `db`. On
    SQLite it holds the database's write lock while it runs: keep it short.
    """
    policy = RetryPolicy(retries=retries, backoff=backoff)

    def decorate(func: Callable[..., Any]) -> Step:
        return TransactionStep(func, name or func.__qualname__, policy)

    return decorate(fn) if fn is not None else decorate


def _done(step: StepInfo | None) -> StepInfo:
    assert step is not None
    return step


def _input_record(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A step's arguments for the audit; a value JSON cannot hold is named, not stored."""
    record: dict[str, Any] = {}
    if args:
        record["args"] = [_lenient(value) for value in args]
    if kwargs:
        record["kwargs"] = {key: _lenient(value) for key, value in kwargs.items()}
    return record or None


def input_hash(arguments: Any) -> str:
    """sha256 of a step's input record (canonical JSON): kept in its `request_hash`."""
    return hashlib.sha256(codec.dumps_sorted(arguments).encode()).hexdigest()


def _lenient(value: Any) -> Any:
    try:
        return codec.to_json(value, what="a step argument")
    except Exception:
        return {"unserializable": type(value).__qualname__}


def _refuse_on_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError(
        f"step {name!r} is a sync function called from async code, where it would block the "
        "event loop: declare it `async def`, or call it from a sync workflow"
    )


@overload
def step(fn: F, /) -> Step: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    max_delay: float = 60.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Callable[[F], Step]: ...
@checked_options("step()")
def step(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    max_delay: float = 60.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Any:
    """Declare a durable step: executed once per run, its outcome recorded and replayed.

    Args:
        name: what the step is recorded as; defaults to the function's qualified name.
        retries: extra attempts after a failure, with exponential backoff and full jitter.
        backoff: upper bound of the first retry delay in seconds; doubles per attempt.
        max_delay: cap on one delay.
        retry_on: exception types worth retrying; others fail the step at once.
    """
    policy = RetryPolicy(retries=retries, backoff=backoff, max_delay=max_delay, retry_on=retry_on)

    def decorate(func: Callable[..., Any]) -> Step:
        return Step(func, name or func.__qualname__, policy)

    return decorate(fn) if fn is not None else decorate


IN_PROCESS_WAIT_SECONDS = 5.0
"""A durable wait at most this long is slept in process; a longer one releases the run
as WAITING with its wake-up time, holding no coroutine, thread or lease meanwhile."""


def _sleep_step(ctx: RunContext, index: int, seconds: float) -> tuple[datetime, StepInfo | None]:
    """The sleep's deadline, and the step to record if the recording has none yet."""
    recorded = ctx.look_up(Requested(index, "sleep", "sleep")).recorded
    if recorded is not None:
        return datetime.fromisoformat(recorded.output["until"]), None
    now = ctx.clock()
    until = now + timedelta(seconds=max(0.0, seconds))
    step = StepInfo(
        run_id=ctx.run_id,
        step_index=index,
        name="sleep",
        kind="sleep",
        status="SUCCEEDED",
        input={"seconds": seconds},
        output={"until": until.isoformat()},
        started_at=now,
        finished_at=now,
    )
    return until, step


def _release_until(ctx: RunContext, until: datetime) -> Callable[[], None]:
    return lambda: ctx.store.suspend_run(
        ctx.run_id, epoch=ctx.epoch, status="WAITING", wake_at=until, error_json=None
    )


def sleep(seconds: float) -> Coroutine[Any, Any, None]:
    """Sleep durably: the deadline is recorded, so after a restart only the rest is slept.

    Use as `await agentdur.sleep(seconds)`; the step index is taken at the call. A sleep
    longer than `IN_PROCESS_WAIT_SECONDS` releases the run as WAITING until its deadline
    (the scheduler of any executor running this workflow wakes it).
    """
    ctx = current_run("agentdur.sleep")
    index = ctx.next_index()

    async def sleeping() -> None:
        until, step = _sleep_step(ctx, index, seconds)
        if step is not None:
            await ctx.arecord(step, input_data=step.input, output_data=step.output)
        if ctx.replay:
            return
        remaining = (until - ctx.clock()).total_seconds()
        if remaining > IN_PROCESS_WAIT_SECONDS:
            await ctx.write(_release_until(ctx, until))
            ctx.waiting()
        if remaining > 0:
            await asyncio.sleep(remaining)
        ctx.check_signals()

    return sleeping()


def sleep_sync(seconds: float) -> None:
    """Blocking form of `sleep`, for sync workflows."""
    ctx = current_run("agentdur.sleep_sync")
    until, step = _sleep_step(ctx, ctx.next_index(), seconds)
    if step is not None:
        ctx.record(step, input_data=step.input, output_data=step.output)
    if ctx.replay:
        return
    remaining = (until - ctx.clock()).total_seconds()
    if remaining > IN_PROCESS_WAIT_SECONDS:
        ctx.write_sync(_release_until(ctx, until))
        ctx.waiting()
    if remaining > 0:
        time.sleep(remaining)
    ctx.check_signals()
