"""What an agent run costs in storage: linear in its turns, each payload stored once.

Run with `-s` to see the measured sizes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import agentdur
from agentdur import codec
from agentdur.models import Message, ModelResponse, OpenAIChat
from agentdur.testing import Scripted, ScriptInfo, openai_client

FIXTURES = Path(
    os.environ.get("AGENTDUR_FIXTURES") or Path(__file__).parent / "fixtures" / "providers"
)
CHAT_URL = "https://api.openai.com/v1/chat/completions"


@agentdur.tool(effect="read_only")
def note(text: str) -> str:
    """Keeps a note."""
    return f"noted {len(text)} characters"


def turns_script(turns: int, payload: str) -> Any:
    """A Scripted function calling `note` on every turn until `turns`, then answering."""

    def script(messages: list[Message], info: ScriptInfo) -> ModelResponse | str:
        turn = sum(m.role == "assistant" for m in messages)
        if turn < turns:
            return Scripted.tool_call("note", {"text": f"{turn}:{payload}"}, id=f"call_{turn}")
        return f"done after {turn} notes"

    return script


def run_turns(rt: agentdur.Runtime, turns: int, payload: str, run_id: str) -> int:
    """Run the agent for `turns` tool turns; the bytes of its steps' input and output."""
    bot = agentdur.Agent(
        f"t_store_{turns}_{len(payload)}",
        Scripted(turns_script(turns, payload)),
        [note],
        "Take notes.",
        max_turns=turns + 1,
    )
    assert rt.run_agent(bot, "Take notes.", run_id=run_id).output == f"done after {turns} notes"
    steps = rt.steps(run_id)
    assert len(steps) == 2 * turns + 1
    return sum(len(codec.dumps(s.input)) + len(codec.dumps(s.output)) for s in steps)


def sqlite_file_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    return path.stat().st_size


def fresh_sqlite_size(tmp_path: Path, turns: int, payload: str) -> int:
    path = tmp_path / f"run_{turns}_{len(payload)}.db"
    with agentdur.Runtime(f"sqlite:///{path}", executor_id="t-store") as rt:
        run_turns(rt, turns, payload, "r")
    return sqlite_file_size(path)


def test_storage_grows_linearly_with_turns(rt: agentdur.Runtime, backend: str) -> None:
    payload = "x" * 200
    fifty = run_turns(rt, 50, payload, "fifty")
    hundred = run_turns(rt, 100, payload, "hundred")
    print(
        f"\n[{backend}] step input+output bytes: 50 turns {fifty}, 100 turns {hundred}, "
        f"ratio {hundred / fifty:.3f}"
    )
    assert hundred < 2.2 * fifty, f"100 turns take {hundred} bytes, 50 turns {fifty}"


def test_sqlite_file_grows_linearly_with_turns(tmp_path: Path) -> None:
    payload = "x" * 200
    fifty = fresh_sqlite_size(tmp_path, 50, payload)
    hundred = fresh_sqlite_size(tmp_path, 100, payload)
    print(
        f"\n[sqlite] file size: 50 turns {fifty}, 100 turns {hundred}, ratio {hundred / fifty:.3f}"
    )
    assert hundred <= 2.1 * fifty, f"100 turns: {hundred} bytes, 50 turns: {fifty} bytes"


def test_100_turns_of_1kb_arguments_fit_in_300kb_of_sqlite(tmp_path: Path) -> None:
    size = fresh_sqlite_size(tmp_path, 100, "y" * 1000)
    empty = tmp_path / "empty.db"
    with agentdur.Runtime(f"sqlite:///{empty}", executor_id="t-store") as rt:
        rt.store.open()
    run = size - sqlite_file_size(empty)
    print(f"\n[sqlite] 100 turns with 1 KB of tool-call arguments each: {size} bytes, {run} of run")
    assert run <= 300 * 1024, f"the run takes {run} bytes of SQLite (limit 300 KB, issue 13)"


