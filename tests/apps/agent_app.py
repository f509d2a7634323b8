"""An OpenAI Chat agent for crash tests: the real SDK, HTTP answered by a respx router.

Run as `python agent_app.py start|recover DATABASE_URL WORKDIR`.

The fake provider answers by turn (the number of assistant messages in the request):
0 asks for `lookup_order`, 1 asks for `refund_order`, 2 gives the final text. Before
answering it appends the turn to WORKDIR/requests.log (fsynced): that file is the
respx call log, kept across processes. With BLOCK_ON_TURN=k the request for turn k is
logged and then never answered, so the test can SIGKILL the process while that request
is in flight. Each tool appends a line to WORKDIR/tools.log.

`start` runs the agent with run id "agent-crash"; `recover` opens a Runtime with the
same executor id and `recover=True`, waits for the run and prints its final output.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import respx

import agentdur
from agentdur.models import OpenAIChat
from agentdur.testing import openai_client

RUN_ID = "agent-crash"
EXECUTOR_ID = "agent-crash-test"
PROMPT = "Order A17 arrived broken. Please refund it."
FINAL_TEXT = "I refunded order A17 (49.90 EUR); the money is on its way back to your card."
BLOCK_ON_TURN = int(os.environ.get("BLOCK_ON_TURN", "-1"))
WORKDIR = Path(sys.argv[3]) if len(sys.argv) > 3 else Path.cwd()
REQUESTS_LOG = WORKDIR / "requests.log"
TOOLS_LOG = WORKDIR / "tools.log"


def append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- the fake provider: real Chat Completions shapes (tests fixtures openai_chat_*.json) --

USAGE = {
    "prompt_tokens": 92,
    "completion_tokens": 17,
    "total_tokens": 109,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def completion(turn: int, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-agentcrash{turn}",
        "object": "chat.completion",
        "created": 1747163251 + turn,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": USAGE,
        "service_tier": "default",
        "system_fingerprint": "fp_0392822090",
    }


def tool_call(turn: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {
        "id": f"call_agentcrash{turn}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, separators=(",", ":"))},
    }
    return completion(turn, {"content": None, "tool_calls": [call]}, "tool_calls")


ANSWERS = {
    0: tool_call(0, "lookup_order", {"order_id": "A17"}),
    1: tool_call(1, "refund_order", {"order_id": "A17", "amount_cents": 4990}),
    2: completion(2, {"content": FINAL_TEXT}, "stop"),
}


async def chat_completions(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    turn = sum(1 for message in body["messages"] if message.get("role") == "assistant")
    append_line(REQUESTS_LOG, str(turn))
    if turn == BLOCK_ON_TURN:
        print(f"request for turn {turn} in flight; never answering it", flush=True)
        await asyncio.Event().wait()  # in flight until the process is killed
    if turn not in ANSWERS:
        return httpx.Response(400, json={"error": {"message": f"unexpected turn {turn}"}})
    return httpx.Response(200, json=ANSWERS[turn])


router = respx.Router(assert_all_mocked=True)
router.post("https://api.openai.com/v1/chat/completions").mock(side_effect=chat_completions)


# -- the agent ---------------------------------------------------------------------------


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id."""
    append_line(TOOLS_LOG, f"lookup_order {order_id}")
    return {"order_id": order_id, "status": "delivered", "total_cents": 4990}


@agentdur.tool(effect="side_effect")
def refund_order(order_id: str, amount_cents: int) -> dict[str, Any]:
    """Refund an order."""
    append_line(TOOLS_LOG, f"refund_order {order_id} {amount_cents}")
    return {"refund_id": f"re_{order_id}", "amount_cents": amount_cents}


agent = agentdur.Agent(
    "crash-support",
    OpenAIChat("gpt-4o-mini", client=openai_client(router)),
    tools=[lookup_order, refund_order],
    instructions="You are a support agent. Look orders up before refunding them.",
)


def main() -> int:
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "start":
        with agentdur.Runtime(url, executor_id=EXECUTOR_ID) as rt:
            print(rt.run_agent(agent, PROMPT, run_id=RUN_ID).output, flush=True)
        return 0
    with agentdur.Runtime(url, executor_id=EXECUTOR_ID, recover=True) as rt:
        print(rt.handle(RUN_ID).result(timeout=60)["output"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
