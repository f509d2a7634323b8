"""agentdur: durable AI agents. Every LLM call and tool call is a checkpointed step."""

from agentdur.agent import Agent, AgentResult
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
    NotRegisteredError,
    OutsideRunError,
    RunCancelledError,
    RunFailedError,
    RunInputMismatchError,
    RunNotFoundError,
    SchemaVersionError,
    SerializationError,
    StepFailed,
    StoreError,
    StoreUnavailable,
    ToolArgumentsError,
    UncertainEffect,
    UsageError,
)
from agentdur.handle import RunHandle
from agentdur.messaging import recv
from agentdur.queues import Queue, RateLimit
from agentdur.retry import RetryPolicy
from agentdur.runtime import Runtime
from agentdur.store import RunInfo, StepInfo
from agentdur.streaming import AgentStream
from agentdur.tools import Tool, ToolContext, tool
from agentdur.workflow import sleep, sleep_sync, step, transaction, workflow

__all__ = [
    "Agent",
    "AgentResult",
    "AgentStream",
    "AgentdurError",
    "ConfigurationError",
    "FencedError",
    "MaxTurnsExceeded",
    "ModelBehaviorError",
    "ModelError",
    "ModelHTTPError",
    "NeedsAttentionError",
    "NonDeterminismError",
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
    "Runtime",
    "SchemaVersionError",
    "SerializationError",
    "StepFailed",
    "StepInfo",
    "StoreError",
    "StoreUnavailable",
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "UncertainEffect",
    "UsageError",
    "recv",
    "sleep",
    "sleep_sync",
    "step",
    "tool",
    "transaction",
    "workflow",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "agentdur"
del _name, _obj
