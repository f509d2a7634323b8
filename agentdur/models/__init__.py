"""Model adapters and the neutral message types they translate.

The SDK adapters import their SDK only when first used, so this package imports
without `openai` or `anthropic` installed.
"""

from agentdur.models.anthropic import AnthropicMessages
from agentdur.models.base import (
    Model,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
)
from agentdur.models.openai_chat import OpenAIChat
from agentdur.models.openai_responses import OpenAIResponses
from agentdur.models.scripted import Scripted, ScriptInfo
from agentdur.models.types import (
    AssistantMessage,
    Message,
    ModelResponse,
    StopReason,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
    messages_adapter,
)

__all__ = [
    "AnthropicMessages",
    "AssistantMessage",
    "Message",
    "Model",
    "ModelResponse",
    "OpenAIChat",
    "OpenAIResponses",
    "ScriptInfo",
    "Scripted",
    "StopReason",
    "StreamDone",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolDefinition",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "messages_adapter",
]
