"""Replay and fork fidelity (issue 10 items 3, 4, 5, 11, 12, 13), on both backends.

- a replay executes nothing: no reconcile or simulate hook of a tool;
- a recorded error replays as the type the live code saw, and a step called with
  other arguments at a recorded index diverges, naming the index;
- a fork slices by step index, not list position;
- a fork with another model records enough to rebuild it, and keeps the agent's client;
- an agent used by a second Runtime in the same process works (a client per loop);
- a divergence message shows where two long texts differ.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

import agentdur
from agentdur import codec
from agentdur.model_switch import build_model
from agentdur.models import AnthropicMessages, Model, OpenAIChat, OpenAIResponses
from agentdur.recording import difference
from agentdur.testing import Scripted, openai_client
from tests.test_replay_fork import table_dump

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
COUNTS: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    COUNTS.clear()
    VARIANT.update(amount=10)


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


def body(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


# -- item 3: replay is pure ------------------------------------------------------------


@agentdur.tool(effect="side_effect")
def wire_money(account: str, amount: float) -> str:
    """Wire money to an account."""
    _count("wire_money")
    raise agentdur.UncertainEffect("the bank did not answer")


@wire_money.reconcile
def _wire_reconcile(ctx: agentdur.ToolContext) -> Any:
    _count("reconcile")
    raise ConnectionError("the bank is unreachable")  # cannot tell: NEEDS_ATTENTION


@wire_money.simulate
def _wire_simulate(account: str, amount: float) -> str:
    _count("simulate")
    return "simulated"


def _wire_script(messages: list[Any], info: Any) -> Any:
    if len(messages) <= 2:
        return Scripted.tool_call("wire_money", {"account": "DE01", "amount": 5.0})
    return "done"


wire_agent = agentdur.Agent("fidelity-wire", Scripted(_wire_script), tools=[wire_money])


def test_replay_of_an_unfinished_run_calls_no_hook_and_writes_nothing(
    rt: agentdur.Runtime, database_url: str
) -> None:
    handle = rt.start_agent(wire_agent, "wire 5 to DE01", run_id="wire")
    with pytest.raises(agentdur.NeedsAttentionError):
        handle.result()
    steps = rt.steps("wire")
    assert [(s.kind, s.status) for s in steps] == [("llm", "SUCCEEDED"), ("tool", "STARTED")]
    live = dict(COUNTS)
    assert live["wire_money"] == 1
    before = table_dump(database_url)

    assert rt.replay("wire") is None  # the recording ends where the run stopped

    assert live == COUNTS  # no reconcile hook, no tool, no simulate hook ran
    assert table_dump(database_url) == before


# -- item 4: the same error type; other arguments diverge --------------------------------


class PaymentDeclined(Exception):
    """Its constructor is not `cls(message)`."""

    def __init__(self, code: str, amount: float) -> None:
        super().__init__(f"card declined ({code}) for {amount}")
        self.code = code
        self.amount = amount


VARIANT: dict[str, Any] = {"amount": 10}


@agentdur.step
async def charge(amount: float) -> str:
    _count("charge")
    if amount > 5:
        raise PaymentDeclined("insufficient_funds", amount)
    return "charged"


@agentdur.workflow(name="fidelity.checkout")
async def checkout() -> str:
    try:
        return await charge(VARIANT["amount"])
    except PaymentDeclined as exc:  # rebuilt as StepFailed, replay would raise instead
        return f"declined: {exc.code} {exc.amount}"


def test_a_recorded_error_replays_as_the_type_the_live_code_saw(rt: agentdur.Runtime) -> None:
    assert rt.run(checkout, run_id="pay") == "declined: insufficient_funds 10"
    (step,) = rt.steps("pay")
    assert step.status == "ERROR"
    rebuilt = codec.decode_error(step.error or {})
    assert type(rebuilt) is PaymentDeclined
    assert (str(rebuilt), rebuilt.code, rebuilt.amount) == (
        "card declined (insufficient_funds) for 10",
        "insufficient_funds",
        10,
    )
    # Replay takes the same branch as the live run, without running the step.
    assert rt.replay("pay") == "declined: insufficient_funds 10"
    assert COUNTS == {"charge": 1}


def test_a_step_called_with_other_arguments_diverges_at_its_index(rt: agentdur.Runtime) -> None:
    assert rt.run(checkout, run_id="args") == "declined: insufficient_funds 10"
    assert rt.steps("args")[0].request_hash is not None
    VARIANT["amount"] = 20  # the code now computes another amount
    with pytest.raises(agentdur.NonDeterminismError) as caught:
        rt.replay("args")
    error = caught.value
    assert error.index == 0
    assert str(error).startswith(
        "run 'args' diverged from its recording at step 0: recorded step 'charge' with input hash "
    )
    assert "the same step with other arguments, at character 9: " in str(error)
    assert "'{\"args\":[20]}' (recorded '{\"args\":[10]}')" in str(error)
    assert COUNTS == {"charge": 1}


# -- item 5: fork by step index ----------------------------------------------------------


@agentdur.step
async def note(label: str) -> str:
    _count(label)
    return label


@agentdur.workflow(name="fidelity.gappy")
async def gappy() -> list[str]:
    first = await note("a")  # step 0
    skipped = note("b")  # step 1: index taken, never awaited, never recorded
    skipped.close()
    return [first, await note("c"), await note("d")]  # steps 2 and 3


def test_fork_slices_by_step_index_not_list_position(rt: agentdur.Runtime) -> None:
    assert rt.run(gappy, run_id="gap") == ["a", "c", "d"]
    assert [s.step_index for s in rt.steps("gap")] == [0, 2, 3]
    COUNTS.clear()

    assert rt.fork("gap", 2, new_run_id="gap-2").result() == ["a", "c", "d"]
    steps = rt.steps("gap-2")
    assert [(s.step_index, s.inherited_from) for s in steps] == [
        (0, "gap"),
        (2, None),
        (3, None),
    ]
    assert COUNTS == {"c": 1, "d": 1}  # step 2 ran live, step 0 did not

    COUNTS.clear()
    assert rt.fork("gap", 3, new_run_id="gap-3").result() == ["a", "c", "d"]
    assert [(s.step_index, s.inherited_from) for s in rt.steps("gap-3")] == [
        (0, "gap"),
        (2, "gap"),
        (3, None),
    ]
    assert COUNTS == {"d": 1}

    with pytest.raises(
        agentdur.UsageError,
        match=r"at_step 4 is out of range: run 'gap' has 3 recorded steps \(0, 2, 3\)",
    ):
        rt.fork("gap", 4)


# -- item 11: forks with another model are reproducible -----------------------------------

PROXY = "https://llm-proxy.example/v1"


def _hello_agent(name: str, model: Model) -> agentdur.Agent:
    return agentdur.Agent(name, model, instructions="Answer briefly.")


def test_fork_with_a_model_instance_records_what_rebuilds_it(
    rt: agentdur.Runtime, database_url: str
) -> None:
    bot = _hello_agent("fidelity-instance", Scripted(["scripted answer"]))
    rt.run_agent(bot, "hello", run_id="m-src")
    router = respx.Router(assert_all_mocked=True)
    route = router.post(f"{PROXY}/chat/completions").respond(json=body("openai_chat_text"))
    other = OpenAIChat(
        "gpt-4o-mini", client=openai_client(router, base_url=PROXY), temperature=0.2, seed=7
    )

    handle = rt.fork("m-src", 0, model=other, new_run_id="m-fork")
    assert handle.result()["output"] == body("openai_chat_text")["choices"][0]["message"]["content"]
    assert route.call_count == 1
    (segment,) = rt.get_run("m-fork").metadata["fork"]["models"]
    assert segment == {
        "from": 0,
        "provider": "openai_chat",
        "model": "gpt-4o-mini",
        "params": {"temperature": 0.2, "seed": 7},
        "endpoint": PROXY,
    }
    assert "test-key" not in json.dumps(table_dump(database_url), default=str)

    # Replay (and recovery, which rebuilds the same way) makes an equivalent model:
    # same provider, name, parameters and endpoint, so the request hash matches.
    assert rt.replay("m-fork")["output"] == handle.result()["output"]
    assert route.call_count == 1
    rebuilt = build_model(
        "openai_chat", "gpt-4o-mini", bot.model, params=segment["params"], endpoint=PROXY
    )
    assert rebuilt.describe() == other.describe()
    assert rebuilt.endpoint() == PROXY


def test_fork_to_another_api_keeps_the_agents_own_client(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    router.post(f"{PROXY}/chat/completions").respond(json=body("openai_chat_text"))
    responses = router.post(f"{PROXY}/responses").respond(json=body("openai_responses_text"))
    bot = _hello_agent(
        "fidelity-family", OpenAIChat("gpt-4o-mini", client=openai_client(router, base_url=PROXY))
    )
    rt.run_agent(bot, "hello", run_id="fam-src")

    # Not built from OPENAI_API_KEY / api.openai.com: the agent's client (base URL, key).
    handle = rt.fork("fam-src", 0, model="openai-responses:gpt-4.1", new_run_id="fam-fork")
    assert handle.result()["output"]
    assert responses.call_count == 1
    assert json.loads(responses.calls[0].request.content)["model"] == "gpt-4.1"
    assert rt.replay("fam-fork") == handle.result()


def test_a_rebuilt_model_for_another_server_never_gets_the_agents_key() -> None:
    base = OpenAIChat("gpt-4o-mini", base_url=PROXY, api_key="agent-secret")
    same = build_model("openai_responses", "gpt-4.1", base, params={}, endpoint=PROXY)
    assert isinstance(same, OpenAIResponses)
    assert same._client_options["api_key"] == "agent-secret"
    elsewhere = build_model("openai_chat", "m", base, params={}, endpoint="https://other.example")
    assert elsewhere._client_options == {"base_url": "https://other.example"}
    anthropic = build_model("anthropic_messages", "claude", base, params={"max_tokens": 99})
    assert isinstance(anthropic, AnthropicMessages)
    assert "api_key" not in anthropic._client_options
    assert anthropic.describe()["params"] == {"max_tokens": 99}


# -- item 12: an agent used by a second Runtime in the same process -----------------------


class _Provider(http.server.BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 server answering both APIs with recorded bodies."""

    protocol_version = "HTTP/1.1"
    requests: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append(self.path)
        name = "anthropic_messages_text" if self.path.endswith("/messages") else "openai_chat_text"
        content = (FIXTURES / f"{name}.json").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    _Provider.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_an_agent_works_under_a_second_runtime_in_the_same_process(
    database_url: str, provider: str, api: str
) -> None:
    if api == "openai":
        model: Model = OpenAIChat("gpt-4o-mini", base_url=f"{provider}/v1", api_key="k")
    else:
        model = AnthropicMessages("claude-sonnet-4-0", base_url=provider, api_key="k")
    bot = _hello_agent(f"fidelity-loops-{api}", model)  # as if defined at module level
    outputs = []
    for number in range(2):  # a Runtime per test, each with its own event loop
        with agentdur.Runtime(database_url, executor_id=f"loop-{number}") as rt:
            outputs.append(rt.run_agent(bot, "hello", run_id=f"{api}-{number}").output)
    assert outputs[0] == outputs[1]
    assert len(_Provider.requests) == 2  # one request per run, none sent twice


