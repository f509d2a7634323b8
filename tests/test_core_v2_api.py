"""Async twins of the Runtime's operations, and waiting on a handle, on SQLite and PostgreSQL.

Each twin must give what its blocking form gives and run that blocking work in another
thread, so an application's event loop (a FastAPI handler) never waits on the database.
A caller's timeout or cancellation of `aresult`/`result` never touches the run.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import agentdur
from agentdur.testing import Scripted
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

TWINS = [
    "send",
    "approve",
    "resolve",
    "cancel",
    "fork",
    "enqueue",
    "get_run",
    "list_runs",
    "steps",
    "handle",
    "start_agent",
    "replay",
    "recover",
    "start",
    "run",
    "run_agent",
]
GATE = threading.Event()
QUEUE = agentdur.Queue("test-core-v2-api")
UNCERTAIN: list[str] = []
"""Orders whose next refund raises UncertainEffect."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    GATE.clear()
    UNCERTAIN.clear()
    yield
    GATE.set()  # never leave a run blocked on the gate


async def twin(rt: agentdur.Runtime, name: str, *args: Any, **kwargs: Any) -> Any:
    """`await rt.a<name>(...)`, checking that the blocking `rt.<name>` ran in another thread."""
    blocking = getattr(rt, name)
    threads: list[threading.Thread] = []

    def spy(*a: Any, **k: Any) -> Any:
        threads.append(threading.current_thread())
        return blocking(*a, **k)

    setattr(rt, name, spy)
    try:
        result = await getattr(rt, "a" + name)(*args, **kwargs)
    finally:
        delattr(rt, name)
    assert threads, f"a{name} did not call {name}"
    assert threading.current_thread() not in threads
    return result


@pytest.mark.parametrize("name", TWINS)
async def test_each_operation_has_an_async_twin_with_its_signature(name: str) -> None:
    blocking = getattr(agentdur.Runtime, name)
    twin_fn = getattr(agentdur.Runtime, "a" + name)
    assert inspect.iscoroutinefunction(twin_fn)
    assert not inspect.iscoroutinefunction(blocking)
    assert inspect.signature(twin_fn).parameters == inspect.signature(blocking).parameters


# -- workflows and agents the twins act on --------------------------------------------------


@agentdur.step
async def shout(text: str) -> str:
    return text.upper()


@agentdur.workflow(name="test_core_v2_api.two_steps")
async def two_steps(text: str) -> list[str]:
    return [await shout(text), await shout(text + "!")]


@agentdur.workflow(name="test_core_v2_api.waits_for_message")
async def waits_for_message() -> Any:
    return await agentdur.recv("go")


@agentdur.step
async def gated() -> str:
    await asyncio.to_thread(GATE.wait)
    return "done"


@agentdur.workflow(name="test_core_v2_api.gated")
async def gated_flow() -> str:
    return await gated()  # type: ignore[no-any-return]


def _refund(order_id: str) -> dict[str, str]:
    """Refund an order."""
    if order_id in UNCERTAIN:
        UNCERTAIN.remove(order_id)
        raise agentdur.UncertainEffect("the bank timed out")
    return {"refunded": order_id}


refund_gated = agentdur.tool(effect="side_effect", requires_approval=True, name="refund_order")(
    _refund
)
refund_plain = agentdur.tool(effect="side_effect", name="refund_order")(_refund)


def _agent(name: str, tool: agentdur.Tool) -> agentdur.Agent:
    script = Scripted([Scripted.tool_call("refund_order", {"order_id": "A1"}), "done"])
    return agentdur.Agent(name, script, tools=[tool])


def _status(rt: agentdur.Runtime, run_id: str, status: str) -> None:
    wait_for(lambda: rt.get_run(run_id).status == status, timeout=30, what=status)


# -- each twin gives what its blocking form gives ------------------------------------------


async def test_reading_twins(rt: agentdur.Runtime) -> None:
    rt.run(two_steps, "a", run_id="read-1")
    rt.run(two_steps, "b", run_id="read-2")
    assert await twin(rt, "get_run", "read-1") == rt.get_run("read-1")
    assert await twin(rt, "list_runs", workflow="test_core_v2_api.two_steps", limit=1) == (
        rt.list_runs(workflow="test_core_v2_api.two_steps", limit=1)
    )
    assert await twin(rt, "steps", "read-2") == rt.steps("read-2")
    handle = await twin(rt, "handle", "read-2")
    assert (handle.run_id, await handle.aresult()) == ("read-2", ["B", "B!"])
    # areplay, arun and arun_agent await the runtime's loop itself, not a blocking form.
    assert await rt.areplay("read-1") == rt.replay("read-1") == ["A", "A!"]
    assert await twin(rt, "recover") == rt.recover() == []
    with pytest.raises(agentdur.RunNotFoundError):
        await twin(rt, "get_run", "no-such-run")


async def test_start_and_run_twins(rt: agentdur.Runtime) -> None:
    # astart records the run through the store's writer from the caller's loop (many
    # concurrent starts share one commit): a native twin, like arun.
    handle = await rt.astart(two_steps, "s", run_id="start-1")
    assert await handle.aresult() == rt.start(two_steps, "s", run_id="start-1").result()
    assert await rt.arun(two_steps, "r", run_id="run-1") == rt.run(two_steps, "r", run_id="run-1")


async def test_send_twin(rt: agentdur.Runtime) -> None:
    blocking = rt.start(waits_for_message, run_id="msg-1")
    awaited = rt.start(waits_for_message, run_id="msg-2")
    _status(rt, "msg-1", "WAITING")
    _status(rt, "msg-2", "WAITING")
    rt.send("msg-1", "go", {"n": 1})
    assert await twin(rt, "send", "msg-2", "go", {"n": 1}) is None
    assert await awaited.aresult(timeout=30) == blocking.result(timeout=30) == {"n": 1}


