"""Crash-test harness: run the support agent many times while SIGKILLing its processes.

    python tools/crashtest.py --backend sqlite --runs 80 --seed 1
    python tools/crashtest.py --backend postgres --runs 40 --seed 1 \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/postgres

Each run is the support agent on a Scripted model: lookup_order (read_only), then
refund_order (side_effect, domain key `refund:{order_id}`, paid through a fake payments
service), then send_email (idempotent), then the final answer. Runs get distinct order
ids, except that about one in four reuses an earlier run's order id, so the effect
ledger's deduplication across runs is exercised. One run in four uses a refund tool
without a reconcile hook, so uncertain refunds stop those runs as NEEDS_ATTENTION.

Work is done by worker processes, one at a time, each opening
`Runtime(url, executor_id=..., recover=True)` (mostly the same executor id, sometimes
another one, which must wait for the dead executor's leases to expire), recovering what
is unfinished and starting up to `--batch` new runs. Most workers are SIGKILLed: either by
themselves at a named kill point with a probability (CRASH_POINT / CRASH_PROB: inside
the model call before or after it answered, inside each tool, right after the payments
service counted a refund but before the tool returned, inside the reconcile hook), or by
this process after a random delay. After each worker, this process acts as the operator
for runs that need attention because a refund's outcome was uncertain: it asks the
payments service whether `refund:{order_id}` was executed and calls
`rt.resolve(run, step, "result", <the service's record>)` if so, else
`rt.resolve(run, step, "retry")`. It stops when every run has finished.

The fake payments service is a file in the work directory, one fsynced JSON line per
refund executed; it never deduplicates, so a second execution is a second line. The
Scripted model logs "start" and "end" of every call (run id, turn, pid) the same way.

Checked (each failure is one violation, printed on stderr):
- every run SUCCEEDED (or is NEEDS_ATTENTION with a reason), with the expected steps,
  output and email; no worker exited other than cleanly or by SIGKILL, none hung;
- the payments service executed each order's refund exactly once (never twice for one
  step or one domain key, never zero times for a run that recorded a refund), every run's
  refund step holds the service's record for its order, and the `effects` ledger (plain
  SQL) has one DONE row per order with that record;
- no recorded step was lost or changed: the SUCCEEDED/ERROR steps seen after each kill are
  all still present and identical later;
- every LLM turn of a run reached the model once, except that a call is repeated when
  the process making it was killed before the next turn of that run (the call was in
  flight, or answered but not yet checkpointed); two calls of one turn from one process,
  or a repeat after that process moved on, is a violation.

Prints `N runs, K kills, V violations` and exits 1 if V > 0. `--keep` keeps the work
directory (and the PostgreSQL database) for a look afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import agentdur
from agentdur.models import AssistantMessage, Message, Scripted, ScriptInfo

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
KILL_POINTS = {  # where a worker may kill itself, with how often each is picked
    "llm_start": 1,  # the model call is in flight
    "llm_end": 1,  # the model answered; its step is not checkpointed yet
    "lookup": 1,  # inside the read_only tool
    "refund_before": 2,  # the refund's ledger entry is STARTED; nothing paid yet
    "refund_after": 3,  # the payments service counted the refund; the tool has not returned
    "reconcile": 2,  # inside the reconcile hook, on recovery of a STARTED refund
    "email": 1,  # inside the idempotent tool, after the outbox has the message
}
SETTLED = ("SUCCEEDED", "FAILED", "CANCELLED", "NEEDS_ATTENTION")
EXPECTED_STEPS = [
    ("llm", "crash-scripted"),
    ("tool", "lookup_order"),
    ("llm", "crash-scripted"),
    ("tool", "refund_order"),
    ("llm", "crash-scripted"),
    ("tool", "send_email"),
    ("llm", "crash-scripted"),
]
LEASE_SECONDS = 2.0
WORKER_TIMEOUT = 180.0


# -- files shared by the worker and this process -------------------------------------------


def append_json(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: it survives a SIGKILL right after."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a torn last line cannot happen
            records.append(json.loads(line))
    return records


def final_text(order_id: str) -> str:
    return f"Order {order_id} is refunded and the customer has been emailed."


def amount_of(order_id: str) -> int:
    return 1000 + sum(map(ord, order_id)) % 9000


# -- the application (built in worker processes only) --------------------------------------


class App:
    """The support agent, its tools, the fake payments service and the kill points."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.payments = workdir / "payments.log"
        self.llm_log = workdir / "llm.log"
        self.outbox = workdir / "outbox"
        self.point = os.environ.get("CRASH_POINT", "")
        self.probability = float(os.environ.get("CRASH_PROB", "0"))
        self.random = random.Random(os.getpid())
        self.agents = self._build()

    def maybe_die(self, point: str) -> None:
        """SIGKILL this process at `point` with the configured probability."""
        if self.point in (point, "any") and self.random.random() < self.probability:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- the fake payments service --

    def pay(self, key: str, order_id: str, amount: int, run_id: str, step: int) -> dict[str, Any]:
        """Execute a refund: count it (fsynced) and answer with its record."""
        record = {
            "key": key,
            "order_id": order_id,
            "amount_cents": amount,
            "refund_id": f"re_{uuid.uuid4().hex[:12]}",
            "status": "succeeded",
        }
        append_json(self.payments, {**record, "run_id": run_id, "step": step, "pid": os.getpid()})
        return record

    def find_refund(self, key: str) -> dict[str, Any] | None:
        """The refund executed with this key, or None (what a reconcile hook asks)."""
        for line in read_json_lines(self.payments):
            if line["key"] == key:
                return public_record(line)
        return None

    # -- tools, model, agents --

    def _build(self) -> dict[str, agentdur.Agent]:
        app = self

        @agentdur.tool(effect="read_only")
        def lookup_order(order_id: str) -> dict[str, Any]:
            """Look an order up."""
            app.maybe_die("lookup")
            return {"order_id": order_id, "total_cents": amount_of(order_id), "status": "ok"}

        def refund(order_id: str, amount_cents: int, ctx: agentdur.ToolContext) -> dict[str, Any]:
            """Refund an order through the payments service."""
            app.maybe_die("refund_before")
            record = app.pay(
                ctx.idempotency_key, order_id, amount_cents, ctx.run_id, ctx.step_index
            )
            app.maybe_die("refund_after")  # counted by the service, not yet returned
            return record

        key = "refund:{order_id}"
        refund_order = agentdur.tool(effect="side_effect", key=key, name="refund_order")(refund)
        refund_manual = agentdur.tool(effect="side_effect", key=key, name="refund_order")(refund)

        @refund_order.reconcile
        def refund_happened(ctx: agentdur.ToolContext) -> dict[str, Any] | None:
            app.maybe_die("reconcile")
            return app.find_refund(ctx.idempotency_key)

        @agentdur.tool(effect="idempotent")
        def send_email(to: str, subject: str, ctx: agentdur.ToolContext) -> dict[str, str]:
            """Email the customer; the outbox sends one message per idempotency key."""
            app.outbox.mkdir(exist_ok=True)
            path = app.outbox / ctx.idempotency_key.replace(":", "__")
            if not path.exists():
                path.write_text(json.dumps({"to": to, "subject": subject}))
            app.maybe_die("email")
            return {"message_id": ctx.idempotency_key, "status": "sent"}

        model = Scripted(self._answer, model_name="crash-scripted")
        return {
            "reconcile": agentdur.Agent(
                "crash-support", model, tools=[lookup_order, refund_order, send_email]
            ),
            "manual": agentdur.Agent(
                "crash-support-manual", model, tools=[lookup_order, refund_manual, send_email]
            ),
        }

    async def _answer(self, messages: list[Message], info: ScriptInfo) -> Any:
        prompt = json.loads(str(messages[0].content))
        run_id, order_id = prompt["run_id"], prompt["order_id"]
        turn = sum(isinstance(m, AssistantMessage) for m in messages)
        event = {"run_id": run_id, "turn": turn, "pid": os.getpid()}
        append_json(self.llm_log, {**event, "event": "start", "t": time.time()})
        self.maybe_die("llm_start")
        await asyncio.sleep(0.01)
        answers = [
            Scripted.tool_call("lookup_order", {"order_id": order_id}),
            Scripted.tool_call(
                "refund_order", {"order_id": order_id, "amount_cents": amount_of(order_id)}
            ),
            Scripted.tool_call(
                "send_email",
                {"to": f"{order_id.lower()}@example.com", "subject": f"Refund of {order_id}"},
            ),
            final_text(order_id),
        ]
        append_json(self.llm_log, {**event, "event": "end", "t": time.time()})
        self.maybe_die("llm_end")
        return answers[turn]