# -- item 13: where a long text differs ---------------------------------------------------

LONG = "You are a support agent for ACME. " * 4


def test_a_changed_instruction_shows_where_it_differs(rt: agentdur.Runtime) -> None:
    bot = _hello_agent("fidelity-instructions", Scripted(["ok"]))
    bot.instructions = LONG + "Refunds need approval."
    rt.run_agent(bot, "hello", run_id="instr")
    bot.instructions = LONG + "Refunds never need approval."
    with pytest.raises(agentdur.NonDeterminismError) as caught:
        rt.replay("instr")
    message = str(caught.value)
    assert caught.value.index == 0
    offset = len(LONG) + len("Refunds ne")
    context = (LONG + "Refunds ne")[offset - 40 :]
    assert f"new message 0 (system) changed at character {offset}: " in message
    assert f"'...{context}ver need approval.' (recorded '...{context}ed approval.')" in message


def test_difference_shows_the_same_window_of_both_texts() -> None:
    before = "x" * 100 + "abc" + "y" * 100
    after = "x" * 100 + "abd" + "y" * 100
    assert difference(before, after, width=5) == (
        "at character 102: '...xxxabdyyyy...' (recorded '...xxxabcyyyy...')"
    )
    assert difference("same", "same") == "(no visible difference)"
    assert difference("short", "shorter") == "at character 5: 'shorter' (recorded 'short')"
