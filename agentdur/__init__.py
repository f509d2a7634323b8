"""agentdur: durable AI agents. Every LLM call and tool call is a checkpointed step."""

from agentdur.agent import Agent, AgentResult
from agentdur.audit import Audit, ToolCallRecord, UsageRecord
from agentdur.cli_format import timeline, tool_calls_table, tree_lines
from agentdur.errors import (
    AgentdurError,
    ConfigurationError,
    FencedError,
    MaxTurnsExceeded,
    ModelBehaviorError,
    ModelError,
    ModelHTTPError,
    NeedsAttentionError,
    NonDeterminismError,
    NotApplied,
    NotRegisteredError,
    OutsideRunError,
    RunCancelledError,
    RunFailedError,
    RunInputMismatchError,
    RunNotFoundError,
    RunOutcomeError,
    SchemaVersionError,
    SerializationError,
    StepFailed,
    StoreError,
    StoreUnavailable,
    ToolArgumentsError,
    UncertainEffect,
    UsageError,
    ValueTooLarge,
)
from agentdur.handle import RunHandle
from agentdur.messaging import recv
from agentdur.models import (
    ModelResponse,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStarted,
)
from agentdur.queues import Queue, RateLimit
from agentdur.recording import response_of
from agentdur.retention import GcReport
from agentdur.retry import RetryPolicy
from agentdur.runtime import Runtime
from agentdur.store import RunInfo, StepInfo
from agentdur.streaming import AgentStream, AttemptRestarted
from agentdur.tools import Tool, ToolContext, tool
from agentdur.worker import Worker
from agentdur.workflow import sleep, sleep_sync, step, transaction, workflow

__all__ = [
    "Agent",
    "AgentResult",
    "AgentStream",
    "AgentdurError",
    "AttemptRestarted",
    "Audit",
    "ConfigurationError",
    "FencedError",
    "GcReport",
    "MaxTurnsExceeded",
    "ModelBehaviorError",
    "ModelError",
    "ModelHTTPError",
    "ModelResponse",
    "NeedsAttentionError",
    "NonDeterminismError",
    "NotApplied",
    "NotRegisteredError",
    "OutsideRunError",
    "Queue",
    "RateLimit",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunInfo",
    "RunInputMismatchError",
    "RunNotFoundError",
    "RunOutcomeError",
    "Runtime",
    "SchemaVersionError",
    "SerializationError",
    "StepFailed",
    "StepInfo",
    "StoreError",
    "StoreUnavailable",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallRecord",
    "ToolCallStarted",
    "ToolContext",
    "UncertainEffect",
    "UsageError",
    "UsageRecord",
    "ValueTooLarge",
    "Worker",
    "recv",
    "response_of",
    "sleep",
    "sleep_sync",
    "step",
    "timeline",
    "tool",
    "tool_calls_table",
    "transaction",
    "tree_lines",
    "workflow",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "agentdur"
del _name, _obj
