"""When and how long to wait before a step's next attempt.

Exponential backoff with full jitter (the delay before attempt n+1 is uniform in
[0, min(max_delay, backoff * 2**(n-1))]), except that a provider's Retry-After wins:
when an error carries `retry_after`, that is the wait. `wait` reports it in full;
`delay` caps it at `max_delay`, for a step that can only wait in process. The retry
loop (`kernel.Attempts`) sleeps a short wait in process and releases the run as
WAITING for a longer one, where the step kind can resume its attempts. Errors
that say they are not worth retrying (`retryable = False`, e.g. an HTTP 400 from a model
provider) are not retried whatever `retry_on` says.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentdur.errors import (
    FencedError,
    NonDeterminismError,
    RunCancelledError,
    SerializationError,
    UsageError,
)

_NEVER_RETRIED = (
    FencedError,
    RunCancelledError,
    NonDeterminismError,
    SerializationError,
    UsageError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How a step retries: `retries` extra attempts after the first one."""

    retries: int = 0
    backoff: float = 1.0
    """The upper bound of the first delay, in seconds; it doubles on every attempt."""
    max_delay: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_delay < 0:
            raise UsageError("retries, backoff and max_delay must not be negative")

    def delay(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait in process after failed attempt `attempt` (1-based), or None
        to give up: `wait`, never longer than `max_delay`."""
        wait = self.wait(attempt, exc)
        return None if wait is None else min(wait, self.max_delay)

    def wait(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds until the next attempt after failed attempt `attempt` (1-based), or
        None to give up. A Retry-After is returned in full, even past `max_delay`: a
        run that can release itself waits that long without holding its lease."""
        if attempt > self.retries or isinstance(exc, _NEVER_RETRIED):
            return None
        if not isinstance(exc, self.retry_on):
            return None
        if getattr(exc, "retryable", True) is False:
            return None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after >= 0:
            return float(retry_after)
        ceiling = min(self.max_delay, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)
