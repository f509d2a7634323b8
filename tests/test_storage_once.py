"""Each value stored once (issue 13): tool calls kept in the LLM step that made them,
provider bodies rebuilt exactly, big strings kept once by content and collected by gc."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import agentdur
from agentdur import recording
from agentdur.models import (
    AnthropicMessages,
    Message,
    ModelResponse,
    OpenAIChat,
    OpenAIResponses,
    StreamDone,
    Usage,
    UserMessage,
)
from agentdur.models.base import Model
from agentdur.store import payloads
from agentdur.testing import Scripted, ScriptInfo, anthropic_client, openai_client

FIXTURES = Path(
    os.environ.get("AGENTDUR_FIXTURES") or Path(__file__).parent / "fixtures" / "providers"
)
PARSERS = {"openai_chat": OpenAIChat, "openai_responses": OpenAIResponses}
PARSERS["anthropic_messages"] = AnthropicMessages


def body_fixtures() -> list[Path]:
    return sorted(
        p
        for p in FIXTURES.glob("*.json")
        if not p.name.endswith((".request.json", ".response_meta.json")) and "error" not in p.name
    )


@pytest.mark.parametrize("path", body_fixtures(), ids=lambda p: p.stem)
def test_every_recorded_body_is_rebuilt_as_the_same_json(path: Path) -> None:
    provider = next(k for k in PARSERS if path.name.startswith(k))
    body = json.loads(path.read_text())
    response = PARSERS[provider].parse_raw(body)
    assert_rebuilt_exactly(response, body)


def assert_rebuilt_exactly(response: ModelResponse, body: dict[str, Any]) -> None:
    """`response` recorded, sent through JSON as the store keeps it, and rebuilt: the raw
    body comes back as `body`, and each tool call's id is stored once, in `calls`."""
    output = recording.llm_output(response, 1.0, "https://example.com/v1")
    stored = json.loads(json.dumps(output.stored))  # through JSON, as the store keeps it
    rebuilt = payloads._unpack_calls(stored) if "calls" in stored else stored
    assert rebuilt["raw"] == body
    assert rebuilt == json.loads(json.dumps(output.full))
    if response.tool_calls:
        text = json.dumps(stored)
        for call in response.tool_calls:
            assert text.count(json.dumps(call.id)) == 1  # kept once, in `calls`
        assert [c["id"] for c in stored["calls"]] == [c.id for c in response.tool_calls]


def stream_fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("*.sse"))


async def assembled(model: Model, router: respx.Router, path: Path) -> ModelResponse:
    """The response the adapter assembles from a recorded stream (its `StreamDone`)."""
    url = json.loads(path.with_suffix(".request.json").read_text())["url"]
    headers = {"content-type": "text/event-stream; charset=utf-8"}
    router.post(url).mock(
        return_value=httpx.Response(200, headers=headers, content=path.read_bytes())
    )
    events = [event async for event in model.stream([UserMessage(content="hi")], [])]
    assert isinstance(events[-1], StreamDone)
    return events[-1].response


@pytest.mark.parametrize("path", stream_fixtures(), ids=lambda p: p.stem)
def test_every_recorded_stream_is_rebuilt_as_the_same_json(path: Path) -> None:
    """A streamed answer is recorded as the body the adapter assembles from its events
    (`StreamDone.response.raw`), which is packed and rebuilt like any other body."""
    provider = next(k for k in PARSERS if path.name.startswith(k))
    router = respx.Router(assert_all_mocked=True)
    model: Model
    if provider == "anthropic_messages":
        model = AnthropicMessages("claude-haiku-4-5", client=anthropic_client(router))
    else:
        model = PARSERS[provider]("gpt-4o-mini", client=openai_client(router))
    response = asyncio.run(assembled(model, router, path))
    assert response.raw is not None
    body = json.loads(json.dumps(response.raw))  # the assembled body, before packing
    assert PARSERS[provider].parse_raw(body) == response
    assert_rebuilt_exactly(response, body)
    if "tool" in path.name or "function" in path.name:
        assert response.tool_calls


@agentdur.tool(effect="read_only")
def note(text: str) -> str:
    """Keeps a note."""
    return f"noted {len(text)} characters"


def stored_rows(rt: agentdur.Runtime, run_id: str) -> str:
    """Every stored input/output/error of a run as one text (no rebuilding)."""
    store = rt.store
    with store.statement() as cur:
        cur.execute(store.sql.LOAD_STEPS, {"run_id": run_id})
        rows = [store._step(row) for row in cur.fetchall()]
    return json.dumps([[s.input, s.output, s.error] for s in rows])


def test_tool_call_arguments_are_stored_once(rt: agentdur.Runtime, backend: str) -> None:
    marker = "MARKER-" + "q" * 300

    def script(messages: list[Message], info: ScriptInfo) -> ModelResponse | str:
        turn = sum(m.role == "assistant" for m in messages)
        if turn < 3:
            return Scripted.tool_call("note", {"text": f"{turn}:{marker}"}, id=f"call_{turn}")
        return "done"

    bot = agentdur.Agent("t_once_args", Scripted(script), [note])
    assert rt.run_agent(bot, "go", run_id="r").output == "done"
    text = stored_rows(rt, "r")
    for turn in range(3):
        assert text.count(f"{turn}:{marker}") == 1
        assert text.count(f"call_{turn}") == 1
    steps = rt.steps("r")
    tools = [s for s in steps if s.kind == "tool"]
    assert tools[0].input == {
        "call_id": "call_0",
        "arguments": {"text": f"0:{marker}"},
        "effect": "read_only",
    }
    audit = rt.store.tool_calls(run_id="r")
    assert [a.arguments for a in audit] == [{"text": f"{t}:{marker}"} for t in range(3)]
    assert rt.replay("r")["output"] == "done"


