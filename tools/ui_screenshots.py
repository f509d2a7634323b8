"""Screenshots of the web UI for docs/ui.md: the runs list, a run's timeline, an LLM step
and the inbox, written to docs/img/ui-*.png.

    python tools/ui_screenshots.py [--out docs/img]

Records a few runs with the Scripted model into a throwaway SQLite database (a support
agent whose parallel lookups and one retried tool make a readable timeline, a failed
run, refunds waiting for approval), serves `agentdur ui`'s app on 127.0.0.1 and shoots
each page in Debian's headless Chromium (/usr/bin/chromium) through Playwright. Needs
the dev extra (Playwright) and `apt-get install chromium`; Playwright's own browser
download is never used.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import sync_playwright

import agentdur
from agentdur.testing import Scripted
from agentdur.ui.app import LOOPBACK_HOSTS, create_app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
VIEWPORT = {"width": 1200, "height": 640}
TALL = {"ui-run.png": 1200, "ui-step.png": 1000}  # px shot of the page, not the viewport


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order."""
    time.sleep(0.12)
    return {"order_id": order_id, "status": "delivered", "total": 4900}


@agentdur.tool(effect="read_only")
def check_stock(sku: str) -> dict[str, Any]:
    """Check the stock of a product."""
    time.sleep(0.2)
    return {"sku": sku, "in_stock": 3}


_flaky_calls = 0


@agentdur.tool(effect="idempotent", retries=2)
def send_email(to: str, subject: str) -> str:
    """Email a customer (fails once, then succeeds: a retried step)."""
    global _flaky_calls
    _flaky_calls += 1
    time.sleep(0.08)
    if _flaky_calls == 1:
        raise ConnectionError("smtp: connection reset")
    return "sent"


@agentdur.tool(effect="side_effect", requires_approval=True)
def refund_order(order_id: str, amount: int) -> dict[str, Any]:
    """Refund an order (an operator approves it first)."""
    return {"refunded": amount, "order_id": order_id}


def _record(rt: agentdur.Runtime) -> str:
    """Record the runs; return the id of the one to show."""
    support = agentdur.Agent(
        "support",
        Scripted(
            [
                Scripted.tool_calls(
                    [
                        ("lookup_order", {"order_id": "A1042"}),
                        ("lookup_order", {"order_id": "A1043"}),
                        ("check_stock", {"sku": "KETTLE-2"}),
                    ]
                ),
                Scripted.tool_call(
                    "send_email", {"to": "ana@example.com", "subject": "Your order"}
                ),
                "Both orders were delivered; a replacement kettle is in stock and I emailed Ana.",
            ],
            model_name="gpt-4.1-mini",
            delay=0.15,
        ),
        tools=[lookup_order, check_stock, send_email],
        instructions="You are a support agent. Be brief; check facts with the tools.",
    )
    orders = agentdur.Agent(
        "orders",
        Scripted([Scripted.tool_call("lookup_order", {"order_id": "C9"}), "Delivered."]),
        tools=[lookup_order],
    )
    for i in range(3):
        rt.run_agent(orders, f"where is order C9? ({i})")
    shown = "support-ana"
    rt.run_agent(support, "Where are orders A1042 and A1043? Is KETTLE-2 in stock?", run_id=shown)
    broken = agentdur.Agent("triage", Scripted([]), tools=[])  # out of script: FAILED
    with contextlib.suppress(agentdur.AgentdurError):
        rt.run_agent(broken, "classify this ticket", run_id="triage-1")
    refunds = agentdur.Agent(
        "refunds", Scripted(_refund_script), tools=[refund_order], instructions=REFUND_RULES
    )
    for order in ("A1042", "B77"):
        run_id = f"refund-{order.lower()}"
        rt.start_agent(refunds, f"refund order {order}", run_id=run_id)
        deadline = time.monotonic() + 10
        while rt.get_run(run_id).status != "WAITING":
            if time.monotonic() > deadline:
                raise SystemExit(f"{run_id} did not reach WAITING")
            time.sleep(0.02)
    return shown


REFUND_RULES = "Refund when the customer is entitled to it."
AMOUNTS = {"A1042": 4900, "B77": 129000}


def _refund_script(messages: list[Any], info: Any) -> Any:
    if any(getattr(m, "role", "") == "assistant" for m in messages):
        return "ok"
    prompt = next(m.content for m in messages if m.role == "user")
    order = prompt.rsplit(" ", 1)[-1]
    return Scripted.tool_call("refund_order", {"order_id": order, "amount": AMOUNTS[order]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'agentdur.db'}"
        with agentdur.Runtime(url) as rt:
            run_id = _record(rt)
            llm_step = max(s.step_index for s in rt.steps(run_id) if s.kind == "llm")
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            app = create_app(url, allowed_hosts=LOOPBACK_HOSTS)
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while not server.started:
                    if time.monotonic() > deadline or not thread.is_alive():
                        raise SystemExit("the UI server did not start")
                    time.sleep(0.02)
                _shoot(
                    base,
                    args.out,
                    {
                        "ui-runs.png": "/",
                        "ui-run.png": f"/runs/{run_id}",
                        "ui-step.png": f"/runs/{run_id}/steps/{llm_step}",
                        "ui-inbox.png": "/inbox",
                    },
                )
            finally:
                server.should_exit = True
                thread.join(10)
    return 0


def _shoot(base: str, out: Path, pages: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport=VIEWPORT,
            timeout=TIMEOUT_MS,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            for name, path in pages.items():
                page.goto(base + path, wait_until="load")
                # The run and step pages are taller: their timeline, their messages.
                height = TALL.get(name)
                clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
                page.screenshot(
                    path=str(out / name),
                    full_page=height is not None,
                    clip=clip if height else None,
                )
                size = (out / name).stat().st_size
                print(f"{out / name}: {path} ({size // 1024} KB)")
        finally:
            context.close()


if __name__ == "__main__":
    raise SystemExit(main())
