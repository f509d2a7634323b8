"""Step semantics: indices, recorded outcomes, typed values, retries, idempotent start, nesting."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel

import agentdur
from tests.helpers import wait_for

CALLS: dict[str, int] = {}


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


class Invoice(BaseModel):
    number: str
    amount: float


@dataclasses.dataclass
class Point:
    x: int
    y: int


@agentdur.step
async def make_invoice(n: int) -> Invoice:
    _count("make_invoice")
    return Invoice(number=f"INV-{n}", amount=n * 1.5)


@agentdur.step
async def make_point(x: int) -> Point:
    return Point(x, x * 2)


@agentdur.step
async def when() -> datetime:
    return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@agentdur.workflow(name="test_steps.typed")
async def typed_flow(n: int) -> dict:
    invoice = await make_invoice(n)
    point = await make_point(n)
    moment = await when()
    return {
        "invoice_type": type(invoice).__name__,
        "point_type": type(point).__name__,
        "moment_type": type(moment).__name__,
        "amount": invoice.amount,
    }


def test_typed_values_come_back_as_their_types(rt: agentdur.Runtime) -> None:
    out = rt.run(typed_flow, 4)
    assert out == {
        "invoice_type": "Invoice",
        "point_type": "Point",
        "moment_type": "datetime",
        "amount": 6.0,
    }


@agentdur.step
async def slow_echo(value: str, delay: float) -> str:
    await asyncio.sleep(delay)
    return value


@agentdur.workflow(name="test_steps.gather")
async def gather_flow() -> list[str]:
    # The first-called step finishes last; indices still follow the call order.
    results = await asyncio.gather(slow_echo("a", 0.05), slow_echo("b", 0.0), slow_echo("c", 0.01))
    return list(results)


def test_gathered_steps_get_indices_in_call_order(rt: agentdur.Runtime) -> None:
    handle = rt.start(gather_flow)
    assert handle.result() == ["a", "b", "c"]
    steps = rt.steps(handle.run_id)
    assert [(s.step_index, s.input["args"][0]) for s in steps] == [(0, "a"), (1, "b"), (2, "c")]
    assert [s.output for s in steps] == ["a", "b", "c"]
    assert {s.status for s in steps} == {"SUCCEEDED"}


@agentdur.workflow(name="test_steps.counted")
async def counted_flow(n: int) -> str:
    invoice = await make_invoice(n)
    return invoice.number


def test_start_with_existing_run_id_executes_nothing_again(rt: agentdur.Runtime) -> None:
    first = rt.start(counted_flow, 7, run_id="order-7")
    assert first.result() == "INV-7"
    again = rt.start(counted_flow, 7, run_id="order-7")
    assert again.run_id == "order-7"
    assert again.result() == "INV-7"
    assert CALLS["make_invoice"] == 1
    assert len(rt.steps("order-7")) == 1


def test_same_run_id_with_other_input_is_an_error(rt: agentdur.Runtime) -> None:
    rt.run(counted_flow, 7, run_id="order-8")
    with pytest.raises(
        agentdur.RunInputMismatchError, match="'order-8' already exists with another input"
    ):
        rt.start(counted_flow, 8, run_id="order-8")
    assert rt.get_run("order-8").input == {"args": [7], "kwargs": {}}


@agentdur.step
def sync_double(x: int) -> int:
    _count("sync_double")
    return x * 2


@agentdur.workflow(name="test_steps.sync")
def sync_flow(x: int) -> int:
    return sync_double(sync_double(x))


def test_sync_workflow_with_sync_steps(rt: agentdur.Runtime) -> None:
    handle = rt.start(sync_flow, 3)
    assert handle.result() == 12
    assert [s.output for s in rt.steps(handle.run_id)] == [6, 12]
    assert handle.status() == "SUCCEEDED"


@agentdur.workflow(name="test_steps.sync_in_async")
async def sync_step_in_async_flow() -> int:
    return sync_double(1)  # type: ignore[no-any-return]


def test_sync_step_called_from_async_code_is_a_clear_error(rt: agentdur.Runtime) -> None:
    with pytest.raises(agentdur.UsageError, match="declare it `async def`"):
        rt.run(sync_step_in_async_flow)


class Unstorable:
    pass


@agentdur.step
async def returns_unstorable() -> object:
    return Unstorable()


@agentdur.workflow(name="test_steps.unstorable")
async def unstorable_flow() -> None:
    await make_invoice(1)
    await returns_unstorable()


def test_unstorable_output_fails_the_run_naming_step_and_type(rt: agentdur.Runtime) -> None:
    handle = rt.start(unstorable_flow)
    with pytest.raises(agentdur.SerializationError) as info:
        handle.result()
    assert "step 1 'returns_unstorable'" in str(info.value)
    assert "Unstorable" in str(info.value)
    run = rt.get_run(handle.run_id)
    assert run.status == "FAILED"
    assert run.error["type"] == "SerializationError"
    assert [s.name for s in rt.steps(handle.run_id)] == ["make_invoice"]


FLAKY = {"left": 0}


@agentdur.step(retries=3, backoff=0.0)
async def flaky() -> str:
    _count("flaky")
    if FLAKY["left"] > 0:
        FLAKY["left"] -= 1
        raise ConnectionError("try again")
    return "ok"


@agentdur.workflow(name="test_steps.flaky")
async def flaky_flow() -> str:
    return await flaky()  # type: ignore[no-any-return]


def test_retries_count_attempts_on_the_step_row(rt: agentdur.Runtime) -> None:
    FLAKY["left"] = 2
    handle = rt.start(flaky_flow)
    assert handle.result() == "ok"
    (step,) = rt.steps(handle.run_id)
    assert (step.status, step.attempts, step.output) == ("SUCCEEDED", 3, "ok")


def test_final_failure_is_recorded_and_reraised_as_original_type(rt: agentdur.Runtime) -> None:
    FLAKY["left"] = 10
    handle = rt.start(flaky_flow)
    with pytest.raises(ConnectionError, match="try again"):
        handle.result()
    (step,) = rt.steps(handle.run_id)
    assert (step.status, step.attempts) == ("ERROR", 4)
    assert step.error["type"] == "ConnectionError"
    assert "Traceback" in step.error["traceback"]
    assert CALLS["flaky"] == 4


@agentdur.step(retries=5, backoff=0.0, retry_on=(ConnectionError,))
async def wrong_type() -> None:
    _count("wrong_type")
    raise TypeError("not retried")


@agentdur.workflow(name="test_steps.wrong_type")
async def wrong_type_flow() -> None:
    await wrong_type()


def test_exceptions_outside_retry_on_are_not_retried(rt: agentdur.Runtime) -> None:
    with pytest.raises(TypeError):
        rt.run(wrong_type_flow)
    assert CALLS["wrong_type"] == 1


class NeedsTwoArgs(Exception):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


@agentdur.step
async def raises_odd() -> None:
    raise NeedsTwoArgs("x", "y")


@agentdur.workflow(name="test_steps.odd_error")
async def odd_error_flow() -> str:
    try:
        await raises_odd()
    except NeedsTwoArgs:
        return "caught live"
    return "no error"


def test_step_error_caught_by_the_workflow(rt: agentdur.Runtime) -> None:
    handle = rt.start(odd_error_flow)
    assert handle.result() == "caught live"
    (step,) = rt.steps(handle.run_id)
    assert step.status == "ERROR"
    # A recorded error whose constructor takes other arguments comes back as its own
    # type, rebuilt without calling the constructor (issue 10 item 4).
    rebuilt = agentdur.codec.decode_error(step.error)  # type: ignore[attr-defined]
    assert type(rebuilt) is NeedsTwoArgs
    assert str(rebuilt) == "x/y"


def test_workflow_called_directly_says_how_to_start_it() -> None:
    with pytest.raises(agentdur.OutsideRunError, match=r"rt\.run\(counted_flow, \.\.\.\)"):
        counted_flow(1)


def test_step_called_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(
        agentdur.OutsideRunError, match="step 'sync_double' was called outside a run"
    ):
        sync_double(1)


def test_undecorated_function_is_refused(rt: agentdur.Runtime) -> None:
    async def plain() -> None:
        pass

    with pytest.raises(agentdur.UsageError, match=r"decorate it with @agentdur\.workflow"):
        rt.start(plain)  # type: ignore[arg-type]


# -- a step called inside a step is a plain call ----------------------------------------

NESTED_GATE = threading.Event()
NESTED = {"fail_first": False}


@agentdur.step
async def inner_lookup(n: int) -> int:
    _count("inner_lookup")
    return n * 10


@agentdur.step(retries=1, backoff=0.0)
async def outer_total(n: int) -> int:
    _count("outer_total")
    value = await inner_lookup(n)
    if NESTED["fail_first"] and CALLS["outer_total"] == 1:
        raise ConnectionError("first attempt fails after the inner call")
    return value + 1  # type: ignore[no-any-return]


@agentdur.step
async def after_outer(value: int) -> int:
    _count("after_outer")
    return value * 2


@agentdur.workflow(name="test_steps.nested")
async def nested_flow(n: int) -> int:
    total = await outer_total(n)
    await asyncio.to_thread(NESTED_GATE.wait)
    return await after_outer(total)  # type: ignore[no-any-return]


@pytest.fixture
def _nested() -> Iterator[None]:
    NESTED_GATE.clear()
    NESTED["fail_first"] = False
    yield
    NESTED_GATE.set()  # never leave a run blocked on the gate


@pytest.mark.usefixtures("_nested")
def test_step_inside_a_step_is_recorded_once_and_runs_per_outer_attempt(
    rt: agentdur.Runtime,
) -> None:
    NESTED["fail_first"] = True
    NESTED_GATE.set()
    handle = rt.start(nested_flow, 4, run_id="nested-1")
    assert handle.result() == 82
    steps = rt.steps("nested-1")
    assert [(s.step_index, s.name, s.attempts) for s in steps] == [
        (0, "outer_total", 2),
        (1, "after_outer", 1),
    ]
    assert CALLS == {"outer_total": 2, "inner_lookup": 2, "after_outer": 1}
    assert rt.replay("nested-1") == 82
    assert CALLS == {"outer_total": 2, "inner_lookup": 2, "after_outer": 1}


@pytest.mark.usefixtures("_nested")
def test_run_with_a_nested_step_recovers_and_replays(database_url: str) -> None:
    first = agentdur.Runtime(database_url, executor_id="nested-worker")
    first.start(nested_flow, 5, run_id="nested-2")
    wait_for(lambda: len(first.steps("nested-2")) == 1, what="the outer step recorded")
    first.close()
    NESTED_GATE.set()
    with agentdur.Runtime(database_url, executor_id="nested-worker") as second:
        (handle,) = second.recover()
        assert handle.result(timeout=20) == 102
        assert [(s.step_index, s.name) for s in second.steps("nested-2")] == [
            (0, "outer_total"),
            (1, "after_outer"),
        ]
        assert CALLS == {"outer_total": 1, "inner_lookup": 1, "after_outer": 1}
        assert second.replay("nested-2") == 102
    assert CALLS == {"outer_total": 1, "inner_lookup": 1, "after_outer": 1}


@agentdur.step
def sync_outer(x: int) -> int:
    _count("sync_outer")
    return sync_double(x) + 1  # type: ignore[no-any-return]


@agentdur.workflow(name="test_steps.sync_nested")
def sync_nested_flow(x: int) -> int:
    return sync_outer(x) + sync_double(x)  # type: ignore[no-any-return]


def test_sync_step_inside_a_sync_step_is_a_plain_call(rt: agentdur.Runtime) -> None:
    assert rt.run(sync_nested_flow, 3, run_id="nested-sync") == 13
    steps = rt.steps("nested-sync")
    assert [(s.step_index, s.name, s.output) for s in steps] == [
        (0, "sync_outer", 7),
        (1, "sync_double", 6),
    ]
    assert CALLS == {"sync_outer": 1, "sync_double": 2}
    assert rt.replay("nested-sync") == 13


@agentdur.transaction
def write_inside(db: Any, value: str) -> None:  # never reached: refused before the call
    _count("write_inside")


@agentdur.step
async def outer_with_transaction() -> None:
    write_inside("x")


@agentdur.workflow(name="test_steps.nested_transaction")
async def nested_transaction_flow() -> None:
    await outer_with_transaction()


def test_transaction_step_inside_a_step_is_a_clear_error(rt: agentdur.Runtime) -> None:
    with pytest.raises(
        agentdur.UsageError,
        match="transaction step 'write_inside' was called inside another step",
    ):
        rt.run(nested_transaction_flow)
    assert "write_inside" not in CALLS