async def test_cancel_twin(rt: agentdur.Runtime) -> None:
    rt.start(gated_flow, run_id="cancel-1")
    _status(rt, "cancel-1", "RUNNING")
    assert await twin(rt, "cancel", "cancel-1") is True
    assert rt.get_run("cancel-1").status == "CANCELLED"
    GATE.set()
    rt.run(two_steps, "x", run_id="cancel-2")
    assert await twin(rt, "cancel", "cancel-2") is rt.cancel("cancel-2") is False


async def test_fork_twin(rt: agentdur.Runtime) -> None:
    rt.run(two_steps, "f", run_id="fork-src")
    blocking = rt.fork("fork-src", 1, new_run_id="fork-1")
    awaited = await twin(rt, "fork", "fork-src", 1, new_run_id="fork-2")
    assert awaited.run_id == "fork-2"
    assert await awaited.aresult(timeout=30) == blocking.result(timeout=30) == ["F", "F!"]
    assert [s.inherited_from for s in rt.steps("fork-2")] == [
        s.inherited_from for s in rt.steps("fork-1")
    ]


async def test_enqueue_twin(rt: agentdur.Runtime) -> None:
    blocking = rt.enqueue(two_steps, "q", queue=QUEUE, run_id="queued-1", priority=3)
    awaited = await twin(rt, "enqueue", two_steps, "q", queue=QUEUE, run_id="queued-1", priority=3)
    assert awaited.run_id == blocking.run_id == "queued-1"
    run = await rt.aget_run("queued-1")
    assert (run.status, run.queue, run.priority) == ("ENQUEUED", "test-core-v2-api", 3)


async def test_agent_twins(rt: agentdur.Runtime) -> None:
    agent = _agent("twin-plain", refund_plain)
    handle = await rt.astart_agent(agent, "refund A1", run_id="agent-1")  # native, as astart
    assert handle.run_id == "agent-1"
    assert (await handle.aresult(timeout=30))["output"] == "done"
    blocking = rt.run_agent(agent, "refund A1", run_id="agent-1")
    awaited = await rt.arun_agent(agent, "refund A1", run_id="agent-1")
    assert awaited == blocking


async def test_approve_twin(rt: agentdur.Runtime) -> None:
    agent = _agent("twin-approve", refund_gated)
    blocking = rt.start_agent(agent, "refund A1", run_id="approve-1")
    awaited = rt.start_agent(agent, "refund A1", run_id="approve-2")
    _status(rt, "approve-1", "WAITING")
    _status(rt, "approve-2", "WAITING")
    rt.approve("approve-1", 1, approved=False, note="no")
    assert await twin(rt, "approve", "approve-2", 1, approved=False, note="no") is None
    assert await awaited.aresult(timeout=30) == blocking.result(timeout=30)
    assert rt.steps("approve-2")[1].error == rt.steps("approve-1")[1].error


async def test_resolve_twin(rt: agentdur.Runtime) -> None:
    agent = _agent("twin-resolve", refund_plain)
    for run_id in ("resolve-1", "resolve-2"):
        UNCERTAIN.append("A1")
        with pytest.raises(agentdur.NeedsAttentionError):
            rt.start_agent(agent, "refund A1", run_id=run_id).result(timeout=30)
    rt.resolve("resolve-1", 1, "result", {"refunded": "by hand"})
    assert await twin(rt, "resolve", "resolve-2", 1, "result", {"refunded": "by hand"}) is None
    awaited = await rt.handle("resolve-2").aresult(timeout=30)
    assert awaited == rt.handle("resolve-1").result(timeout=30)
    assert rt.steps("resolve-2")[1].output == rt.steps("resolve-1")[1].output


# -- waiting on a handle never touches the run ----------------------------------------------


async def test_a_callers_timeout_or_cancellation_leaves_the_run_running(
    rt: agentdur.Runtime,
) -> None:
    handle = await rt.astart(gated_flow, run_id="wait-1")
    with pytest.raises(TimeoutError, match=r"'wait-1' did not finish in 0\.05s"):
        await handle.aresult(timeout=0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handle.aresult(), 0.05)
    waiter = asyncio.ensure_future(handle.aresult())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    run = await rt.aget_run("wait-1")
    assert (run.status, run.owner) == ("RUNNING", rt.executor_id)

    GATE.set()
    assert await handle.aresult(timeout=30) == "done"
    assert (await rt.aget_run("wait-1")).status == "SUCCEEDED"


def test_a_blocking_wait_that_times_out_leaves_the_run_running(rt: agentdur.Runtime) -> None:
    handle = rt.start(gated_flow, run_id="wait-2")
    with pytest.raises(TimeoutError, match=r"'wait-2' did not finish in 0\.05s"):
        handle.result(timeout=0.05)
    assert rt.get_run("wait-2").status == "RUNNING"
    GATE.set()
    assert handle.result(timeout=30) == "done"
    assert rt.get_run("wait-2").status == "SUCCEEDED"


@agentdur.workflow(name="test_core_v2_api.raises_timeout")
async def raises_timeout() -> None:
    raise TimeoutError("the partner API timed out")


async def test_a_run_that_raises_timeout_error_is_not_reported_as_a_wait_timeout(
    rt: agentdur.Runtime,
) -> None:
    handle = await rt.astart(raises_timeout)
    with pytest.raises(TimeoutError, match="the partner API timed out"):
        await handle.aresult(timeout=30)
    handle = await rt.astart(raises_timeout)
    with pytest.raises(TimeoutError, match="the partner API timed out"):
        await asyncio.to_thread(handle.result, 30)
