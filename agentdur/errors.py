"""Every public exception of agentdur.

The tree branches by what the caller does next:

    AgentdurError
    ├── UsageError                 a developer mistake: fix the code or the configuration
    │   ├── ConfigurationError         bad database URL, bad option
    │   ├── NotRegisteredError         workflow/agent/tool unknown in this process
    │   ├── SchemaVersionError         database schema missing, older (migrate) or newer (upgrade)
    │   ├── RunNotFoundError           no run with that id
    │   ├── RunInputMismatchError      an existing run_id started again with other input
    │   └── OutsideRunError            a step or durable primitive called outside a run
    ├── StoreError                 the database refused an operation (driver error chained)
    │   └── StoreUnavailable           the database cannot be reached, even after retries
    ├── SerializationError         a value cannot be stored as JSON (names the step and the type)
    │   └── ValueTooLarge              a recorded value is over the cap (`max_value_bytes`)
    ├── RunOutcomeError            what happened to a run
    │   ├── NonDeterminismError        the code asks for another step than the recording has
    │   ├── StepFailed                 a step failed and its exception type cannot be rebuilt
    │   ├── RunFailedError             waiting on a run that ended FAILED
    │   ├── RunCancelledError          waiting on a run that was cancelled
    │   ├── MaxTurnsExceeded           an agent hit max_turns
    │   ├── NeedsAttentionError        an uncertain side effect stopped the run
    │   └── ModelBehaviorError         the model's output cannot be used (empty, refusal, truncated)
    ├── ModelError                 a provider request failed
    │   └── ModelHTTPError             with status code, retryable flag and Retry-After
    ├── ToolArgumentsError         the model's tool arguments are malformed or fail the schema
    ├── UncertainEffect            a side-effecting tool cannot tell whether its effect happened
    ├── NotApplied                 a tool refused the operation: nothing happened; the model is told
    └── FencedError                another executor took the run over; this one must stop

`FencedError` and cancellation are *sticky*: once a run context has seen one, every
later step call raises it again and whatever the workflow returns is discarded, so user
code that catches `Exception` cannot keep a fenced or cancelled run going.
"""

from __future__ import annotations

from typing import Any


class AgentdurError(Exception):
    """Base of every agentdur exception."""


class UsageError(AgentdurError):
    """A developer mistake: the message says what to change."""


class ConfigurationError(UsageError):
    """A bad database URL or option."""


class NotRegisteredError(UsageError):
    """A workflow, agent or tool name is not registered in this process."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class SchemaVersionError(UsageError):
    """The database schema is missing, older than this code, or newer than it."""

    def __init__(self, message: str, *, found: int, expected: int) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected


class RunNotFoundError(UsageError):
    """No run has that id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} (`agentdur runs list` shows the runs)")
        self.run_id = run_id


class RunInputMismatchError(UsageError):
    """A run_id that exists was started again with a different workflow or input."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(
            f"run {run_id!r} already exists with {detail}; "
            "pick another run_id or start it with the same input"
        )
        self.run_id = run_id


class OutsideRunError(UsageError):
    """A step or durable primitive was called outside a run."""


class StoreError(AgentdurError):
    """The database refused an operation; the driver's error is chained as `__cause__`.

    The store raises agentdur errors only: driver exceptions (sqlite3, psycopg) are
    translated at its edge.
    """


class StoreUnavailable(StoreError):
    """The database cannot be reached. The URL in the message has its password masked.

    Raised to a run after the writer retried through `write_retry_seconds`: the run is
    released for recovery, never failed.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class SerializationError(AgentdurError):
    """A value cannot be stored as JSON."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class ValueTooLarge(SerializationError):
    """A value to record is larger than `Runtime(max_value_bytes=...)` allows."""

    def __init__(self, message: str, *, step: str | None = None, size: int, limit: int) -> None:
        super().__init__(message, step=step)
        self.size = size
        """The value's size as JSON text, in UTF-8 bytes."""
        self.limit = limit
        """The cap it exceeded."""


