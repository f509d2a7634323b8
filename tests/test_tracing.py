"""OpenTelemetry spans of runs and steps, on SQLite and PostgreSQL.

Spans are read from the SDK's in-memory exporter: names and GenAI attributes of an agent
run, the trace a recovered run continues in another Runtime, nothing from a replay, and
no error (and no recorded trace) without a tracer provider.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import agentdur
from agentdur import tracing
from agentdur.models import Usage
from agentdur.testing import Scripted
from tests.helpers import wait_for

GATE = threading.Event()
EXECUTED: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    GATE.clear()
    EXECUTED.clear()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def traced_rt(database_url: str, provider: TracerProvider) -> Iterator[agentdur.Runtime]:
    runtime = agentdur.Runtime(
        database_url, executor_id=f"test-{uuid.uuid4().hex[:6]}", tracer_provider=provider
    )
    with runtime:
        yield runtime


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    return {"order_id": order_id, "status": "shipped"}


@agentdur.step
async def record(name: str) -> str:
    EXECUTED.append(name)
    return name.upper()


@agentdur.workflow(name="test_tracing.gated")
async def gated_flow() -> list[str]:
    first = await record("a")
    second = await record("b")
    await asyncio.to_thread(GATE.wait)
    third = await record("c")
    return [first, second, third]


def _agent() -> agentdur.Agent:
    usage = {"usage": Usage(input_tokens=12, output_tokens=7), "model": "scripted-2026-01"}
    call = Scripted.tool_call("lookup_order", {"order_id": "A1"}, id="call_1")
    answers = [call.model_copy(update=usage), "It shipped."]
    return agentdur.Agent("support", Scripted(answers), tools=[lookup_order])


def _by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def test_agent_run_span_and_step_spans(
    traced_rt: agentdur.Runtime, exporter: InMemorySpanExporter
) -> None:
    result = traced_rt.run_agent(_agent(), "Where is A1?", run_id="t1")
    assert result.output == "It shipped."

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "chat scripted",
        "execute_tool lookup_order",
        "chat scripted",
        "invoke_agent support",
    ]
    run, tool = _by_name(spans)["invoke_agent support"], spans[1]
    first_chat = spans[0]
    assert run.parent is None
    assert dict(run.attributes or {}) == {
        "agentdur.run_id": "t1",
        "agentdur.workflow": "agent:support",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support",
    }
    assert first_chat.kind is SpanKind.CLIENT
    assert dict(first_chat.attributes or {}) == {
        "agentdur.run_id": "t1",
        "agentdur.step_index": 0,
        "agentdur.step_kind": "llm",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "scripted",
        "gen_ai.provider.name": "scripted",
        "gen_ai.response.model": "scripted-2026-01",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ("tool_calls",),
    }
    assert dict(tool.attributes or {}) == {
        "agentdur.run_id": "t1",
        "agentdur.step_index": 1,
        "agentdur.step_kind": "tool",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.type": "function",
    }
    assert spans[2].attributes is not None and spans[2].attributes["agentdur.step_index"] == 2
    for span in spans[:3]:  # every step span is a child of the run span, in one trace
        assert span.parent is not None and span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
    # The trace is recorded on the run: its id and the run span's context.
    otel = traced_rt.get_run("t1").metadata["otel"]
    assert otel["run_id"] == "t1"
    assert otel["trace_id"] == f"{run.context.trace_id:032x}"
    flags = int(run.context.trace_flags)
    assert otel["traceparent"] == f"00-{otel['trace_id']}-{run.context.span_id:016x}-{flags:02x}"


def test_tool_error_and_plain_step_spans(
    traced_rt: agentdur.Runtime, exporter: InMemorySpanExporter
) -> None:
    agent = agentdur.Agent(
        "clumsy",
        Scripted([Scripted.tool_call("no_such_tool", {}, id="c9"), "sorry"]),
        tools=[lookup_order],
    )
    traced_rt.run_agent(agent, "go", run_id="t2")
    tool = _by_name(exporter.get_finished_spans())["execute_tool no_such_tool"]
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes is not None and tool.attributes["error.type"] == "tool_error"

    exporter.clear()
    GATE.set()
    assert traced_rt.run(gated_flow, run_id="t3") == ["A", "B", "C"]
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["step record"] * 3 + ["workflow test_tracing.gated"]
    assert [s.attributes["agentdur.step_index"] for s in spans[:3] if s.attributes] == [0, 1, 2]


def test_recovered_run_continues_the_trace(database_url: str) -> None:
    first_exporter, second_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    first_provider, second_provider = TracerProvider(), TracerProvider()
    first_provider.add_span_processor(SimpleSpanProcessor(first_exporter))
    second_provider.add_span_processor(SimpleSpanProcessor(second_exporter))

    first = agentdur.Runtime(database_url, executor_id="w1", tracer_provider=first_provider)
    first.start(gated_flow, run_id="r1")
    wait_for(lambda: len(first.steps("r1")) == 2, what="2 recorded steps")
    first.close()  # abandoned mid-run: the run span ends with the loop, unfinished
    before = first_exporter.get_finished_spans()
    assert [s.name for s in before] == ["step record", "step record", "workflow test_tracing.gated"]
    abandoned = before[2]
    assert abandoned.attributes is not None
    assert abandoned.attributes["agentdur.run.stopped"] == "CancelledError"
    trace_id = abandoned.context.trace_id

    GATE.set()
    with agentdur.Runtime(
        database_url, executor_id="w1", tracer_provider=second_provider
    ) as second:
        otel = second.get_run("r1").metadata["otel"]
        (handle,) = second.recover()
        assert handle.result(timeout=20) == ["A", "B", "C"]
    after = second_exporter.get_finished_spans()
    # Replayed steps 0 and 1 emit nothing: only step 2 executed in this process.
    assert [s.name for s in after] == ["step record", "workflow test_tracing.gated"]
    run = after[1]
    assert {s.context.trace_id for s in after} == {trace_id}
    assert otel["trace_id"] == f"{trace_id:032x}"
    # The resumed run span is a child of the first execution's run span.
    assert run.parent is not None and run.parent.trace_id == trace_id
    assert run.parent.span_id == abandoned.context.span_id
    assert otel["traceparent"].split("-")[2] == f"{run.parent.span_id:016x}"
    assert run.attributes is not None and run.attributes["agentdur.resumed"] is True
    assert after[0].attributes is not None and after[0].attributes["agentdur.step_index"] == 2
    first_provider.shutdown()
    second_provider.shutdown()


def test_replay_emits_no_spans(traced_rt: agentdur.Runtime, exporter: InMemorySpanExporter) -> None:
    traced_rt.run_agent(_agent(), "Where is A1?", run_id="t4")
    assert exporter.get_finished_spans()
    exporter.clear()
    assert traced_rt.replay("t4")["output"] == "It shipped."
    assert exporter.get_finished_spans() == ()


def test_fork_starts_its_own_trace_linked_to_the_source(
    traced_rt: agentdur.Runtime, exporter: InMemorySpanExporter
) -> None:
    traced_rt.run_agent(_agent(), "Where is A1?", run_id="t5")
    source = _by_name(exporter.get_finished_spans())["invoke_agent support"]
    exporter.clear()
    traced_rt.fork("t5", at_step=2, new_run_id="t5-fork").result(timeout=20)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat scripted", "invoke_agent support"]
    run = spans[1]
    assert run.context.trace_id != source.context.trace_id
    assert [link.context.span_id for link in run.links] == [source.context.span_id]
    assert run.attributes is not None and run.attributes["agentdur.forked_from"] == "t5"


def test_no_tracer_provider_is_no_error(rt: agentdur.Runtime) -> None:
    # No provider given and none set globally (the tests never set one): tracing is off.
    from opentelemetry import trace

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert rt.run_agent(_agent(), "Where is A1?", run_id="t6").output == "It shipped."
    assert rt.get_run("t6").metadata is None
    GATE.set()
    assert rt.run(gated_flow, run_id="t7") == ["A", "B", "C"]


def test_without_opentelemetry_installed(
    database_url: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_api", False)  # as when find_spec finds no package
    with agentdur.Runtime(database_url, tracer_provider=provider) as runtime:
        GATE.set()
        assert runtime.run(gated_flow, run_id="t8") == ["A", "B", "C"]
        assert runtime.get_run("t8").metadata is None
    assert exporter.get_finished_spans() == ()
