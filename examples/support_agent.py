"""A customer-support agent that survives being killed: each step is checkpointed.

    python examples/support_agent.py                   # offline: a scripted model
    python examples/support_agent.py --crash-after 3   # SIGKILL itself after 3 steps...
    python examples/support_agent.py                   # ...and the run resumes at step 3
    python examples/support_agent.py --model openai:gpt-4.1-mini  # or anthropic:NAME

It is also an app for the `agentdur` commands that execute code (run from the repository
root, as in the README): `agentdur replay support-demo --app examples.support_agent:rt`,
`agentdur fork support-demo --at 2 --dry-run --app examples.support_agent:rt`.

The agent looks the order up (`read_only`), refunds it through a payments service
(`side_effect`: a real HTTP server on 127.0.0.1 with a JSON ledger), emails a confirmation
(`idempotent`) and answers. A restarted process replays the recorded steps (no second
request to the model, no second refund) and continues from the first missing one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import agentdur
from agentdur.models import (
    AnthropicMessages,
    AssistantMessage,
    Message,
    Model,
    OpenAIChat,
    Scripted,
    ScriptInfo,
)

if __package__:  # imported as an app: --app examples.support_agent:rt
    from . import payments_service
else:  # run as a script: python examples/support_agent.py
    import payments_service

DATABASE_URL = "sqlite:///demo-state/support.db"
CUSTOMER = (
    "Hi, my order A1042 arrived yesterday and the teapot's lid is cracked. "
    "Can I get my money back? - Dana"
)
ORDERS = {  # the shop's database, for lookup_order
    "A1042": {"customer": "Dana Whitfield", "email": "dana@example.com", "status": "delivered",
              "items": ["Stoneware teapot, 1.2 l"], "total_cents": 3900},
}  # fmt: skip
# Where the tools find the outside world: the demo's state folder unless main() is told
# otherwise. Without a payments URL (imported as an app) a tool starts the service itself.
world: dict[str, Any] = {
    "payments_url": "",
    "ledger": Path("demo-state/payments.json"),
    "outbox": Path("demo-state/outbox"),
}
_service_lock = threading.Lock()


def payments_url() -> str:
    """The payments service's URL; started on the ledger at the first call if need be."""
    with _service_lock:
        if not world["payments_url"]:
            world["ledger"].parent.mkdir(parents=True, exist_ok=True)
            world["payments_url"] = payments_service.PaymentsService(world["ledger"]).start()
        url: str = world["payments_url"]
        return url


# -- tools ---------------------------------------------------------------------------------


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order: items, total, delivery status and the customer's email."""
    console.sync_point()
    order_id = order_id.strip().lstrip("#").upper()
    if order_id not in ORDERS:
        raise ValueError(f"there is no order {order_id!r}")  # the model is told, and can retry
    return {"order_id": order_id, **ORDERS[order_id]}


@agentdur.tool(effect="side_effect")
def refund_order(
    order_id: str, amount_cents: int, reason: str, ctx: agentdur.ToolContext
) -> dict[str, Any]:
    """Refund an order to the customer's original payment method.

    Args:
        order_id: the order to refund.
        amount_cents: how much to refund, in cents; at most the order's total.
        reason: a short reason, kept with the refund.
    """
    console.sync_point()
    return payments_service.create_refund(
        payments_url(), order_id, amount_cents, reason, idempotency_key=ctx.idempotency_key
    )


@refund_order.reconcile
def refund_happened(ctx: agentdur.ToolContext) -> dict[str, Any] | None:
    """After a crash during the refund: ask the payments service whether it happened."""
    return payments_service.find_refund(payments_url(), ctx.idempotency_key)


@agentdur.tool(effect="idempotent")
def send_email(to: str, subject: str, body: str, ctx: agentdur.ToolContext) -> dict[str, str]:
    """Email the customer. Sending again with the same step is harmless."""
    console.sync_point()
    message_id = re.sub(r"[^\w.-]", "_", ctx.idempotency_key)  # the same on every retry
    path = world["outbox"] / f"{message_id}.eml"
    if not path.exists():  # the outbox sends each message id once
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Message-ID: <{message_id}@shop.example>\nTo: {to}\n\n{subject}\n{body}")
    return {"message_id": message_id, "status": "sent"}


# -- the model: scripted offline, or a real one with --model --------------------------------

