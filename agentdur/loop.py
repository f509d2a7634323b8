"""The runtime's own event loop, in a background thread.

Every run of a Runtime executes on this one long-lived loop, whoever started it (sync
code, or another event loop): SDK clients bind their connection pools to the loop they
first run on, so a loop per call would break real clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running forever in a daemon thread until `stop()`."""

    def __init__(self, name: str = "agentdur-loop") -> None:
        self.loop = asyncio.new_event_loop()
        # Sync workflows and sync tools run in threads; some of them block for long
        # (a durable sleep_sync), so give them more room than the default pool.
        self.loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="agentdur")
        )
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
                break  # stopped by stop()
            except (KeyboardInterrupt, SystemExit):
                # Raised in a run's task: asyncio re-raises these out of the loop after
                # handing them to the task. The run's own code reports it to its caller;
                # the loop goes on serving every other run.
                continue
        # Cancel what is left so coroutines do not warn about never being awaited.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the loop; the returned future is thread-safe."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop_thread():
                self._thread.join(timeout)
