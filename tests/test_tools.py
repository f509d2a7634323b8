"""@tool: schemas from type hints, argument validation, context injection, hooks."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import threading
from typing import Annotated, Any, Literal, Optional

import jsonschema
import pydantic
import pytest
from pydantic import BaseModel, Field

from agentdur.errors import ToolArgumentsError, UsageError
from agentdur.tools import Tool, ToolContext, is_async_callable, tool, tools_by_name


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_ctx(**overrides: Any) -> ToolContext:
    fields: dict[str, Any] = {
        "run_id": "run-1",
        "step_index": 3,
        "idempotency_key": "run-1:3",
        "attempt": 1,
    }
    return ToolContext(**{**fields, **overrides})


class Currency(enum.Enum):
    EUR = "eur"
    USD = "usd"


class Address(BaseModel):
    street: str
    zip: str = "00000"


class Item(BaseModel):
    sku: str
    quantity: int

    @pydantic.field_validator("sku")
    @classmethod
    def sku_is_upper(cls, value: str) -> str:
        if value != value.upper():
            raise ValueError("sku must be upper case")
        return value


@tool(effect="side_effect", key="refund:{order_id}")
def refund(
    ctx: ToolContext,
    order_id: str,
    amount: Annotated[float, Field(description="Amount to refund, in units.", gt=0)],
    currency: Currency = Currency.EUR,
    reason: Literal["damaged", "late", "other"] = "other",
    note: Optional[str] = None,  # noqa: UP045 - Optional is supported too
    items: list[Item] = [],  # noqa: B006 - pydantic copies defaults
    ship_to: Address | None = None,
    metadata: dict[str, int] = {},  # noqa: B006
) -> dict[str, Any]:
    """Refund an order,
    fully or in part.

    Refunds go back to the original payment method.

    Args:
        order_id: The order to refund.
        amount: Overridden by the Annotated description.
        reason (str): Why the customer
            asked for the refund.
    """
    return {
        "ctx": ctx,
        "order_id": order_id,
        "amount": amount,
        "currency": currency,
        "reason": reason,
        "note": note,
        "items": items,
        "ship_to": ship_to,
        "metadata": metadata,
    }


# ---- schema ---------------------------------------------------------------------


def test_definition_is_the_exact_schema_the_model_sees() -> None:
    assert refund.definition() == {
        "name": "refund",
        "description": "Refund an order, fully or in part.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "description": "The order to refund."},
                "amount": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Amount to refund, in units.",
                },
                "currency": {"$ref": "#/$defs/Currency", "default": "eur"},
                "reason": {
                    "type": "string",
                    "enum": ["damaged", "late", "other"],
                    "default": "other",
                    "description": "Why the customer asked for the refund.",
                },
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "default": []},
                "ship_to": {
                    "anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}],
                    "default": None,
                },
                "metadata": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "default": {},
                },
            },
            "required": ["order_id", "amount"],
            "additionalProperties": False,
            "$defs": {
                "Address": {
                    "type": "object",
                    "title": "Address",
                    "properties": {
                        "street": {"type": "string"},
                        "zip": {"type": "string", "default": "00000"},
                    },
                    "required": ["street"],
                },
                "Currency": {"type": "string", "title": "Currency", "enum": ["eur", "usd"]},
                "Item": {
                    "type": "object",
                    "title": "Item",
                    "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                    "required": ["sku", "quantity"],
                },
            },
        },
    }
    jsonschema.Draft202012Validator.check_schema(refund.parameters)


def test_top_level_keys_come_in_reading_order_without_title() -> None:
    assert list(refund.parameters) == [
        "type",
        "properties",
        "required",
        "additionalProperties",
        "$defs",
    ]


def test_tool_without_parameters_still_has_properties_and_required() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.definition() == {
        "name": "ping",
        "description": "",
        "parameters": {
            "type": "object",
            "properties": {},
            "required": [],
            "additionalProperties": False,
        },
    }


def test_definition_returns_a_copy() -> None:
    definition = refund.definition()
    definition["parameters"]["properties"].clear()
    assert "order_id" in refund.parameters["properties"]


def test_options_and_defaults_are_kept() -> None:
    @tool
    def plain(x: int) -> int:
        return x

    assert (plain.effect, plain.retries, plain.requires_approval) == ("side_effect", 0, False)
    assert (plain.transactional, plain.key, plain.is_async) == (False, None, False)

    @tool(
        name="lookup_v2",
        description="Look something up.",
        effect="read_only",
        retries=3,
        requires_approval=True,
        transactional=True,
    )
    async def lookup(x: int) -> int:
        """Not this."""
        return x

    assert isinstance(lookup, Tool)
    assert (lookup.name, lookup.description, lookup.effect) == (
        "lookup_v2",
        "Look something up.",
        "read_only",
    )
    assert (lookup.retries, lookup.requires_approval, lookup.transactional) == (3, True, True)
    assert lookup.is_async is True
    assert repr(lookup) == "Tool(name='lookup_v2', effect='read_only')"


def test_description_skips_a_docstring_that_starts_with_a_section() -> None:
    @tool
    def f(x: int) -> int:
        """
        Args:
            x: the number.
        """
        return x

    assert f.description == ""
    assert f.parameters["properties"]["x"] == {"type": "integer", "description": "the number."}


def test_docstring_args_section_stops_at_the_next_section() -> None:
    @tool
    def f(a: int, b: int, c: int) -> int:
        """Add.

        Args:
            a: first.
            b: second, which goes on.
                Note: still about b.

        Returns:
            c: not an argument description.
        """
        return a + b + c

    props = f.parameters["properties"]
    assert props["a"]["description"] == "first."
    assert props["b"]["description"] == "second, which goes on. Note: still about b."
    assert "description" not in props["c"]


def test_parameter_named_like_a_basemodel_attribute() -> None:
    @tool
    def save(json: str, model_config: int = 0) -> tuple[str, int]:
        return json, model_config

    assert save.parameters["properties"] == {
        "json": {"type": "string"},
        "model_config": {"type": "integer", "default": 0},
    }
    assert asyncio.run(save.call({"json": "x"})) == ("x", 0)


# ---- context ----------------------------------------------------------------------


def test_context_is_hidden_from_schema_in_any_position() -> None:
    @tool
    def f(a: int, context: ToolContext, b: str = "x") -> None:
        return None

    assert list(f.parameters["properties"]) == ["a", "b"]
    assert (f.takes_context, f.context_param) == (True, "context")
    assert (refund.takes_context, refund.context_param) == (True, "ctx")

    @tool
    def g(a: int) -> None:
        return None

    assert (g.takes_context, g.context_param) == (False, None)


@pytest.mark.anyio
async def test_context_is_injected() -> None:
    ctx = make_ctx(dry_run=True, db="conn", tool_name="refund")
    result = await refund.call({"order_id": "A17", "amount": 5}, ctx)
    assert result["ctx"] is ctx


@pytest.mark.anyio
async def test_call_without_context_for_a_tool_that_takes_one() -> None:
    with pytest.raises(UsageError) as info:
        await refund.call({"order_id": "A17", "amount": 5})
    assert str(info.value) == "tool 'refund' takes a ToolContext; pass ctx to call it"


def test_tool_context_defaults() -> None:
    ctx = make_ctx()
    assert (ctx.dry_run, ctx.db, ctx.tool_name) == (False, None, "")
    with pytest.raises(TypeError):
        ToolContext("run-1", 3, "k", 1)  # type: ignore[call-arg]


# ---- bad definitions -------------------------------------------------------------


class NotAModel:
    pass


def test_bad_signature_lists_every_problem_in_one_error() -> None:
    def bad(  # type: ignore[no-untyped-def]
        a,
        *args: int,
        ctx: ToolContext,
        ctx2: ToolContext,
        thing: NotAModel,
        f: int = Field(default=1),
        **kwargs: int,
    ) -> None:
        return None

    with pytest.raises(UsageError) as info:
        tool(effect="write", retries=-1, key="refund:{order}")(bad)  # type: ignore[call-overload]
    assert str(info.value) == (
        "function 'test_bad_signature_lists_every_problem_in_one_error.<locals>.bad' "
        "cannot be a tool:\n"
        "  - effect must be one of 'read_only', 'idempotent', 'side_effect', got 'write'\n"
        "  - retries must be an int >= 0, got -1\n"
        "  - parameter 'a' has no type annotation\n"
        "  - *args is not supported: declare each argument\n"
        "  - parameter 'ctx2' is a second ToolContext after 'ctx'\n"
        "  - parameter 'thing': no JSON Schema for type NotAModel "
        "(PydanticSchemaGenerationError)\n"
        "  - parameter 'f': put Field() in Annotated[], not the default\n"
        "  - **kwargs is not supported: declare each argument\n"
        "  - key 'refund:{order}' refers to 'order', which is not a parameter"
    )


def test_invalid_effect_alone() -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(UsageError) as info:
        Tool(f, effect="writes")  # type: ignore[arg-type]
    assert str(info.value) == (
        "function 'test_invalid_effect_alone.<locals>.f' cannot be a tool:\n"
        "  - effect must be one of 'read_only', 'idempotent', 'side_effect', got 'writes'"
    )


def test_bad_name_key_and_unresolved_hint() -> None:
    def f(x: Missing) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 1

    with pytest.raises(UsageError) as info:
        tool(name="my tool", key=42)(f)  # type: ignore[call-overload]
    assert str(info.value) == (
        "function 'test_bad_name_key_and_unresolved_hint.<locals>.f' cannot be a tool:\n"
        "  - tool name 'my tool' must be 1 to 64 letters, digits, '_' or '-'\n"
        "  - key must be a format string or a callable, got 42\n"
        "  - cannot resolve its type hints: name 'Missing' is not defined"
    )


def test_tool_given_something_not_callable() -> None:
    with pytest.raises(UsageError) as info:
        tool("refund")  # type: ignore[call-overload]
    assert str(info.value) == "@tool takes a function, got 'refund'; pass options by keyword"


# ---- parse_arguments -------------------------------------------------------------


def test_parse_arguments_returns_the_plain_json_dict() -> None:
    raw = '{"order_id": "A17", "amount": 5, "currency": "usd", "ship_to": {"street": "Main"}}'
    assert refund.parse_arguments(raw) == {
        "order_id": "A17",
        "amount": 5,
        "currency": "usd",
        "ship_to": {"street": "Main"},
    }
    given = {"order_id": "A17", "amount": 2.5}
    assert refund.parse_arguments(given) == given


def test_malformed_json() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments('{"order_id": "A17" "amount": 5}')
    assert str(info.value) == (
        "invalid arguments for tool 'refund': not valid JSON "
        '(Expecting \',\' delimiter at line 1, column 20): \'{"order_id": "A17" "amount": 5}\''
    )
    assert info.value.tool == "refund"


def test_malformed_json_excerpt_is_short() -> None:
    raw = '{"order_id": "' + "x" * 100 + '", oops}'
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments(raw)
    message = str(info.value)
    assert message.startswith(
        "invalid arguments for tool 'refund': not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1, column 118): "
    )
    assert message.endswith("'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", oops}'")
    assert len(message) < 250


def test_nan_is_not_json() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments('{"order_id": "A17", "amount": NaN}')
    assert str(info.value) == (
        "invalid arguments for tool 'refund': not valid JSON (NaN is not allowed)"
    )


@pytest.mark.parametrize(
    ("raw", "got"),
    [("[1, 2]", "array"), ('"x"', "string"), ("3", "number"), ("null", "null")],
)
def test_arguments_must_be_an_object(raw: str, got: str) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments(raw)
    assert str(info.value) == (
        f"invalid arguments for tool 'refund': arguments must be a JSON object, got {got}"
    )


def test_every_schema_error_is_listed() -> None:
    raw = '{"amount": "abc", "currency": "gbp", "items": [{"sku": "A"}], "ship_to": {}}'
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments(raw)
    assert str(info.value) == (
        "invalid arguments for tool 'refund': "
        "'amount': 'abc' is not of type 'number'; "
        "'currency': 'gbp' is not one of ['eur', 'usd']; "
        "'items[0]': 'quantity' is a required property; "
        "'ship_to': {} is not valid under any of the given schemas; "
        "'order_id' is a required property"
    )


def test_unknown_arguments_are_rejected_and_named() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments({"order_id": "A17", "amount": 1, "ammount": 2, "color": "red"})
    assert str(info.value) == (
        "invalid arguments for tool 'refund': unknown arguments 'ammount', 'color' "
        "(valid: 'order_id', 'amount', 'currency', 'reason', 'note', 'items', 'ship_to', "
        "'metadata')"
    )

    @tool
    def ping() -> None:
        return None

    with pytest.raises(ToolArgumentsError) as info:
        ping.parse_arguments('{"x": 1}')
    assert str(info.value) == (
        "invalid arguments for tool 'ping': unknown argument 'x' (valid: none)"
    )


def test_empty_text_means_no_arguments() -> None:
    @tool
    def ping() -> None:
        return None

    assert ping.parse_arguments("") == {}
    assert ping.parse_arguments("  \n") == {}
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments("")
    assert str(info.value) == (
        "invalid arguments for tool 'refund': "
        "'order_id' is a required property; 'amount' is a required property"
    )


def test_pydantic_validators_run_after_the_schema() -> None:
    raw = '{"order_id": "A17", "amount": 1, "items": [{"sku": "abc", "quantity": 1}]}'
    with pytest.raises(ToolArgumentsError) as info:
        refund.parse_arguments(raw)
    assert str(info.value) == (
        "invalid arguments for tool 'refund': 'items[0].sku': Value error, sku must be upper case"
    )


# ---- call ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_call_converts_json_to_declared_types() -> None:
    arguments = refund.parse_arguments(
        '{"order_id": "A17", "amount": 5, "currency": "usd", "reason": "late",'
        ' "items": [{"sku": "AB", "quantity": 2}], "ship_to": {"street": "Main"},'
        ' "metadata": {"n": 1}}'
    )
    result = await refund.call(arguments, make_ctx())
    assert result["currency"] is Currency.USD
    assert result["items"] == [Item(sku="AB", quantity=2)]
    assert isinstance(result["items"][0], Item)
    assert result["ship_to"] == Address(street="Main", zip="00000")
    assert (result["reason"], result["note"], result["metadata"]) == ("late", None, {"n": 1})
    assert result["amount"] == 5.0


@pytest.mark.anyio
async def test_call_fills_defaults() -> None:
    result = await refund.call({"order_id": "A17", "amount": 1}, make_ctx())
    assert result["currency"] is Currency.EUR
    assert (result["reason"], result["items"], result["ship_to"]) == ("other", [], None)


@pytest.mark.anyio
async def test_call_returns_the_result_unchanged() -> None:
    sentinel = object()

    @tool
    def f() -> object:
        return sentinel

    assert await f.call({}) is sentinel


@pytest.mark.anyio
async def test_call_rejects_arguments_that_do_not_fit_the_types() -> None:
    # e.g. a recorded input replayed against a tool whose signature changed
    with pytest.raises(ToolArgumentsError) as info:
        await refund.call({"order_id": "A17", "amount": "lots"}, make_ctx())
    assert str(info.value) == (
        "invalid arguments for tool 'refund': "
        "'amount': Input should be a valid number, unable to parse string as a number"
    )
    with pytest.raises(ToolArgumentsError) as info:
        await refund.call({"order_id": "A17", "amount": 1, "extra": 1}, make_ctx())
    assert str(info.value) == (
        "invalid arguments for tool 'refund': 'extra': Extra inputs are not permitted"
    )


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.mark.anyio
async def test_sync_tool_runs_in_a_worker_thread_with_context_vars() -> None:
    @tool
    def where() -> tuple[int, str]:
        return threading.get_ident(), request_id.get()

    request_id.set("req-9")
    thread, seen = await where.call({})
    assert thread != threading.get_ident()
    assert seen == "req-9"


@pytest.mark.anyio
async def test_async_tool_runs_on_the_loop() -> None:
    @tool
    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    thread, loop = await where.call({})
    assert thread == threading.get_ident()
    assert loop is asyncio.get_running_loop()


@pytest.mark.anyio
async def test_positional_only_parameters() -> None:
    @tool
    def f(a: int, ctx: ToolContext, /, b: int = 2) -> tuple[int, int, ToolContext]:
        return a, b, ctx

    ctx = make_ctx()
    assert await f.call({"a": 1}, ctx) == (1, 2, ctx)


def test_calling_the_tool_calls_the_function() -> None:
    result = refund(make_ctx(), "A17", 3.0)
    assert (result["order_id"], result["amount"], result["currency"]) == ("A17", 3.0, Currency.EUR)


def test_is_async_callable_sees_through_partial_and_call() -> None:
    async def f(x: int) -> int:
        return x

    class AsyncCallable:
        async def __call__(self) -> None:
            return None

    assert is_async_callable(functools.partial(functools.partial(f, 1)))
    assert is_async_callable(AsyncCallable())
    assert is_async_callable(functools.partial(AsyncCallable()))
    assert not is_async_callable(functools.partial(len, "x"))
    assert Tool(functools.partial(f), name="f").is_async


# ---- domain key ------------------------------------------------------------------


def test_domain_key_from_a_format_string() -> None:
    assert refund.domain_key({"order_id": "A17", "amount": 5}) == "refund:A17"


def test_domain_key_fills_defaults_and_takes_a_callable() -> None:
    @tool(key="ship:{order_id}:{speed}")
    def ship(order_id: str, speed: str = "normal") -> None:
        return None

    assert ship.domain_key({"order_id": "A1"}) == "ship:A1:normal"

    seen: list[dict[str, Any]] = []

    def key(arguments: dict[str, Any]) -> str:
        seen.append(arguments)
        return f"charge:{arguments['customer']}:{arguments['cents']}"

    @tool(key=key)
    def charge(customer: str, cents: int = 100) -> None:
        return None

    assert charge.domain_key({"customer": "c1"}) == "charge:c1:100"
    assert seen == [{"customer": "c1", "cents": 100}]


def test_domain_key_none_without_key_and_error_on_non_str() -> None:
    @tool
    def f(x: int) -> None:
        return None

    assert f.domain_key({"x": 1}) is None

    @tool(key=lambda arguments: arguments["x"])
    def g(x: int) -> None:
        return None

    with pytest.raises(UsageError) as info:
        g.domain_key({"x": 1})
    assert str(info.value) == "key of tool 'g' returned int, expected a str"


def test_domain_key_format_may_index_into_arguments() -> None:
    @tool(key="move:{ship_to[street]}")
    def move(ship_to: Address) -> None:
        return None

    assert move.domain_key({"ship_to": {"street": "Main"}}) == "move:Main"


# ---- hooks -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_reconcile_hook_sync_and_async() -> None:
    @tool
    def pay(order_id: str) -> str:
        return "paid"

    assert not pay.has_reconcile

    @pay.reconcile
    def check(ctx: ToolContext) -> str | None:
        return f"found {ctx.idempotency_key}" if ctx.attempt > 1 else None

    assert check.__name__ == "check"  # the hook function is returned unchanged
    assert pay.has_reconcile
    assert await pay.call_reconcile(make_ctx(attempt=2)) == "found run-1:3"
    assert await pay.call_reconcile(make_ctx()) is None

    @tool
    def pay_async(order_id: str) -> str:
        return "paid"

    @pay_async.reconcile
    async def check_async(ctx: ToolContext) -> str:
        return ctx.run_id

    assert await pay_async.call_reconcile(make_ctx()) == "run-1"


@pytest.mark.anyio
async def test_simulate_hook_gets_typed_arguments_it_declares() -> None:
    assert not refund.has_simulate
    local = Tool(refund.fn)

    @local.simulate
    def fake(order_id: str, currency: Currency, ctx: ToolContext) -> str:
        return f"would refund {order_id} in {currency.name} (dry run: {ctx.dry_run})"

    assert local.has_simulate
    result = await local.call_simulate({"order_id": "A1", "amount": 2}, make_ctx(dry_run=True))
    assert result == "would refund A1 in EUR (dry run: True)"

    other = Tool(refund.fn)

    @other.simulate
    async def fake_all(**arguments: Any) -> list[str]:
        return sorted(arguments)

    assert await other.call_simulate({"order_id": "A1", "amount": 2}, None) == [
        "amount",
        "currency",
        "items",
        "metadata",
        "note",
        "order_id",
        "reason",
        "ship_to",
    ]


@pytest.mark.anyio
async def test_missing_and_duplicate_hooks() -> None:
    @tool
    def f() -> None:
        return None

    with pytest.raises(UsageError) as info:
        await f.call_reconcile(make_ctx())
    assert str(info.value) == "tool 'f' has no reconcile hook"
    with pytest.raises(UsageError) as info:
        await f.call_simulate({}, None)
    assert str(info.value) == "tool 'f' has no simulate hook"

    f.simulate(lambda: "one")
    with pytest.raises(UsageError) as info:
        f.simulate(lambda: "two")
    assert str(info.value) == "tool 'f' already has a simulate hook"
    f.reconcile(lambda ctx: None)
    with pytest.raises(UsageError) as info:
        f.reconcile(lambda ctx: None)
    assert str(info.value) == "tool 'f' already has a reconcile hook"


# ---- tools_by_name ---------------------------------------------------------------


def test_tools_by_name_wraps_plain_functions_with_defaults() -> None:
    def lookup(order_id: str) -> str:
        """Look an order up."""
        return order_id

    tools = tools_by_name([refund, lookup])
    assert list(tools) == ["refund", "lookup"]
    assert tools["refund"] is refund
    assert isinstance(tools["lookup"], Tool)
    assert (tools["lookup"].effect, tools["lookup"].description) == (
        "side_effect",
        "Look an order up.",
    )


def test_tools_by_name_rejects_duplicates() -> None:
    def refund(x: int) -> None:
        return None

    with pytest.raises(UsageError) as info:
        tools_by_name([globals()["refund"], refund])
    assert str(info.value) == "two tools are named 'refund'; give one another name"
