"""Fork a finished agent run two ways, then audit every tool call. Offline.

    python examples/fork_and_audit.py                          # a throwaway SQLite file
    python examples/fork_and_audit.py --database-url postgresql://postgres@127.0.0.1/app

A support agent on a scripted model (no API key, no network) looks an order up,
refunds it through a payments service (a `side_effect` tool; here a list in memory) and
answers. Then two forks of that recorded run:

1. After its first LLM response, with an edited answer: the lookup is kept (copied,
   marked inherited), the second LLM response is replaced by a text a supervisor wrote,
   so this path refunds nothing.
2. As a dry run with another model name: the steps after the lookup run again under
   "support-model-v2", and the refund is simulated; the payments service is not called.

It prints the run tree, each run's timeline and the audit of every tool call. The audit
shows the refund once as executed; the fork's copy is flagged dry-run, and a fork that
inherits a refund would be flagged inherited, so nothing is counted twice.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import agentdur
from agentdur.models import Message, ModelResponse, ToolResultMessage, Usage
from agentdur.testing import Scripted, ScriptInfo

PROMPT = "My order A1042 arrived with a cracked teapot lid. Can I get my money back? - Dana"
ORDERS = {"A1042": {"order_id": "A1042", "item": "Stoneware teapot", "total": 39.0}}
PAYMENTS: list[dict[str, Any]] = []
"""Refunds the payments service really executed."""


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id."""
    return ORDERS[order_id]


@agentdur.tool(effect="side_effect")
def refund_order(order_id: str, amount: float) -> dict[str, Any]:
    """Refund an amount of an order, in dollars, to the customer's card."""
    refund = {"refund_id": f"re_{len(PAYMENTS) + 1}", "order_id": order_id, "amount": amount}
    PAYMENTS.append(refund)
    return refund


def support_script(messages: list[Message], info: ScriptInfo) -> ModelResponse:
    """The scripted model: look up, refund the total, then tell the customer."""
    results = {m.name: m.content for m in messages if isinstance(m, ToolResultMessage)}
    if "lookup_order" not in results:
        response = Scripted.tool_call("lookup_order", {"order_id": "A1042"})
    elif "refund_order" not in results:
        total = json.loads(results["lookup_order"])["total"]
        response = Scripted.tool_call("refund_order", {"order_id": "A1042", "amount": total})
    elif results["refund_order"].startswith("DRY RUN"):
        response = ModelResponse(text="(dry run) I would refund $39.00 for the teapot.")
    else:
        response = ModelResponse(text="Sorry about the lid, Dana! I refunded $39.00.")
    return response.model_copy(update={"usage": Usage(input_tokens=120, output_tokens=18)})


agent = agentdur.Agent(
    "support-demo",
    Scripted(support_script, model_name="support-model"),
    tools=[lookup_order, refund_order],
    instructions="You are a support agent. Look orders up before refunding them.",
)


def main(database_url: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    with agentdur.Runtime(database_url) as rt:
        original = rt.run_agent(agent, PROMPT, run_id=f"support-{suffix}")
        steps = rt.steps(original.run_id)
        # Keep LLM response 1 and the lookup after it; replace or redo LLM response 2.
        second_llm = [s.step_index for s in steps if s.kind == "llm"][1]
        edited = rt.fork(
            original.run_id,
            second_llm,
            new_run_id=f"{original.run_id}-edited",
            response={"text": "I'm sorry about the lid! A replacement is on its way, free."},
        )
        edited.result()
        dry = rt.fork(
            original.run_id,
            second_llm,
            new_run_id=f"{original.run_id}-dry-run",
            model="support-model-v2",
            dry_run=True,
        )
        dry.result()
        run_ids = [original.run_id, edited.run_id, dry.run_id]

        print("== run tree ==")
        print("\n".join(agentdur.tree_lines(rt.audit.run_tree(original.run_id), original.run_id)))
        for run_id in run_ids:
            run = rt.get_run(run_id)
            print(f"\n== timeline: {run_id} ({run.status}) ==")
            print(agentdur.timeline(rt.steps(run_id)))
            print(f"answer: {run.output['output']}")
        calls = [c for c in rt.audit.tool_calls(agent=agent.name) if c.run_id in run_ids]
        print("\n== audit ==")
        print(agentdur.tool_calls_table(calls))
    print(f"\nrefunds the payments service executed: {len(PAYMENTS)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: a throwaway SQLite file")
    args = parser.parse_args()
    if args.database_url:
        main(args.database_url)
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(f"sqlite:///{Path(folder) / 'fork_and_audit.db'}")