def test_each_payload_is_stored_once_with_scripted(rt: agentdur.Runtime) -> None:
    marker = "MARKER-" + "z" * 300
    run_turns(rt, 3, marker, "r")
    steps = rt.steps("r")
    llm = [s for s in steps if s.kind == "llm"]
    tools = [s for s in steps if s.kind == "tool"]
    for step in llm:
        assert set(step.output) == {"response", "latency_ms"}
        for call in step.output["response"]["tool_calls"]:
            assert set(call) == {"id", "name", "raw_arguments"}  # no parsed copy
    assert "tools" in llm[0].input
    assert [step.input["messages"] for step in llm[1:]] == [
        [{"role": "tool", "step": tool.step_index}] for tool in tools
    ]
    assert all("tools" not in step.input for step in llm[1:])
    # Each turn's argument text: once in the LLM response, once in the tool step input.
    text = json.dumps([[s.input, s.output] for s in steps])
    for turn in range(3):
        assert text.count(f"{turn}:{marker}") == 2
    # The tool's description (part of the tool definitions) is stored once.
    assert text.count("Keeps a note.") == 1
    # The rebuilt conversation still has every argument and result.
    result = rt.agent_result(
        agentdur.Agent("t_store_3_307", Scripted([]), [note]), "r", rt.get_run("r").output
    )
    assert [m.role for m in result.messages] == (
        ["system", "user"] + ["assistant", "tool"] * 3 + ["assistant"]
    )
    assert result.messages[2].tool_calls[0].arguments == {"text": f"0:{marker}"}  # type: ignore[union-attr]


def test_each_payload_is_stored_once_with_openai_chat(rt: agentdur.Runtime) -> None:
    first = json.loads((FIXTURES / "openai_chat_tool_call.json").read_text())
    second = json.loads((FIXTURES / "openai_chat_text.json").read_text())
    second["choices"][0]["message"]["content"] = "NO"
    router = respx.Router(assert_all_mocked=True)
    router.post(CHAT_URL).mock(
        side_effect=[httpx.Response(200, json=first), httpx.Response(200, json=second)]
    )

    @agentdur.tool(effect="read_only")
    def lookup_population(country: str) -> str:
        """Returns the current population of the specified fictional country"""
        return "POPULATION-RESULT-4711"

    bot = agentdur.Agent(
        "t_store_openai",
        OpenAIChat("gpt-4o-mini", client=openai_client(router)),
        [lookup_population],
        "Answer YES or NO.",
    )
    assert rt.run_agent(bot, "Can that country have dragons?", run_id="r").output == "NO"
    llm0, tool, llm1 = rt.steps("r")
    for step in (llm0, llm1):
        assert set(step.output) == {"raw", "latency_ms", "endpoint"}
        assert step.output["endpoint"] == "https://api.openai.com/v1"
    assert llm0.output["raw"] == first
    assert tool.input["arguments"] == {"country": "Crumpet"}
    assert llm1.input == {
        "provider": "openai_chat",
        "params": {},
        "messages": [{"role": "tool", "step": 1}],
    }
    text = json.dumps([[s.input, s.output, s.error] for s in rt.steps("r")])
    # The arguments: inside the raw body and in the tool step's input, nowhere else.
    assert text.count("Crumpet") == 2
    assert text.count("call_TTY8UFNo7rNCaOBUNtlRSvMG") == 2  # raw body, tool step input
    assert text.count("POPULATION-RESULT-4711") == 1  # the tool step's output only
    assert text.count("Answer YES or NO.") == 1
    result = rt.agent_result(bot, "r", rt.get_run("r").output)
    assert result.messages[3].content == "POPULATION-RESULT-4711"  # type: ignore[union-attr]


@pytest.mark.parametrize("turns", [1, 5])
def test_recorded_tool_call_arguments_round_trip(rt: agentdur.Runtime, turns: int) -> None:
    # Arguments whose text is not what parsing and dumping again would give are kept.
    odd = '{"text":  "spaced",\n "text2": 1}'
    calls = [
        ModelResponse(
            tool_calls=[
                {"id": f"c{i}", "name": "note", "arguments": {"text": "x"}, "raw_arguments": odd}
            ],
            stop_reason="tool_calls",
        )
        for i in range(turns)
    ]
    bot = agentdur.Agent(f"t_store_odd_{turns}", Scripted([*calls, "end"]), [note])
    result = rt.run_agent(bot, "go", run_id="r")
    stored = [s.output["response"]["tool_calls"] for s in rt.steps("r") if s.kind == "llm"]
    assert stored[0] == [
        {"id": "c0", "name": "note", "arguments": {"text": "x"}, "raw_arguments": odd}
    ]
    assert result.messages[1].tool_calls == calls[0].tool_calls  # type: ignore[union-attr]
    assert rt.replay("r")["output"] == "end"