class RunOutcomeError(AgentdurError):
    """Something happened to a run that its caller must handle."""


class NonDeterminismError(RunOutcomeError):
    """Re-executed code asked for another step than the recording holds at that index."""

    def __init__(self, run_id: str, index: int, recorded: str, requested: str) -> None:
        super().__init__(
            f"run {run_id!r} diverged from its recording at step {index}: "
            f"recorded {recorded}, the code now asks for {requested}. "
            "The workflow's code changed since the run was recorded, or it is not "
            "deterministic outside its steps."
        )
        self.run_id = run_id
        self.index = index
        self.recorded = recorded
        self.requested = requested


class StepFailed(RunOutcomeError):
    """A step failed with an exception whose type cannot be rebuilt here."""

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text


class RunFailedError(RunOutcomeError):
    """The awaited run ended FAILED; `error` holds what was recorded."""

    def __init__(self, run_id: str, error: dict[str, Any]) -> None:
        super().__init__(
            f"run {run_id!r} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
        )
        self.run_id = run_id
        self.error = error


class RunCancelledError(RunOutcomeError):
    """The run was cancelled."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} was cancelled")
        self.run_id = run_id


class MaxTurnsExceeded(RunOutcomeError):
    """An agent used all its turns without giving a final answer."""


class NeedsAttentionError(RunOutcomeError):
    """An uncertain side effect stopped the run until an operator resolves it.

    `step_index` is the first step to resolve; `steps` lists every one of them (a crash
    during a turn's parallel calls can leave several), each `{"step_index", "tool",
    "message"}`. The run continues once all are resolved.
    """

    def __init__(
        self,
        run_id: str,
        step_index: int,
        reason: str,
        *,
        steps: list[dict[str, Any]] | None = None,
    ) -> None:
        self.steps = steps or [{"step_index": step_index, "message": reason}]
        if len(self.steps) > 1:
            indexes = ", ".join(str(e.get("step_index")) for e in self.steps)
            listed = "; ".join(
                f"step {e.get('step_index')}: {e.get('message')}" for e in self.steps
            )
            what, step = f"steps {indexes} ({listed}). Resolve each", "STEP"
        else:
            what, step = f"step {step_index}: {reason}. Resolve it", str(step_index)
        super().__init__(
            f"run {run_id!r} needs attention at {what} with `agentdur resolve {run_id} "
            f"{step} (--retry | --result JSON | --fail MESSAGE)`"
        )
        self.run_id = run_id
        self.step_index = step_index
        self.reason = reason


class ModelBehaviorError(RunOutcomeError):
    """The model's response cannot be used: empty, a refusal, or cut off."""


class ModelError(AgentdurError):
    """A request to a model provider failed."""

    retryable: bool = False
    retry_after: float | None = None


class ModelHTTPError(ModelError):
    """The provider answered with an error status, or the request did not get through."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        retryable: bool,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.body = body


class ToolArgumentsError(AgentdurError):
    """The model's arguments for a tool are malformed JSON or fail its schema."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"invalid arguments for tool {tool!r}: {message}")
        self.tool = tool
        self.detail = message


class UncertainEffect(AgentdurError):
    """Raised by a side-effecting tool that cannot tell whether its effect happened."""


class NotApplied(AgentdurError):
    """Raised by a tool that refused the operation: nothing happened in the outside world.

    `raise agentdur.NotApplied("order A17 is already cancelled")`: the model is told
    exactly that text, the step is recorded as not applied (an ERROR whose type is
    `NotApplied`, never retried), and a side effect's ledger entry is released, so a
    corrected call under the same domain key can execute.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FencedError(AgentdurError):
    """Another executor owns the run now; this executor's writes are refused."""

    def __init__(self, run_id: str, epoch: int) -> None:
        super().__init__(
            f"run {run_id!r} was taken over by another executor (this one held epoch "
            f"{epoch}); its checkpoint was refused and it stops working on the run"
        )
        self.run_id = run_id
        self.epoch = epoch