def public_record(line: dict[str, Any]) -> dict[str, Any]:
    keys = ("key", "order_id", "amount_cents", "refund_id", "status")
    return {k: line[k] for k in keys}


def worker(workdir: Path) -> int:
    """One worker process: recover what is unfinished, start up to BATCH new runs, and
    exit once all of those have settled (finished or stopped for an operator)."""
    plan = json.loads((workdir / "plan.json").read_text())
    app = App(workdir)
    executor = os.environ["EXECUTOR_ID"]
    batch = int(os.environ.get("BATCH", "2"))
    with agentdur.Runtime(
        plan["url"], executor_id=executor, recover=True, lease_seconds=LEASE_SECONDS
    ) as rt:
        (workdir / f"ready-{os.getpid()}").write_text("")
        statuses = {run.run_id: run.status for run in rt.list_runs(limit=1_000_000)}
        targets = {r["run_id"] for r in plan["runs"] if statuses.get(r["run_id"]) not in SETTLED}
        targets &= set(statuses)  # unfinished runs of earlier workers
        new = [r for r in plan["runs"] if r["run_id"] not in statuses][:batch]
        for run in new:
            prompt = json.dumps({"run_id": run["run_id"], "order_id": run["order_id"]})
            rt.start_agent(app.agents[run["agent"]], prompt, run_id=run["run_id"])
            targets.add(run["run_id"])
        while True:
            statuses = {run.run_id: run.status for run in rt.list_runs(limit=1_000_000)}
            if all(statuses.get(run_id) in SETTLED for run_id in targets):
                return 0
            rt.recover()  # runs of a dead executor, once their lease expired
            time.sleep(0.05)


