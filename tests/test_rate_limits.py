"""Model rate limits, shared through the database, on both backends.

Checked on the recorded admissions (`rate_events` rows: one per request sent, at the
time it was admitted), which a collector thread reads while the test runs: admissions
older than the window are pruned by the next request.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import agentdur
from agentdur.errors import ModelHTTPError
from agentdur.models import Message, ModelResponse, OpenAIChat, Scripted, Usage
from agentdur.testing import openai_client
from tests.apps import queue_app
from tests.apps.queue_workers import Workers, window_gaps
from tests.helpers import wait_for

FIXTURES = Path(
    os.environ.get("AGENTDUR_FIXTURES")
    or Path(__file__).resolve().parent / "fixtures" / "providers"
)
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def rate_events(store: Any, limiter: str) -> list[tuple[str, datetime, int]]:
    """(event, admitted at, tokens) of a limiter's recorded admissions, oldest first."""
    if store.dialect == "sqlite":
        sql = "SELECT event, at, tokens FROM rate_events WHERE limiter = :limiter ORDER BY at"
    else:
        sql = (
            "SELECT event, at, tokens FROM agentdur.rate_events"
            " WHERE limiter = %(limiter)s ORDER BY at"
        )
    with store.statement() as cur:
        cur.execute(sql, {"limiter": limiter})
        rows = cur.fetchall()
    return [(event, store._time_value(at), int(tokens)) for event, at, tokens in rows]


@contextmanager
def collected(url: str, limiter: str) -> Iterator[dict[str, tuple[datetime, int]]]:
    """Every admission of `limiter` seen while the block runs: {event: (at, tokens)}."""
    seen: dict[str, tuple[datetime, int]] = {}
    stop = threading.Event()
    reader = agentdur.Runtime(url)

    def poll() -> None:
        store = reader._ensure_store()
        while True:
            for event, at, tokens in rate_events(store, limiter):
                seen[event] = (at, tokens)
            if stop.wait(0.05):
                return

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)
        for event, at, tokens in rate_events(reader._ensure_store(), limiter):
            seen[event] = (at, tokens)
        reader.close()


def scripted(answer: Callable[..., Any], limit: agentdur.RateLimit) -> Scripted:
    model = Scripted(answer, model_name=f"model-{uuid.uuid4().hex[:8]}")
    model.rate_limit = limit  # type: ignore[attr-defined]
    return model


# -- RateLimit ---------------------------------------------------------------------------


def test_rate_limit_arguments() -> None:
    limit = agentdur.RateLimit(5, 60, tokens=40_000)
    assert (limit.limit, limit.per_seconds, limit.tokens) == (5, 60, 40_000)
    assert agentdur.RateLimit(5, 60).tokens is None
    with pytest.raises(TypeError):
        agentdur.RateLimit(5, 60, 40_000)  # type: ignore[misc]
    for bad in [(0, 60), (5, 0), (5, -1.0)]:
        with pytest.raises(agentdur.UsageError, match="limit >= 1 and per_seconds > 0"):
            agentdur.RateLimit(*bad)
    with pytest.raises(agentdur.UsageError, match="tokens="):
        agentdur.RateLimit(5, 60, tokens=0)
    chat = OpenAIChat("gpt-4o-mini", client=object(), rate_limit=agentdur.RateLimit(5, 60))
    assert chat.rate_limit == agentdur.RateLimit(5, 60)


def test_store_admits_within_a_sliding_window(rt: agentdur.Runtime) -> None:
    store, limiter = rt.store, f"test:{uuid.uuid4().hex}"
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def acquire(at: float, tokens: int = 0, token_limit: int | None = None) -> float:
        return store.rate_acquire(
            limiter,
            now=t0 + timedelta(seconds=at),
            per_seconds=10.0,
            limit=2,
            token_limit=token_limit,
            tokens=tokens,
            event=uuid.uuid4().hex,
        )

    assert acquire(0.0) == 0.0
    assert acquire(1.0) == 0.0
    assert acquire(2.0) == pytest.approx(8.0)  # until the first admission leaves the window
    assert acquire(9.5) == pytest.approx(0.5)
    assert acquire(10.5) == 0.0  # the first left; the one at 1.0 and this one are inside
    assert acquire(10.9) == pytest.approx(0.1)
    assert len(rate_events(store, limiter)) == 2  # older admissions were pruned


def test_store_counts_tokens_and_settles_the_estimate(rt: agentdur.Runtime) -> None:
    store, limiter = rt.store, f"test:{uuid.uuid4().hex}"
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def acquire(at: float, tokens: int, event: str) -> float:
        return store.rate_acquire(
            limiter,
            now=t0 + timedelta(seconds=at),
            per_seconds=60.0,
            limit=100,
            token_limit=100,
            tokens=tokens,
            event=event,
        )

    assert acquire(0, 60, "a") == 0.0
    assert acquire(1, 50, "b") == pytest.approx(59.0)  # 60 + 50 > 100 tokens
    store.rate_settle(limiter, "a", 20)  # the provider reported 20
    assert acquire(2, 50, "b") == 0.0
    assert [(e, t) for e, _, t in rate_events(store, limiter)] == [("a", 20), ("b", 50)]


# -- agents ------------------------------------------------------------------------------


