"""An application for the effect, approval and transaction tests that kill processes.

Run as `python effects_app.py MODE DATABASE_URL WORKDIR RUN_ID`:

- `refund`: run the refund agent (lookup_order -> refund_order -> final answer).
- `approval`: start the approval agent (refund_order needs approval), wait until the run
  is WAITING for the reviewer, print its steps and exit without finishing it.
- `tx-tool`: run an agent whose transactional tool inserts a row into `app_orders`.
- `tx-step`: run a workflow whose `@agentdur.transaction` step inserts that row.
- `inbox`: start a workflow that waits for two messages on topic "orders", wait until
  the run is WAITING, print its steps and exit.
- `recover`: open a Runtime and call `recover()` until RUN_ID is finished or needs
  attention, then print `{"status", "output", "error"}` as JSON.

Environment: EXECUTOR_ID (default effects-a), LEASE (seconds, default 30), RECONCILE
(`yes`, `no`, `raise` or `keyless`: the refund tool's reconcile hook answers from
the payments log, is absent, or raises; `keyless` answers, for a tool without a domain
key), BLOCK_IN (`refund_before`: block before paying;
`refund_after`: block after the payments service counted the refund, before the tool
returns; `tx`: block after the transactional write, before the commit). A blocking
process writes WORKDIR/blocked first, so the test knows when to SIGKILL it.

The payments service is WORKDIR/payments.log: one fsynced JSON line per refund it
executed, keyed by the Idempotency-Key the tool sent. It never deduplicates, so a second
execution shows as a second line. Every call of the refund tool appends
`{"run_id", "step_index", "key", "attempt"}` to WORKDIR/calls.log, every call of the
reconcile hook its key to WORKDIR/reconcile.log.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import agentdur
from agentdur.models import AssistantMessage, Message, ScriptInfo
from agentdur.testing import Scripted

MODE = sys.argv[1] if len(sys.argv) > 1 else ""
WORKDIR = Path(sys.argv[3]) if len(sys.argv) > 3 else Path.cwd()
BLOCK_IN = os.environ.get("BLOCK_IN", "")
RECONCILE = os.environ.get("RECONCILE", "yes")
FINAL = "Order B7 is refunded."
APP_TABLE = "CREATE TABLE IF NOT EXISTS app_orders (order_id TEXT NOT NULL, note TEXT)"


def append_json(name: str, record: dict[str, Any]) -> None:
    with open(WORKDIR / name, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def block(where: str) -> None:
    if where == BLOCK_IN:
        (WORKDIR / "blocked").write_text(where)
        time.sleep(3600)


# -- the payments service and the tools -----------------------------------------------


def pay(key: str, order_id: str, amount: int) -> dict[str, Any]:
    """The payments service executes a refund: it counts it (fsynced) and answers."""
    record = {"key": key, "order_id": order_id, "amount": amount, "refund_id": f"re_{key}"}
    append_json("payments.log", record)
    return {"refund_id": record["refund_id"], "amount": amount}


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    return {"order_id": order_id, "total": 4990}


def _refund(order_id: str, amount: int, ctx: agentdur.ToolContext) -> dict[str, Any]:
    """Refund an order."""
    append_json(
        "calls.log",
        {
            "run_id": ctx.run_id,
            "step_index": ctx.step_index,
            "key": ctx.idempotency_key,
            "attempt": ctx.attempt,
        },
    )
    block("refund_before")
    result = pay(ctx.idempotency_key, order_id, amount)
    block("refund_after")
    return result


refund_order = agentdur.tool(effect="side_effect", key="refund:{order_id}", name="refund_order")(
    _refund
)
refund_manual = agentdur.tool(effect="side_effect", key="refund:{order_id}", name="refund_order")(
    _refund
)
refund_raising = agentdur.tool(effect="side_effect", key="refund:{order_id}", name="refund_order")(
    _refund
)
refund_keyless = agentdur.tool(effect="side_effect", name="refund_order")(_refund)
refund_approved = agentdur.tool(
    effect="side_effect", key="refund:{order_id}", name="refund_order", requires_approval=True
)(_refund)


@refund_order.reconcile
@refund_approved.reconcile
@refund_keyless.reconcile
def refund_happened(ctx: agentdur.ToolContext) -> dict[str, Any] | None:
    """Ask the payments service whether the refund with this key was executed."""
    append_json("reconcile.log", {"key": ctx.idempotency_key, "run_id": ctx.run_id})
    for record in read_json_lines(WORKDIR / "payments.log"):
        if record["key"] == ctx.idempotency_key:
            return {"refund_id": record["refund_id"], "amount": record["amount"]}
    return None


@refund_raising.reconcile
def refund_unknown(ctx: agentdur.ToolContext) -> dict[str, Any] | None:
    append_json("reconcile.log", {"key": ctx.idempotency_key, "run_id": ctx.run_id})
    raise ConnectionError("payments service unreachable")


def _insert(db: Any, order_id: str, note: str) -> None:
    if isinstance(db, sqlite3.Connection):
        db.execute("INSERT INTO app_orders (order_id, note) VALUES (?, ?)", (order_id, note))
    else:
        db.execute(
            "INSERT INTO public.app_orders (order_id, note) VALUES (%s, %s)", (order_id, note)
        )


@agentdur.tool(effect="side_effect", transactional=True)
def record_order(order_id: str, ctx: agentdur.ToolContext) -> dict[str, str]:
    """Record an order in the shop's own table, in the checkpoint's transaction."""
    _insert(ctx.db, order_id, f"tool step {ctx.step_index}")
    block("tx")
    return {"recorded": order_id}


@agentdur.transaction
def add_order(db: Any, order_id: str) -> str:
    _insert(db, order_id, "transaction step")
    block("tx")
    return order_id


@agentdur.step
def note(text: str) -> str:
    return text


@agentdur.workflow(name="effects.tx_workflow")
def tx_workflow(order_id: str) -> list[str]:
    return [note("before"), add_order(order_id), note("after")]


@agentdur.workflow(name="effects.inbox")
async def inbox() -> list[Any]:
    first = await agentdur.recv("orders")
    second = await agentdur.recv("orders")
    return [first, second]


# -- agents -----------------------------------------------------------------------------


def by_turn(*answers: Any) -> Scripted:
    def answer(messages: list[Message], info: ScriptInfo) -> Any:
        return answers[sum(isinstance(m, AssistantMessage) for m in messages)]

    return Scripted(answer)


REFUND_SCRIPT = (
    Scripted.tool_call("lookup_order", {"order_id": "B7"}),
    Scripted.tool_call("refund_order", {"order_id": "B7", "amount": 4990}),
    FINAL,
)
REFUND_TOOLS = {
    "yes": refund_order,
    "no": refund_manual,
    "raise": refund_raising,
    "keyless": refund_keyless,  # no domain key: the key is run_id:step
}
refund_agent = agentdur.Agent(
    f"effects-refund-{RECONCILE}",
    by_turn(*REFUND_SCRIPT),
    tools=[lookup_order, REFUND_TOOLS[RECONCILE]],
)
approval_agent = agentdur.Agent(
    "effects-approval", by_turn(*REFUND_SCRIPT), tools=[lookup_order, refund_approved]
)
tx_agent = agentdur.Agent(
    "effects-tx",
    by_turn(Scripted.tool_call("record_order", {"order_id": "T1"}), "Recorded."),
    tools=[record_order],
)


def outcome(rt: agentdur.Runtime, run_id: str) -> dict[str, Any]:
    run = rt.get_run(run_id)
    return {"status": run.status, "output": run.output, "error": run.error}


def wait_until(rt: agentdur.Runtime, run_id: str, statuses: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 60
    while rt.get_run(run_id).status not in statuses:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} stayed {rt.get_run(run_id).status}")
        rt.recover()
        time.sleep(0.05)


def main() -> int:
    url, run_id = sys.argv[2], sys.argv[4]
    executor = os.environ.get("EXECUTOR_ID", "effects-a")
    lease = float(os.environ.get("LEASE", "30"))
    settled = ("SUCCEEDED", "FAILED", "NEEDS_ATTENTION", "CANCELLED")
    with agentdur.Runtime(url, executor_id=executor, lease_seconds=lease) as rt:
        if MODE in ("refund", "approval", "tx-tool"):
            agent = {"refund": refund_agent, "approval": approval_agent, "tx-tool": tx_agent}
            rt.start_agent(agent[MODE], "Please refund order B7.", run_id=run_id)
            wait_until(rt, run_id, ("WAITING", *settled) if MODE == "approval" else settled)
        elif MODE == "inbox":
            rt.start(inbox, run_id=run_id)
            wait_until(rt, run_id, ("WAITING", *settled))
        elif MODE == "tx-step":
            rt.start(tx_workflow, "T1", run_id=run_id)
            wait_until(rt, run_id, settled)
        elif MODE == "recover":
            rt.recover()
            wait_until(rt, run_id, settled)
        else:
            raise SystemExit(f"unknown mode {MODE!r}")
        if MODE in ("approval", "inbox"):
            steps = [[s.step_index, s.kind, s.name, s.status] for s in rt.steps(run_id)]
            print(json.dumps(steps), flush=True)
        else:
            print(json.dumps(outcome(rt, run_id)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
