"""When and how long to wait before a step's next attempt.

Exponential backoff with full jitter (the delay before attempt n+1 is uniform in
[0, min(max_delay, backoff * 2**(n-1))]), except that a provider's Retry-After wins:
when an error carries `retry_after`, that is the wait (capped by `max_delay`). Errors
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
        """Seconds to wait after failed attempt `attempt` (1-based), or None to give up."""
        if attempt > self.retries or isinstance(exc, _NEVER_RETRIED):
            return None
        if not isinstance(exc, self.retry_on):
            return None
        if getattr(exc, "retryable", True) is False:
            return None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after >= 0:
            # Honoured, but never longer than max_delay: a run waiting in process holds
            # its lease and a coroutine, and a server's "come back in an hour" should not.
            return min(float(retry_after), self.max_delay)
        ceiling = min(self.max_delay, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)
