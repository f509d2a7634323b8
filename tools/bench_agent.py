"""Agent-loop and replay benchmarks, registered into tools/bench.py.

agent   overhead per agent turn (one LLM step + one tool step) against the same loop
        without durability: same Scripted model (zero latency), same tool.
replay  time to replay a recorded 1,000-step run (no network, no writes).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import agentdur
from agentdur.models import AssistantMessage, Scripted, ToolResultMessage, UserMessage

TARGETS_US = {"sqlite": 600.0, "postgres": 800.0}


@agentdur.tool(effect="read_only")
def fetch_page(page: int) -> dict[str, Any]:
    """Fetch one page of results."""
    return {"page": page, "items": [page * 10 + i for i in range(5)]}


def _script(turns: int) -> Callable[..., Any]:
    def answer(messages: list[Any], info: Any) -> Any:
        done = sum(1 for m in messages if isinstance(m, AssistantMessage))
        if done >= turns:
            return "All pages fetched."
        return Scripted.tool_call("fetch_page", {"page": done}, id=f"call_{done}")

    return answer


async def _plain_loop(turns: int) -> str:
    """The same conversation without agentdur: model, tool, messages, nothing recorded."""
    model = Scripted(_script(turns))
    tools = [agentdur.models.ToolDefinition(**fetch_page.definition())]
    messages: list[Any] = [UserMessage(content="Fetch every page.")]
    while True:
        response = await model.request(messages, tools)
        messages.append(AssistantMessage.from_response(response))
        if not response.tool_calls:
            return response.text or ""
        for call in response.tool_calls:
            arguments = fetch_page.parse_arguments(call.raw_arguments)
            result = await fetch_page.call(arguments)
            messages.append(
                ToolResultMessage(
                    tool_call_id=call.id, name=call.name, content=agentdur.codec.dumps(result)
                )
            )


def register(bench: Any) -> None:
    """Add the benchmarks to tools/bench.py's registry."""

    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--turns", type=int, default=50, help="agent turns (default 50)")
        parser.add_argument("--backend", choices=(*bench.BACKENDS, "all"), default="all")

    @bench.benchmark("agent", help="agent-loop overhead per turn", arguments=arguments)
    def bench_agent(args: argparse.Namespace) -> dict[str, Any]:
        turns = args.turns
        plain = bench.median(
            bench.time_runs(
                lambda: asyncio.run(_plain_loop(turns)), runs=args.runs, warmup=args.warmup
            )
        )
        results = []
        for backend in bench.BACKENDS if args.backend == "all" else (args.backend,):
            with _runtime(bench, args, backend) as rt:
                agent = agentdur.Agent(
                    f"bench-agent-{uuid.uuid4().hex[:6]}",
                    Scripted(_script(turns)),
                    [fetch_page],
                    max_turns=turns + 1,
                )
                durable = bench.median(
                    bench.time_runs(
                        lambda rt=rt, agent=agent: rt.run_agent(agent, "Fetch every page."),
                        runs=args.runs,
                        warmup=args.warmup,
                    )
                )
            overhead = (durable - plain) / turns * 1e6
            results.append(
                {
                    "backend": backend,
                    "turns": turns,
                    "durable_ms": round(durable * 1e3, 2),
                    "plain_ms": round(plain * 1e3, 2),
                    "overhead_us_per_turn": round(overhead),
                    "ratio": round(durable / plain, 1),
                    "target_us": TARGETS_US[backend],
                }
            )
        lines = [
            f"agent: {turns} turns (LLM step + tool step each), Scripted model, zero latency, "
            f"median of {args.runs} runs",
            f"{'backend':<9} {'durable ms':>10} {'plain ms':>9} {'µs/turn':>8} "
            f"{'ratio':>6} {'target µs':>10}",
        ]
        lines += [
            f"{r['backend']:<9} {r['durable_ms']:>10.1f} {r['plain_ms']:>9.2f} "
            f"{r['overhead_us_per_turn']:>8} {r['ratio']:>6} {r['target_us']:>10.0f}"
            for r in results
        ]
        return {"results": results, "text": "\n".join(lines)}

    def replay_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steps", type=int, default=1000, help="recorded steps (1000)")
        parser.add_argument("--backend", choices=(*bench.BACKENDS, "all"), default="all")

    @bench.benchmark("replay", help="replay of a recorded run", arguments=replay_arguments)
    def bench_replay(args: argparse.Namespace) -> dict[str, Any]:
        results = []
        for backend in bench.BACKENDS if args.backend == "all" else (args.backend,):
            with _runtime(bench, args, backend) as rt:
                run_id = rt.start(bench.steps_workflow, args.steps).run_id
                rt.handle(run_id).result()
                agent = agentdur.Agent(
                    f"bench-replay-{uuid.uuid4().hex[:6]}",
                    Scripted(_script(args.steps // 2)),
                    [fetch_page],
                    max_turns=args.steps // 2 + 1,
                )
                agent_run = rt.run_agent(agent, "Fetch every page.").run_id
                workflow_s = bench.median(
                    bench.time_runs(
                        lambda rt=rt, run_id=run_id: rt.replay(run_id),
                        runs=args.runs,
                        warmup=args.warmup,
                    )
                )
                agent_s = bench.median(
                    bench.time_runs(
                        lambda rt=rt, run_id=agent_run: rt.replay(run_id),
                        runs=args.runs,
                        warmup=args.warmup,
                    )
                )
                agent_steps = len(rt.steps(agent_run))
            results.append(
                {
                    "backend": backend,
                    "workflow_steps": args.steps,
                    "workflow_replay_ms": round(workflow_s * 1e3, 1),
                    "agent_steps": agent_steps,
                    "agent_replay_ms": round(agent_s * 1e3, 1),
                }
            )
        lines = [f"replay: median of {args.runs} replays of recorded runs (one query each)"]
        lines += [
            f"{r['backend']:<9} workflow of {r['workflow_steps']} steps: "
            f"{r['workflow_replay_ms']} ms; agent run of {r['agent_steps']} steps: "
            f"{r['agent_replay_ms']} ms"
            for r in results
        ]
        return {"results": results, "text": "\n".join(lines)}


class _runtime:
    """A Runtime on a fresh database of the backend (temp SQLite file, or the bench DB)."""

    def __init__(self, bench: Any, args: argparse.Namespace, backend: str) -> None:
        self.bench, self.args, self.backend = bench, args, backend
        self.folder: tempfile.TemporaryDirectory[str] | None = None
        self.url = ""

    def __enter__(self) -> agentdur.Runtime:
        if self.backend == "sqlite":
            self.folder = tempfile.TemporaryDirectory(prefix="agentdur-bench-")
            self.url = f"sqlite:///{self.folder.name}/bench.db"
        else:
            self.url = self.bench.postgres_url(self.args)
            self.bench.drop_postgres_schema(self.url, "agentdur")
        self.rt = agentdur.Runtime(self.url, executor_id=f"bench-{uuid.uuid4().hex[:8]}")
        return self.rt.open()

    def __exit__(self, *exc: object) -> None:
        self.rt.close()
        if self.folder is not None:
            self.folder.cleanup()
        else:
            self.bench.drop_postgres_schema(self.url, "agentdur")