def test_a_big_document_is_stored_once_and_collected(rt: agentdur.Runtime, backend: str) -> None:
    document = "".join(f"line {i} of the document\n" for i in range(8000))  # ~200 KB
    assert len(document) > payloads.BLOB_THRESHOLD

    @agentdur.tool(effect="read_only")
    def fetch(url: str) -> str:
        """Fetches."""
        return document

    def script(messages: list[Message], info: ScriptInfo) -> ModelResponse | str:
        turn = sum(m.role == "assistant" for m in messages)
        if turn < 3:
            return Scripted.tool_call("fetch", {"url": "u"}, id=f"c{turn}")
        return "done"

    bot = agentdur.Agent("t_once_doc", Scripted(script), [fetch])
    assert rt.run_agent(bot, "read it", run_id="r").output == "done"
    assert document[:20] not in stored_rows(rt, "r")
    with rt.store.statement() as cur:
        cur.execute("SELECT count(*), sum(size) FROM " + _table(backend, "blobs"))
        count, size = cur.fetchone()  # type: ignore[misc]
    assert (count, size) == (1, len(document.encode()))
    steps = rt.steps("r")
    assert [s.output for s in steps if s.kind == "tool"] == [document] * 3
    result = rt.agent_result(bot, "r", rt.get_run("r").output)
    assert result.messages[2].content == document  # type: ignore[union-attr]
    rt.store.get_step("r", 1)  # one step alone is rebuilt too
    assert rt.store.get_step("r", 1).output == document  # type: ignore[union-attr]
    report = rt.gc(older_than=timedelta(0))
    assert report.runs == 1 and report.blobs == 1


def _table(backend: str, name: str) -> str:
    return f"agentdur.{name}" if backend == "postgres" else name


def test_a_value_that_looks_like_a_reference_stays_itself(rt: agentdur.Runtime) -> None:
    @agentdur.step
    async def echo() -> Any:
        return {"$blob": "0" * 64}

    @agentdur.workflow
    async def wf() -> Any:
        return await echo()

    assert rt.run(wf) == {"$blob": "0" * 64}


def test_usage_and_model_of_a_neutral_response_are_kept_once(
    rt: agentdur.Runtime, backend: str
) -> None:
    """A model without a raw body is recorded as the neutral response; its usage and
    model are the LLM step's own columns, so the stored response leaves them out and
    reading puts them back."""
    usage = Usage(input_tokens=1234567, output_tokens=7654321)

    def script(messages: list[Message], info: ScriptInfo) -> ModelResponse:
        return ModelResponse(text="done", stop_reason="end_turn", usage=usage, model="mdl-XYZ-7")

    bot = agentdur.Agent("t_once_usage", Scripted(script), [])
    assert rt.run_agent(bot, "go", run_id="r").output == "done"
    text = stored_rows(rt, "r")
    assert "1234567" not in text and "mdl-XYZ-7" not in text
    (llm,) = [s for s in rt.steps("r") if s.kind == "llm"]
    assert llm.usage == usage.model_dump() and llm.model == "mdl-XYZ-7"
    assert llm.output["response"]["usage"] == usage.model_dump()
    assert llm.output["response"]["model"] == "mdl-XYZ-7"
    assert recording.response_of(llm).usage == usage
    assert rt.replay("r") is not None  # the replayed agent asks for what was recorded


def test_a_fork_inherits_steps_as_stored(rt: agentdur.Runtime, backend: str) -> None:
    """A fork's inherited steps are the source's rows as stored: a tool call's arguments
    kept once, a big document shared by reference, and read back as the source's steps."""
    marker = "FORKED-" + "z" * 300
    document = "".join(f"row {i} of the report\n" for i in range(6000))  # ~130 KB

    @agentdur.tool(effect="read_only")
    def report(text: str) -> str:
        """Returns the report."""
        return document

    def script(messages: list[Message], info: ScriptInfo) -> ModelResponse | str:
        turn = sum(m.role == "assistant" for m in messages)
        if turn < 3:
            return Scripted.tool_call("report", {"text": f"{turn}:{marker}"}, id=f"f{turn}")
        return "done"

    bot = agentdur.Agent("t_once_fork", Scripted(script), [report])
    assert rt.run_agent(bot, "go", run_id="src").output == "done"
    assert rt.fork("src", 4, new_run_id="fork").result()["output"] == "done"

    text = stored_rows(rt, "fork")
    for turn in range(3):
        assert text.count(f"{turn}:{marker}") == 1
    assert document[:20] not in text
    source, fork = rt.steps("src"), rt.steps("fork")
    assert [(s.input, s.output, s.request_hash) for s in fork[:4]] == [
        (s.input, s.output, s.request_hash) for s in source[:4]
    ]
    assert [s.inherited_from for s in fork] == ["src"] * 4 + [None] * 3
    assert [s.output for s in fork if s.kind == "tool"] == [document] * 3
    with rt.store.statement() as cur:
        cur.execute("SELECT count(*) FROM " + _table(backend, "blobs"))
        assert cur.fetchone() == (1,)
