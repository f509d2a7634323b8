"""A queue application for worker tests: `--app tests.apps.queue_app:rt`.

Configured by the environment, so every worker process of a test imports the same app:
  QUEUE_APP_DB       the database URL
  QUEUE_APP_LEASE    lease_seconds of the Runtime (default 30)
  QUEUE_APP_LOG      a file each step appends `run_id step_index pid event` to (fsync)
  QUEUE_APP_STEP     seconds each step of `queue_app.steps` sleeps (default 0)
  QUEUE_APP_FENCE    seconds the slow step of `queue_app.fenced` sleeps (default 3)
  QUEUE_APP_LOGFILE  a file agentdur's log records (warnings and up) are written to
  QUEUE_APP_MODEL    the model name of the `limited` agent (its limiter's name)
  QUEUE_APP_RATE     `LIMIT/SECONDS` of that model's rate limit (default 4/2)

The executor id is left at its default, so `agentdur worker` gives each process its own.
"""

from __future__ import annotations

import logging
import os
import time

import agentdur
from agentdur.models import Message, ModelResponse, Scripted, Usage

rt = agentdur.Runtime(
    os.environ.get("QUEUE_APP_DB"),
    lease_seconds=float(os.environ.get("QUEUE_APP_LEASE", "30")),
)

work = agentdur.Queue("work")
pair = agentdur.Queue("pair", concurrency=2)
paced = agentdur.Queue("paced", rate_limit=agentdur.RateLimit(3, 2.0))
agents = agentdur.Queue("agents")

STEP_SECONDS = float(os.environ.get("QUEUE_APP_STEP", "0"))
FENCE_SECONDS = float(os.environ.get("QUEUE_APP_FENCE", "3"))

if os.environ.get("QUEUE_APP_LOGFILE"):
    _handler = logging.FileHandler(os.environ["QUEUE_APP_LOGFILE"])
    _handler.setFormatter(logging.Formatter(f"{os.getpid()} %(levelname)s %(message)s"))
    _handler.setLevel(logging.WARNING)
    logging.getLogger("agentdur").addHandler(_handler)


def log(run_id: str, index: int, event: str = "ran") -> None:
    """Append one line to QUEUE_APP_LOG, durably (the test reads it after SIGKILLs)."""
    path = os.environ.get("QUEUE_APP_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.write(f"{run_id} {index} {os.getpid()} {event}\n")
        f.flush()
        os.fsync(f.fileno())


@agentdur.step
def mark(run_id: str, index: int) -> int:
    log(run_id, index)
    if STEP_SECONDS:  # read here, not passed in: workers of one test may differ in it,
        time.sleep(STEP_SECONDS)  # and a step called with other arguments diverges
    return index


@agentdur.workflow(name="queue_app.steps")
def steps(run_id: str, n: int) -> list[int]:
    """n steps; each logs `run_id index` when it executes, then sleeps QUEUE_APP_STEP."""
    return [mark(run_id, i) for i in range(n)]


@agentdur.step
def slow(run_id: str) -> dict[str, int]:
    log(run_id, 1, "sleeping")
    time.sleep(FENCE_SECONDS)
    log(run_id, 1, "slept")
    return {"pid": os.getpid()}


@agentdur.workflow(name="queue_app.fenced")
def fenced(run_id: str) -> dict[str, int]:
    """Step 1 sleeps QUEUE_APP_FENCE seconds: long enough to pause its worker inside it."""
    mark(run_id, 0)
    winner = slow(run_id)
    mark(run_id, 2)
    return winner


def _answer(messages: list[Message], info: object) -> ModelResponse:
    prompt = str(messages[-1].content)
    log(prompt.replace(" ", "_"), 0, "llm")
    return ModelResponse(
        text=f"summary of {prompt}",
        usage=Usage(input_tokens=len(prompt), output_tokens=5),
    )


_limit, _, _per = os.environ.get("QUEUE_APP_RATE", "4/2").partition("/")
model = Scripted(_answer, model_name=os.environ.get("QUEUE_APP_MODEL", "shared-model"))
model.rate_limit = agentdur.RateLimit(int(_limit), float(_per))  # type: ignore[attr-defined]
limited = agentdur.Agent("limited", model, instructions="Summarise.")