SCRIPT = [
    Scripted.tool_call("lookup_order", {"order_id": "A1042"}),
    Scripted.tool_call(
        "refund_order",
        {"order_id": "A1042", "amount_cents": 3900, "reason": "arrived damaged (cracked lid)"},
    ),
    Scripted.tool_call(
        "send_email",
        {
            "to": "dana@example.com",
            "subject": "Your refund",
            "body": "Hi Dana, we refunded 39.00 EUR for order A1042. Sorry!",
        },
    ),
    "I'm sorry the teapot arrived broken, Dana. I refunded the full 39.00 EUR for order "
    "A1042 to your original payment method (it shows up within 5 business days) and "
    "emailed you a confirmation. You don't need to send the teapot back.",
]


def scripted_turn(messages: list[Message], info: ScriptInfo) -> Any:
    console.sync_point()
    return SCRIPT[sum(isinstance(m, AssistantMessage) for m in messages)]


def make_model(spec: str) -> Model:
    if spec == "scripted":
        return Scripted(scripted_turn, model_name="scripted", delay=0.3)
    provider, _, name = spec.partition(":")
    adapters = {"openai": (OpenAIChat, "OPENAI_API_KEY"),
                "anthropic": (AnthropicMessages, "ANTHROPIC_API_KEY")}  # fmt: skip
    if provider not in adapters or not name:
        sys.exit(f"--model must be scripted, openai:NAME or anthropic:NAME, not {spec!r}")
    adapter, key = adapters[provider]
    if importlib.util.find_spec(provider) is None:
        sys.exit(f"--model {spec} needs the {provider} SDK: pip install {provider}")
    if not os.environ.get(key):
        sys.exit(f"--model {spec} needs {key} in the environment")
    return adapter(name)


def build_agent(model: Model) -> agentdur.Agent:
    return agentdur.Agent(
        "support",
        model,
        tools=[lookup_order, refund_order, send_email],
        instructions="You are a friendly support agent for a homeware shop. Look the order up "
        "before acting. Refund damaged items in full, email the customer a confirmation, then "
        "answer briefly.",
    )


# -- printing steps as they are checkpointed -------------------------------------------------


class Console:
    """Prints each checkpointed step once; with --crash-after, SIGKILLs the process."""

    def __init__(self) -> None:
        self.rt: agentdur.Runtime | None = None
        self.run_id = ""
        self.shown = 0
        self.crash_at = 0  # kill once this many steps are checkpointed (0: never)
        self.lock = threading.Lock()

    def sync_point(self) -> None:
        """Called by the main thread's polling and as each model or tool call starts."""
        if self.rt is None:
            return  # imported as an app: the agentdur command prints the steps
        with self.lock:
            for step in self.rt.steps(self.run_id)[self.shown :]:
                if step.status not in ("SUCCEEDED", "ERROR"):
                    break  # a refund is recorded STARTED before the call: not yet a checkpoint
                say(f"  step {step.step_index} {describe(step)}")
                self.shown += 1
            if self.crash_at and self.shown >= self.crash_at:
                say(f"  ... {self.shown} steps checkpointed: SIGKILL")
                os.kill(os.getpid(), signal.SIGKILL)


console = Console()
agent = build_agent(make_model("scripted"))
rt = agentdur.Runtime(DATABASE_URL)
"""The app for `agentdur replay/fork --app examples.support_agent:rt`; main() opens its own."""
rt.register(agent)