# -- the database, seen from this process --------------------------------------------------


class Database:
    """Plain SQL on the run's database: what a user would look at with sqlite3 or psql."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.prefix = "" if self.sqlite else "agentdur."

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        text = sql.format(p=self.prefix)
        if self.sqlite:
            lite = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=60)
            try:
                return [tuple(row) for row in lite.execute(text, params).fetchall()]
            finally:
                lite.close()
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(text.replace("?", "%s"), params)  # type: ignore[call-overload]
            return [tuple(row) for row in cur.fetchall()]

    def json(self, value: Any) -> Any:
        return json.loads(value) if self.sqlite and value is not None else value

    def runs(self) -> dict[str, tuple[str, Any]]:
        rows = self.rows("SELECT run_id, status, error FROM {p}runs")
        return {r[0]: (r[1], self.json(r[2])) for r in rows}

    def finished_steps(self) -> dict[tuple[str, int], tuple[Any, ...]]:
        rows = self.rows(
            "SELECT run_id, step_index, name, kind, status, input, output, error, attempts,"
            " idempotency_key, request_hash, usage, started_at, finished_at, deduplicated"
            " FROM {p}steps WHERE status IN ('SUCCEEDED', 'ERROR')"
        )
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}

    def steps(self, run_id: str) -> list[tuple[int, str, str, str, Any, Any, bool]]:
        rows = self.rows(
            "SELECT step_index, kind, name, status, input, output, deduplicated FROM {p}steps"
            " WHERE run_id = ? ORDER BY step_index",
            (run_id,),
        )
        return [
            (r[0], r[1], r[2], r[3], self.json(r[4]), self.json(r[5]), bool(r[6])) for r in rows
        ]

    def ledger(self) -> dict[str, tuple[str, str, int, Any]]:
        rows = self.rows(
            "SELECT idempotency_key, run_id, step_index, status, result FROM {p}effects"
        )
        return {r[0]: (r[3], r[1], r[2], self.json(r[4])) for r in rows}


@contextlib.contextmanager
def database(backend: str, workdir: Path, server: str, keep: bool) -> Any:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'crash.db'}"
        return
    name = f"agentdur_crash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        if keep:
            print(f"kept database {base}/{name}", file=sys.stderr)
        else:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Harness:
    url: str
    workdir: Path
    runs: list[dict[str, str]]
    rng: random.Random
    batch: int
    verbose: bool
    violations: list[str] = field(default_factory=list)
    kills: int = 0
    starts: int = 0
    killed_pids: set[int] = field(default_factory=set)
    seen_steps: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    resolutions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    attention_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kill_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self.db = Database(self.url)
        self.operator = agentdur.Runtime(self.url, executor_id="crash-operator")

    def violation(self, text: str) -> None:
        self.violations.append(text)
        print(f"VIOLATION: {text}", file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    # -- one worker --

    def spawn(self, max_kills: int) -> None:
        env = {
            **os.environ,
            "EXECUTOR_ID": "crash-main" if self.rng.random() < 0.75 else "crash-other",
            "BATCH": str(self.batch),
            "CRASH_POINT": "",
            "CRASH_PROB": "0",
        }
        timer: float | None = None
        kind = "none"
        roll = self.rng.random()
        if self.kills < max_kills:
            if roll < 0.5:  # the worker kills itself at a named point
                kind = self.rng.choices(list(KILL_POINTS), weights=list(KILL_POINTS.values()))[0]
                env["CRASH_POINT"] = kind
                env["CRASH_PROB"] = f"{self.rng.choice((0.5, 1.0, 1.0))}"
            elif roll < 0.95:  # killed from here while it works
                kind = "timer"
                timer = self.rng.uniform(0.0, 0.6)
            else:  # killed from here while it starts and recovers
                kind = "timer-at-start"
                timer = self.rng.uniform(0.0, 0.6)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(self.workdir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.starts += 1
        if timer is not None:
            begin = time.monotonic()
            if kind == "timer":  # count from when the runtime is open and recovering
                ready = self.workdir / f"ready-{proc.pid}"
                while not ready.exists() and proc.poll() is None:
                    if time.monotonic() - begin > WORKER_TIMEOUT:
                        break
                    time.sleep(0.005)
                begin = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, timer - (time.monotonic() - begin)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        try:
            _, stderr = proc.communicate(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            self.violation(f"worker {proc.pid} hung for {WORKER_TIMEOUT:.0f}s: {stderr[-2000:]}")
            return
        if proc.returncode == -signal.SIGKILL:
            self.kills += 1
            self.killed_pids.add(proc.pid)
            self.kill_kinds[kind] += 1
            self.log(f"worker {proc.pid} killed ({kind})")
        elif proc.returncode != 0:
            self.violation(f"worker {proc.pid} exited {proc.returncode}: {stderr[-3000:]}")
        else:
            self.log(f"worker {proc.pid} finished ({kind} did not fire)")
        self.check_steps_kept()

    # -- the operator --

    def resolve_attention(self) -> None:
        """Settle runs stopped by an uncertain refund, asking the payments service."""
        payments = read_json_lines(self.workdir / "payments.log")
        executed = {line["key"]: public_record(line) for line in payments}
        for run_id, (status, error) in sorted(self.db.runs().items()):
            if status != "NEEDS_ATTENTION":
                continue
            reason = error or {}
            message = str(reason.get("message", ""))
            if "step_index" not in reason or not message:
                self.violation(f"run {run_id} needs attention without a reason: {error!r}")
                continue
            if reason.get("tool") != "refund_order":
                continue  # not something this operator knows how to settle
            index = int(reason["step_index"])
            step = {s[0]: s for s in self.db.steps(run_id)}.get(index)
            if step is None or step[3] != "STARTED":
                self.violation(f"run {run_id} needs attention at step {index}, not STARTED")
                continue
            self.attention_reasons[_reason_kind(message)] += 1
            # The arguments as the store rebuilds them (a tool step stores a reference
            # to the LLM step's call, not the arguments again).
            recorded = {s.step_index: s for s in self.operator.steps(run_id)}[index]
            key = f"refund:{recorded.input['arguments']['order_id']}"
            if key in executed:
                self.operator.resolve(run_id, index, "result", executed[key])
                self.resolutions["result"] += 1
            else:
                self.operator.resolve(run_id, index, "retry")
                self.resolutions["retry"] += 1
            self.log(f"operator resolved {run_id} step {index}: {message[:80]}")

    # -- checks --

    def check_steps_kept(self) -> None:
        """Every finished step seen before is still recorded, unchanged."""
        now = self.db.finished_steps()
        for where, before in self.seen_steps.items():
            after = now.get(where)
            if after is None:
                self.violation(f"step {where} was recorded finished and is now gone")
            elif after != before:
                self.violation(f"step {where} changed: {before!r} -> {after!r}")
        for where, step in now.items():
            self.seen_steps.setdefault(where, step)

    def check_final(self) -> None:
        runs = self.db.runs()
        payments = read_json_lines(self.workdir / "payments.log")
        per_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        per_step: dict[tuple[str, int], int] = defaultdict(int)
        for line in payments:
            per_key[line["key"]].append(line)
            per_step[(line["run_id"], line["step"])] += 1
        for key, lines in per_key.items():
            if len(lines) > 1:
                self.violation(f"{key} was executed {len(lines)} times: {lines}")
        for (run_id, step), count in per_step.items():
            if count > 1:
                self.violation(f"run {run_id} step {step} executed its refund {count} times")
        ledger = self.db.ledger()
        outbox = self.workdir / "outbox"
        for run in self.runs:
            self.check_run(run, runs.get(run["run_id"]), per_key, ledger, outbox)
        for key, (status, run_id, index, _) in ledger.items():
            if status != "DONE" and runs.get(run_id, ("",))[0] == "SUCCEEDED":
                self.violation(f"ledger entry {key} of run {run_id} step {index} is {status}")
        self.check_llm_calls()

    def check_run(
        self,
        run: dict[str, str],
        found: tuple[str, Any] | None,
        per_key: dict[str, list[dict[str, Any]]],
        ledger: dict[str, tuple[str, str, int, Any]],
        outbox: Path,
    ) -> None:
        run_id, order_id = run["run_id"], run["order_id"]
        if found is None:
            self.violation(f"run {run_id} was never started")
            return
        status, error = found
        if status == "NEEDS_ATTENTION":
            if not (error or {}).get("message"):
                self.violation(f"run {run_id} needs attention without a reason")
            return
        if status != "SUCCEEDED":
            self.violation(f"run {run_id} ended {status}: {error!r}")
            return
        steps = self.db.steps(run_id)
        shape = [(s[1], s[2]) for s in steps]
        if shape != EXPECTED_STEPS or any(s[3] != "SUCCEEDED" for s in steps):
            self.violation(f"run {run_id} has steps {[(s[1], s[2], s[3]) for s in steps]}")
            return
        output = self.db.rows("SELECT output FROM {p}runs WHERE run_id = ?", (run_id,))[0][0]
        if self.db.json(output).get("output") != final_text(order_id):
            self.violation(f"run {run_id} answered {output!r}")
        key = f"refund:{order_id}"
        executed = per_key.get(key, [])
        refund = steps[3][5]
        if len(executed) != 1:
            self.violation(f"run {run_id} recorded refund {refund!r}; service executed {executed}")
        elif refund != public_record(executed[0]):
            self.violation(f"run {run_id} recorded {refund!r}, the service made {executed[0]!r}")
        entry = ledger.get(key)
        if entry is None or entry[0] != "DONE" or (executed and entry[3] != refund):
            self.violation(f"ledger entry for {key} is {entry!r}, run {run_id} has {refund!r}")
        sent = sorted(p.name for p in outbox.glob(f"{run_id}__*")) if outbox.exists() else []
        if sent != [f"{run_id}__5"]:
            self.violation(f"run {run_id} emailed {sent}, expected one message for step 5")

    def check_llm_calls(self) -> None:
        """Each (run, turn) reached the model once, bar calls cut short by a kill."""
        calls: dict[tuple[str, int], list[int]] = defaultdict(list)  # pids, in order
        last_turn: dict[tuple[str, int], int] = defaultdict(lambda: -1)  # (run, pid) -> turn
        for line in read_json_lines(self.workdir / "llm.log"):
            if line["event"] != "start":
                continue
            run_id, turn, pid = line["run_id"], line["turn"], line["pid"]
            calls[(run_id, turn)].append(pid)
            last_turn[(run_id, pid)] = max(last_turn[(run_id, pid)], turn)
        for (run_id, turn), pids in calls.items():
            if len(set(pids)) != len(pids):
                self.violation(f"run {run_id} turn {turn}: one process called the model twice")
            for pid in pids[:-1]:
                cut_short = pid in self.killed_pids and last_turn[(run_id, pid)] == turn
                if not cut_short:
                    self.violation(
                        f"run {run_id} turn {turn} reached the model again after process "
                        f"{pid} had called it and "
                        + ("moved on" if pid in self.killed_pids else "was not killed")
                    )
        runs = self.db.runs()
        for run in self.runs:
            if runs.get(run["run_id"], ("",))[0] == "SUCCEEDED":
                turns = {t for (r, t) in calls if r == run["run_id"]}
                if turns != {0, 1, 2, 3}:
                    self.violation(f"run {run['run_id']} model turns called: {sorted(turns)}")

    # -- the whole thing --

    def run(self, max_kills: int) -> None:
        (self.workdir / "plan.json").write_text(json.dumps({"url": self.url, "runs": self.runs}))
        planned = {r["run_id"] for r in self.runs}
        self.operator.list_runs(limit=1)  # creates the schema before the first worker
        idle_rounds = 0
        while True:
            self.resolve_attention()
            runs = self.db.runs()
            if all(runs.get(r, ("",))[0] in ("SUCCEEDED", "FAILED", "CANCELLED") for r in planned):
                break
            before = self.snapshot()
            self.spawn(max_kills)
            idle_rounds = idle_rounds + 1 if self.snapshot() == before else 0
            if idle_rounds > 20:
                self.violation("no progress in 20 workers in a row; giving up")
                break
        self.check_final()
        self.operator.close()

    def snapshot(self) -> Any:
        return sorted(self.db.runs().items(), key=lambda item: item[0]), len(self.seen_steps)


def _reason_kind(message: str) -> str:
    if "is held by run" in message:
        return "key held by another run"
    if "no reconcile hook" in message:
        return "no reconcile hook"
    if "reconcile hook" in message:
        return "reconcile hook raised"
    return message[:40]


def plan_runs(count: int, rng: random.Random, reconcile: str) -> list[dict[str, str]]:
    runs: list[dict[str, str]] = []
    orders: list[str] = []
    for i in range(count):
        if orders and rng.random() < 0.25:
            order_id = rng.choice(orders)  # shares the order (and the refund key) of another
        else:
            order_id = f"O{i:04d}"
            orders.append(order_id)
        manual = reconcile == "none" or (reconcile == "mixed" and i % 4 == 3)
        runs.append(
            {
                "run_id": f"run{i:04d}",
                "order_id": order_id,
                "agent": "manual" if manual else "reconcile",
            }
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=20, help="agent runs (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("AGENTDUR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a server URL; a throwaway database is created on it and dropped after",
    )
    parser.add_argument(
        "--reconcile",
        choices=("mixed", "all", "none"),
        default="mixed",
        help="which runs' refund tool has a reconcile hook (default: all but one in four)",
    )
    parser.add_argument("--batch", type=int, default=2, help="new runs per worker (default 2)")
    parser.add_argument(
        "--max-kills", type=int, default=None, help="stop killing after this many (default 10*runs)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and database")
    parser.add_argument("--verbose", action="store_true", help="narrate workers and resolutions")
    parser.add_argument("--worker", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker))

    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="agentdur-crashtest-"))
    began = time.monotonic()
    try:
        with database(args.backend, workdir, args.postgres_url, args.keep) as url:
            harness = Harness(
                url=url,
                workdir=workdir,
                runs=plan_runs(args.runs, rng, args.reconcile),
                rng=rng,
                batch=args.batch,
                verbose=args.verbose,
            )
            harness.run(args.max_kills if args.max_kills is not None else 10 * args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - began
    shared = args.runs - len({r["order_id"] for r in harness.runs})
    details = {
        "backend": args.backend,
        "seed": seed,
        "seconds": round(seconds, 1),
        "worker_starts": harness.starts,
        "kills_by_kind": dict(sorted(harness.kill_kinds.items())),
        "runs_sharing_an_order": shared,
        "needs_attention": dict(harness.attention_reasons),
        "operator_resolutions": dict(harness.resolutions),
        "workdir": str(workdir) if args.keep else None,
    }
    print(json.dumps(details), file=sys.stderr)
    violations = len(harness.violations)
    print(f"{args.runs} runs, {harness.kills} kills, {violations} violations", flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