def test_reported_usage_replaces_the_token_estimate(
    rt: agentdur.Runtime, database_url: str
) -> None:
    usage = Usage(input_tokens=12_000, output_tokens=345)
    model = scripted(
        lambda messages, info: ModelResponse(text="done", usage=usage),
        agentdur.RateLimit(5, 60, tokens=40_000),
    )
    agent = agentdur.Agent(f"usage-{uuid.uuid4().hex[:6]}", model)
    limiter = f"model:scripted:{model.model_name}"
    result = rt.run_agent(agent, "a short prompt")
    events = rate_events(rt.store, limiter)
    assert [tokens for _, _, tokens in events] == [12_345] == [result.usage.total_tokens]


def test_token_budget_holds_a_request_until_the_window_frees_it(
    rt: agentdur.Runtime, database_url: str
) -> None:
    usage = Usage(input_tokens=100, output_tokens=50)  # 150 of the 300 tokens per second
    model = scripted(
        lambda messages, info: ModelResponse(text="ok", usage=usage),
        agentdur.RateLimit(100, 1.0, tokens=300),
    )
    agent = agentdur.Agent(f"tokens-{uuid.uuid4().hex[:6]}", model)
    limiter = f"model:scripted:{model.model_name}"
    with collected(database_url, limiter) as seen:
        for i in range(3):
            rt.run_agent(agent, f"hi {i}")
    at = sorted(when for when, _ in seen.values())
    assert len(at) == 3
    # The 2nd fits (150 reported + its small estimate <= 300); the 3rd waits for the 1st
    # to leave the window, its own requests count (3 <= 100) notwithstanding.
    assert (at[1] - at[0]).total_seconds() < 1.0
    assert (at[2] - at[0]).total_seconds() >= 1.0
    assert {tokens for _, tokens in seen.values()} == {150}


def test_retry_after_a_429_waits_for_the_rate_limit_too(
    rt: agentdur.Runtime, database_url: str
) -> None:
    calls: list[float] = []

    def answer(messages: list[Message], info: Any) -> ModelResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ModelHTTPError("rate limited", status_code=429, retryable=True, retry_after=0.2)
        return ModelResponse(text="second try")

    model = scripted(answer, agentdur.RateLimit(1, 1.0))
    agent = agentdur.Agent(f"retry-{uuid.uuid4().hex[:6]}", model)
    with collected(database_url, f"model:scripted:{model.model_name}") as seen:
        result = rt.run_agent(agent, "hello")
    assert result.output == "second try"
    at = sorted(when for when, _ in seen.values())
    assert len(at) == 2  # the failed request counted too: it was sent
    assert (at[1] - at[0]).total_seconds() >= 1.0  # the window, longer than Retry-After
    [step] = rt.steps(result.run_id)
    assert (step.kind, step.status, step.attempts) == ("llm", "SUCCEEDED", 2)


def test_openai_chat_429_retry_after_and_reported_usage(
    rt: agentdur.Runtime, database_url: str
) -> None:
    body = json.loads((FIXTURES / "openai_chat_text.json").read_text())
    too_many = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                          "code": "rate_limit_exceeded"}}  # fmt: skip
    router = respx.Router(assert_all_mocked=True)
    route = router.post(OPENAI_URL).mock(
        side_effect=[
            httpx.Response(429, json=too_many, headers={"retry-after": "0.5"}),
            httpx.Response(200, json=body),
        ]
    )
    name = f"gpt-{uuid.uuid4().hex[:8]}"
    model = OpenAIChat(
        name,
        client=openai_client(router),
        rate_limit=agentdur.RateLimit(5, 60, tokens=40_000),
    )
    agent = agentdur.Agent(f"openai-{uuid.uuid4().hex[:6]}", model)
    result = rt.run_agent(agent, "Say this is a test")
    assert result.output == "This is a test."
    assert route.call_count == 2
    events = rate_events(rt.store, f"model:openai_chat:{name}")
    assert len(events) == 2
    assert (events[1][1] - events[0][1]).total_seconds() >= 0.5  # Retry-After was honoured
    assert events[1][2] == 17 == body["usage"]["total_tokens"]  # the usage the API reported


# -- across processes --------------------------------------------------------------------


@pytest.mark.slow
def test_model_rate_limit_holds_across_worker_processes(database_url: str, tmp_path: Path) -> None:
    workers = Workers(database_url, tmp_path)
    model_name = f"shared-{uuid.uuid4().hex[:8]}"
    env = {"QUEUE_APP_MODEL": model_name, "QUEUE_APP_RATE": "4/2"}
    try:
        procs = [workers.start("--queue", "agents", "--concurrency", "4", **env) for _ in range(2)]
        workers.wait_ready(*procs)
        with (
            agentdur.Runtime(database_url, executor_id="client") as rt,
            collected(database_url, f"model:scripted:{model_name}") as seen,
        ):
            handles = [rt.enqueue(queue_app.limited, f"doc-{i}", queue="agents") for i in range(10)]
            wait_for(
                lambda: all(h.status() == "SUCCEEDED" for h in handles),
                timeout=30,
                what="10 agent runs",
            )
            outputs = sorted(h.result()["output"] for h in handles)
        codes = [workers.stop(proc) for proc in procs]
        assert codes == [0, 0], [workers.output(proc) for proc in procs]
    finally:
        workers.kill_all()
    assert outputs == sorted(f"summary of doc-{i}" for i in range(10))
    at = [when for when, _ in seen.values()]
    assert len(at) == 10  # one admission per request
    gaps = window_gaps(at, 4)
    assert all(gap >= 2.0 for gap in gaps), gaps  # no 2 s window holds 5 requests
    requesters = {pid for _, _, pid, event in workers.lines() if event == "llm"}
    assert requesters == {proc.pid for proc in procs}  # both processes sent requests
