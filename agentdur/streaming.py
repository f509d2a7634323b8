"""AgentStream: the events of a streaming agent run, for sync or async iteration.

Besides the model's events (`TextDelta`, `ToolCallStarted`, `ToolCallDelta`) a stream
carries `AttemptRestarted` when an LLM step's attempt failed after part of it was
streamed and the step tries again: what the consumer showed of that step is void, and
the next attempt's events start from the beginning.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentdur.models.base import StreamEvent

if TYPE_CHECKING:
    from agentdur.agent import Agent, AgentResult
    from agentdur.handle import RunHandle
    from agentdur.runtime import Runtime

_END = object()


@dataclass(frozen=True)
class AttemptRestarted:
    """LLM step `step_index` starts attempt `attempt` (2, 3...) after the previous one
    failed: discard what was shown of this step since its last `AttemptRestarted` (or
    its start). The next attempt may come later, after the run waited (released)."""

    step_index: int
    attempt: int
    """The number of the attempt that starts now (the failed one was `attempt - 1`)."""
    reason: str
    """Why the previous attempt failed (the error's type and message)."""


AgentEvent = StreamEvent | AttemptRestarted
"""What an `AgentStream` yields (never `StreamDone`: the result is `stream.result`)."""


class AgentStream:
    """Events of one agent run as they arrive; `result` once the iteration ended.

    Events are produced on the runtime's loop and handed over through a thread-safe
    queue, so the same object serves `for` in sync code and `async for` in async code.
    """

    def __init__(self, runtime: Runtime, agent: Agent) -> None:
        self._runtime = runtime
        self._agent = agent
        self._queue: queue.Queue[Any] = queue.Queue()
        self._handle: RunHandle | None = None
        self.result: AgentResult | None = None
        """The run's result, set when the iteration has ended."""

    @property
    def run_id(self) -> str:
        assert self._handle is not None
        return self._handle.run_id

    def put(self, event: AgentEvent) -> None:
        self._queue.put(event)

    def attach(self, handle: RunHandle) -> None:
        self._handle = handle
        future = handle._future
        if future is None:
            self._queue.put(_END)
        else:
            future.add_done_callback(lambda _: self._queue.put(_END))

    def _finish(self) -> None:
        assert self._handle is not None
        data = self._handle.result()
        self.result = self._runtime.agent_result(self._agent, self._handle.run_id, data)

    def __iter__(self) -> Iterator[AgentEvent]:
        while (item := self._queue.get()) is not _END:
            yield item
        self._finish()

    async def __aiter__(self) -> AsyncIterator[AgentEvent]:
        while (item := await asyncio.to_thread(self._queue.get)) is not _END:
            yield item
        await asyncio.to_thread(self._finish)
