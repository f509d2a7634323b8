"""RunHandle: what `start` returns, to wait for a run's outcome or look at its status."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import TYPE_CHECKING, Any

from agentdur import codec
from agentdur.context import Interrupted, RunSuspended
from agentdur.errors import (
    FencedError,
    NeedsAttentionError,
    RunCancelledError,
    RunFailedError,
    StepFailed,
    UsageError,
)
from agentdur.store import FINISHED
from agentdur.workflow import find_workflow

if TYPE_CHECKING:
    from agentdur.engine import Engine

_POLL_FIRST, _POLL_MAX = 0.02, 0.5


class RunHandle:
    """A run started or found by a Runtime.

    When the run executes in this process, waiting follows it directly; otherwise
    (another process runs it, or it was taken over) waiting polls the store.
    """

    def __init__(
        self,
        runtime: Engine,
        run_id: str,
        future: concurrent.futures.Future[Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self._future = future

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    def status(self) -> str:
        """The run's recorded status."""
        return self.runtime.get_run(self.run_id).status

    def result(self, timeout: float | None = None) -> Any:
        """Blocking form of `aresult`."""
        if self.runtime._in_loop_thread():
            raise UsageError(
                "handle.result() would block the runtime's event loop here: "
                "use `await handle.aresult()`"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._future is not None:
            # wait() rather than result(timeout): a TimeoutError the run itself raised is
            # its outcome, not ours. Neither cancels the run.
            done, _ = concurrent.futures.wait([self._future], timeout)
            if not done:
                raise TimeoutError(f"run {self.run_id!r} did not finish in {timeout}s")
            try:
                return self._future.result()
            except Interrupted as exc:
                raise exc.error from None
            except (FencedError, RunSuspended):
                pass  # released, or continued by another executor: follow it in the store
        delay = _POLL_FIRST
        while True:
            outcome = self._stored_outcome()
            if outcome is not None:
                return outcome()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id!r} did not finish in {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    async def aresult(self, timeout: float | None = None) -> Any:
        """Wait for the run's output; its error is re-raised (as its type where possible).

        Raises `RunCancelledError` for a cancelled run and `TimeoutError` after `timeout`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._future is not None:
            # The caller's timeout or cancellation must never reach the run: cancelling a
            # wrapped future cancels the run's task. asyncio.wait cancels nothing.
            waiting = asyncio.wrap_future(self._future)
            waiting.add_done_callback(_retrieve)
            done, _ = await asyncio.wait({waiting}, timeout=timeout)
            if not done:
                raise TimeoutError(f"run {self.run_id!r} did not finish in {timeout}s")
            try:
                return waiting.result()
            except Interrupted as exc:
                raise exc.error from None
            except (FencedError, RunSuspended):
                pass
        delay = _POLL_FIRST
        while True:
            outcome = await asyncio.to_thread(self._stored_outcome)
            if outcome is not None:
                return outcome()
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"run {self.run_id!r} did not finish in {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _stored_outcome(self) -> Any:
        """None while unfinished; else a callable returning the output or raising."""
        run = self.runtime.get_run(self.run_id)
        if run.status == "NEEDS_ATTENTION":
            reason = run.error or {}
            steps = reason.get("steps")
            attention = NeedsAttentionError(
                self.run_id,
                int(reason.get("step_index", -1)),
                str(reason.get("message", "")),
                steps=steps if isinstance(steps, list) else None,
            )

            def needs_attention() -> Any:
                raise attention

            return needs_attention
        if run.status not in FINISHED:
            return None
        if run.status == "SUCCEEDED":
            wf = find_workflow(run.workflow)
            value = codec.from_json(run.output, wf.return_type) if wf else run.output
            return lambda: value
        if run.status == "CANCELLED":
            error: BaseException = RunCancelledError(self.run_id)
        else:
            error = codec.decode_error(run.error or {})
            if isinstance(error, StepFailed):
                error = RunFailedError(self.run_id, run.error or {})

        def fail() -> Any:
            raise error

        return fail


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a wrapped future's error as seen, for when its waiter timed out or was cancelled."""
    if not future.cancelled():
        future.exception()