def say(text: str) -> None:
    """Print and flush; once stdout is gone (`| head`), print nothing more and go on."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the exit's flush finds somewhere to write
        os.close(devnull)


def describe(step: agentdur.StepInfo, width: int = 64) -> str:
    """`llm   scripted      SUCCEEDED calls refund_order({...})`, cut to fit a line."""
    if step.status != "SUCCEEDED":
        text = json.dumps(step.error, ensure_ascii=False)
    elif step.kind != "llm":
        text = json.dumps(step.output, ensure_ascii=False)
    else:
        response = agentdur.response_of(step)
        calls = [
            f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})" for c in response.tool_calls
        ]
        text = "calls " + ", ".join(calls) if calls else f"answers {response.text!r}"
    text = text if len(text) <= width else text[: width - 3] + "..."
    return f"{step.kind:5} {step.name:13} {step.status} {text}"


# -- the demo ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="A durable customer-support agent demo.")
    parser.add_argument("--model", default="scripted", help="scripted, openai:M or anthropic:M")
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--crash-after", type=int, default=0, help="SIGKILL after N steps")
    parser.add_argument("--fresh", action="store_true", help="delete the state, start over")
    args = parser.parse_args()

    url = args.database_url
    db_file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    state = db_file.parent if db_file else Path("demo-state")  # ledger next to the database
    ledger, marker, world["outbox"] = state / "payments.json", state / "run-id", state / "outbox"
    world["ledger"] = ledger
    if args.crash_after and not args.fresh and finished(url, run_id_of(marker, args.model)):
        say("(the last run had finished: --crash-after starts another, as with --fresh)\n")
        args.fresh = True
    if args.fresh:
        fresh_start(url, db_file, state, marker)
    run_id = run_id_of(marker, args.model)

    service = payments_service.PaymentsService(ledger)
    world["payments_url"] = service.start()
    demo_agent = agent if args.model == "scripted" else build_agent(make_model(args.model))
    say(f"database:        {url}\npayments ledger: {ledger} (service at {world['payments_url']})")
    say(f"email outbox:    {world['outbox']}/\nrun id:          {run_id}\n")
    say(textwrap.fill("customer: " + CUSTOMER, 92) + "\n")

    runtime = agentdur.Runtime(url, executor_id="support-demo", recover=True)
    console.rt, console.run_id = runtime, run_id
    with contextlib.suppress(agentdur.RunNotFoundError):  # a run from an earlier process?
        status = runtime.get_run(run_id).status
        console.sync_point()  # print the steps the database holds
        done = "resumes now" if status == "RUNNING" else f"is {status}: nothing runs again"
        say(f"  ^ {console.shown} steps recorded by an earlier process; the run {done}")
    console.crash_at = console.shown + args.crash_after if args.crash_after else 0
    with runtime:  # opening it resumes the run if a crash interrupted it
        handle = runtime.start_agent(demo_agent, CUSTOMER, run_id=run_id)
        result = follow(handle)
        run = runtime.get_run(run_id)
    service.stop()
    if result is None:
        return 1
    counts = payments_service.stats(ledger, key_prefix=f"{run_id}:")  # this run's refunds
    say("\n" + textwrap.fill("agent: " + result["output"], 92) + "\n")
    say(
        f"run {run_id}: {run.status}, {console.shown} steps, executed by {run.attempts} "
        f"process(es)\npayments service: refunds executed: {counts['refunds_executed']} "
        f"(requests received: {counts['requests_received']})"
    )
    say(f"inspect it:      agentdur runs show {run_id} --database-url {url}")
    return 0


def follow(handle: agentdur.RunHandle) -> dict[str, Any] | None:
    """Print steps as they are checkpointed until the run ends; its output, or None."""
    while True:
        console.sync_point()
        try:
            result: dict[str, Any] | None = handle.result(timeout=0.05)
        except TimeoutError:
            continue
        except agentdur.AgentdurError as exc:
            result = None
            say(f"the run stopped: {exc}")
        console.sync_point()
        return result


def run_id_of(marker: Path, model: str) -> str:
    if not marker.exists():  # a fixed run id until --fresh: running again resumes that run
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("support-demo")
    suffix = "" if model == "scripted" else "-" + re.sub(r"[^\w.-]", "-", model)
    return marker.read_text().strip() + suffix


def finished(url: str, run_id: str) -> bool:
    rt = agentdur.Runtime(url)
    with contextlib.closing(rt), contextlib.suppress(agentdur.RunNotFoundError):
        return rt.get_run(run_id).status in ("SUCCEEDED", "FAILED", "CANCELLED")
    return False


def fresh_start(url: str, db_file: Path | None, state: Path, marker: Path) -> None:
    """--fresh: delete the demo's state. A PostgreSQL database keeps the old run (cancelled
    if unfinished, so recovery leaves it alone) and the demo starts another run id."""
    old_run = marker.read_text().strip() if marker.exists() else None
    sqlite_files = [Path(f"{db_file}{end}") for end in ("", "-wal", "-shm")] if db_file else []
    for path in [state / "payments.json", marker, *sqlite_files]:
        path.unlink(missing_ok=True)
    shutil.rmtree(state / "outbox", ignore_errors=True)
    if db_file is None:
        with agentdur.Runtime(url) as rt, contextlib.suppress(agentdur.RunNotFoundError):
            rt.cancel(old_run or "support-demo")
        state.mkdir(parents=True, exist_ok=True)
        marker.write_text(time.strftime("support-demo-%Y%m%d-%H%M%S"))


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback
        print(
            "interrupted: the steps checkpointed so far stay recorded; "
            "run the demo again to resume the run",
            file=sys.stderr,
        )
        code = 130
    sys.exit(code)
