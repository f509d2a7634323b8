"""An application for the replay/fork/audit CLI tests: `--app tests.apps.audit_app:rt`.

`rt` is a Runtime on $AGENTDUR_DATABASE_URL. The agent "audit-support" runs on a
Scripted model: it looks the order named in the prompt up, refunds its total, and
answers; order Z9's refund is declined (the tool raises) and an unknown order's lookup
fails. Every answer reports 100 input and 10 output tokens. AUDIT_APP_VERSION=v2 changes
the agent's instructions and the plain workflow's second step, standing for a code
change since the runs were recorded.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import agentdur
from agentdur.models import Message, ModelResponse, ToolResultMessage, Usage, UserMessage
from agentdur.testing import Scripted, ScriptInfo

VERSION = os.environ.get("AUDIT_APP_VERSION", "v1")
INSTRUCTIONS = (
    "You are a support agent. Look orders up before refunding them."
    if VERSION == "v1"
    else "You are a support agent. Refund without looking orders up."
)
ORDERS = {"A1": 150.0, "B2": 40.0, "Z9": 120.0}
USAGE = Usage(input_tokens=100, output_tokens=10)
TOOL_LOG: list[str] = []
"""Tool bodies that ran in this process."""

rt = agentdur.Runtime(executor_id="audit-app")


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id."""
    TOOL_LOG.append(f"lookup_order {order_id}")
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return {"order_id": order_id, "total": ORDERS[order_id]}


@agentdur.tool(effect="side_effect")
def refund_order(order_id: str, amount: float) -> dict[str, Any]:
    """Refund an amount of an order, in dollars."""
    TOOL_LOG.append(f"refund_order {order_id} {amount}")
    if order_id == "Z9":
        raise RuntimeError("card declined")
    return {"refund_id": f"re_{order_id}", "amount": amount}


def support_script(messages: list[Message], info: ScriptInfo) -> ModelResponse:
    prompt = next(m.content for m in messages if isinstance(m, UserMessage))
    match = re.search(r"\b([A-Z]\d+)\b", prompt)
    order = match.group(1) if match else "?"
    results = {m.name: m for m in messages if isinstance(m, ToolResultMessage)}
    lookup, refund = results.get("lookup_order"), results.get("refund_order")
    if lookup is None:
        response = Scripted.tool_call("lookup_order", {"order_id": order})
    elif lookup.is_error:
        response = ModelResponse(text=f"I could not find order {order}.")
    elif refund is None:
        total = json.loads(lookup.content)["total"]
        response = Scripted.tool_call("refund_order", {"order_id": order, "amount": total})
    elif refund.is_error:
        response = ModelResponse(text=f"The refund of {order} failed: {refund.content}")
    else:
        response = ModelResponse(text=f"Refunded {order}: {refund.content}")
    return response.model_copy(update={"usage": USAGE})


agent = agentdur.Agent(
    "audit-support",
    Scripted(support_script),
    tools=[lookup_order, refund_order],
    instructions=INSTRUCTIONS,
)


@agentdur.step(name="audit_app.hello")
async def hello(name: str) -> str:
    return f"hello {name}"


@agentdur.step(name="audit_app.shout")
async def shout(text: str) -> str:
    return text.upper()


@agentdur.step(name="audit_app.whisper")
async def whisper(text: str) -> str:
    return text.lower()


@agentdur.workflow(name="audit_app.greet")
async def greet(name: str) -> str:
    text = await hello(name)
    return await (shout(text) if VERSION == "v1" else whisper(text))


@agentdur.step(name="audit_app.boom")
async def boom(reason: str) -> str:
    raise ValueError(f"boom: {reason}")


@agentdur.workflow(name="audit_app.explode")
async def explode(reason: str) -> str:
    await hello(reason)
    return await boom(reason)
