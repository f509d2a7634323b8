"""The web UI over real runs, on SQLite and PostgreSQL, through HTTP (Starlette TestClient).

Each page renders a recorded run; filters and keyset pages; token auth and CSRF; and the
inbox's actions record what `agentdur approve` / `resolve` record, so the Runtime that
started the run (standing for any executor) continues it.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import agentdur
from agentdur.models import AssistantMessage, Message, ScriptInfo, ToolResultMessage
from agentdur.testing import Scripted
from agentdur.ui.app import LOOPBACK_HOSTS, create_app
from tests.helpers import wait_for

BASE = "http://127.0.0.1:7800"


@agentdur.tool(effect="read_only")
def lookup(order_id: str) -> dict[str, Any]:
    """Look up an order."""
    return {"order_id": order_id, "note": "evil <script>alert(1)</script>\x00" + "x" * 20000}


@agentdur.tool(effect="side_effect", requires_approval=True, name="refund_order")
def refund_gated(order_id: str, amount: int) -> dict[str, Any]:
    """Refund an order."""
    return {"refunded": amount, "order_id": order_id}


@agentdur.tool(effect="side_effect", key="refund:{order_id}", name="refund_uncertain")
def refund_uncertain(order_id: str) -> dict[str, Any]:
    """Refund, but the bank times out."""
    raise agentdur.UncertainEffect("the bank timed out")


class Script:
    """Answers by turn; keeps every request."""

    def __init__(self, *answers: Any) -> None:
        self.answers = answers
        self.requests: list[list[Message]] = []

    def __call__(self, messages: list[Message], info: ScriptInfo) -> Any:
        self.requests.append(messages)
        return self.answers[sum(isinstance(m, AssistantMessage) for m in messages)]

    def tool_results(self) -> list[tuple[str, bool]]:
        return [
            (m.content, m.is_error) for m in self.requests[-1] if isinstance(m, ToolResultMessage)
        ]


@pytest.fixture
def client(rt: agentdur.Runtime, database_url: str) -> Iterator[TestClient]:
    app = create_app(database_url, allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url=BASE) as c:
        yield c


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


SUPPORT = agentdur.Agent(
    "support",
    Scripted(
        Script(
            Scripted.tool_calls([("lookup", {"order_id": "A1"}), ("lookup", {"order_id": "A2"})]),
            "all <b>done</b>",
        )
    ),
    tools=[lookup],
    instructions="Be brief",
)
PAGER = agentdur.Agent("pager", Scripted(Script("ok")))


def _lookup_run(rt: agentdur.Runtime, run_id: str = "r1") -> None:
    rt.run_agent(SUPPORT, "where is A1?", run_id=run_id)


# -- pages --------------------------------------------------------------------------------


def test_runs_page_lists_runs_newest_first_with_filters(
    rt: agentdur.Runtime, client: TestClient
) -> None:
    _lookup_run(rt, "r1")
    time.sleep(0.01)
    _lookup_run(rt, "r2")
    page = client.get("/")
    assert page.status_code == 200
    ids = re.findall(r'data-run-id="([^"]+)"', page.text)
    assert ids == ["r2", "r1"]
    assert 'id="runs"' in page.text and "SUCCEEDED" in page.text
    assert re.findall(r'data-run-id="([^"]+)"', client.get("/?status=failed").text) == []
    assert "r1" in client.get("/?agent=support").text
    assert "data-run-id" not in client.get("/?workflow=agent:other").text
    assert "data-run-id" not in client.get("/?since=2000-01-01&until=2000-01-02").text
    assert client.get("/?status=bogus").status_code == 400
    data = client.get("/api/runs").json()
    assert [r["run_id"] for r in data["runs"]] == ["r2", "r1"]
    assert data["next"] is None


def test_runs_are_paged_by_keyset(rt: agentdur.Runtime, client: TestClient) -> None:
    for i in range(5):
        rt.run_agent(PAGER, "hi", run_id=f"p{i}")
    seen: list[str] = []
    url: str | None = "/api/runs?limit=2"
    while url:
        data = client.get(url).json()
        seen += [r["run_id"] for r in data["runs"]]
        url = f"/api/runs?limit=2&before={data['next']}" if data["next"] else None
    assert seen == ["p4", "p3", "p2", "p1", "p0"]
    page = client.get("/?limit=2")
    next_url = re.search(r'id="next-page" href="([^"]+)"', page.text)
    assert next_url is not None
    older = client.get(next_url.group(1).replace("&amp;", "&"))
    assert re.findall(r'data-run-id="([^"]+)"', older.text) == ["p2", "p1"]


def test_run_page_shows_header_timeline_and_steps(rt: agentdur.Runtime, client: TestClient) -> None:
    _lookup_run(rt)
    page = client.get("/runs/r1")
    assert page.status_code == 200
    assert 'id="run-status"' in page.text and "SUCCEEDED" in page.text
    assert 'id="timeline"' in page.text
    bars = re.findall(r'<g class="step-bar ([^"]+)" id="bar-(\d+)"', page.text)
    assert [b[1] for b in bars] == ["0", "1", "2", "3"]
    assert "kind-tool" in bars[1][0] and "status-succeeded" in bars[1][0]
    api = client.get("/api/runs/r1").json()
    assert (api["status"], api["steps_recorded"]) == ("SUCCEEDED", 4)
    steps = client.get("/api/runs/r1/steps").json()
    assert [(s["step_index"], s["kind"]) for s in steps] == [
        (0, "llm"),
        (1, "tool"),
        (2, "tool"),
        (3, "llm"),
    ]
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/api/runs/nope").json() == {"error": "no run 'nope' in this database"}


def test_step_pages_show_the_request_and_escape_adversarial_text(
    rt: agentdur.Runtime, client: TestClient
) -> None:
    _lookup_run(rt)
    llm = client.get("/runs/r1/steps/3")
    assert llm.status_code == 200
    assert "Be brief" in llm.text  # instructions
    assert "where is A1?" in llm.text  # the messages as the model saw them
    assert 'id="llm-tools"' in llm.text and "Look up an order." in llm.text
    assert "all &lt;b&gt;done&lt;/b&gt;" in llm.text and "<b>done</b>" not in llm.text
    tool = client.get("/runs/r1/steps/1")
    assert 'id="tool-effect">read_only' in tool.text
    assert "&lt;script&gt;" in tool.text and "<script>alert" not in tool.text
    assert "\x00" not in tool.text and "more characters)" in tool.text
    assert len(tool.text) < 60000
    assert client.get("/runs/r1/steps/99").status_code == 404


def test_fork_tree_is_linked_both_ways(rt: agentdur.Runtime, client: TestClient) -> None:
    _lookup_run(rt)
    rt.fork("r1", 3, new_run_id="r1-fork", response={"text": "edited"}).result(timeout=30)
    source = client.get("/runs/r1").text
    assert 'href="/runs/r1-fork"' in source
    fork = client.get("/runs/r1-fork").text
    assert 'id="forked-from" href="/runs/r1"' in fork
    assert re.search(r'class="step-bar [^"]*inherited[^"]*" id="bar-1"', fork)
    assert 'id="step-inherited" href="/runs/r1/steps/1"' in client.get("/runs/r1-fork/steps/1").text


def test_audit_page_and_csv_have_the_same_columns(rt: agentdur.Runtime, client: TestClient) -> None:
    _lookup_run(rt)
    page = client.get("/audit?tool=lookup")
    headers = re.findall(r"<th>([a-z_]+)</th>", page.text)
    rows = csv.reader(io.StringIO(client.get("/audit.csv?tool=lookup").text))
    header = next(rows)
    assert headers == header
    assert [r[header.index("step_index")] for r in rows] == ["1", "2"]
    assert page.text.count('class="tool-call"') == 2
    assert 'id="no-calls"' in client.get("/audit?effect=side_effect").text
    assert client.get("/audit?effect=bogus").status_code == 400


# -- the inbox ----------------------------------------------------------------------------


def _waiting_refund(rt: agentdur.Runtime, run_id: str) -> tuple[agentdur.RunHandle, Script]:
    script = Script(Scripted.tool_call("refund_order", {"order_id": "A1", "amount": 500}), "done")
    agent = agentdur.Agent("refunds", Scripted(script), tools=[refund_gated])
    handle = rt.start_agent(agent, "refund A1", run_id=run_id)
    wait_for(lambda: rt.get_run(run_id).status == "WAITING", timeout=30, what="WAITING")
    return handle, script


def _continue(rt: agentdur.Runtime, run_id: str) -> None:
    """What any executor does: recover the runnable run and finish it."""
    assert rt.get_run(run_id).status == "PENDING"
    rt.recover()
    wait_for(lambda: rt.get_run(run_id).status == "SUCCEEDED", timeout=30, what="SUCCEEDED")


def test_approve_from_the_inbox_continues_the_run(rt: agentdur.Runtime, client: TestClient) -> None:
    _, script = _waiting_refund(rt, "w1")
    inbox = client.get("/inbox")
    assert 'data-run-id="w1" data-step="1"' in inbox.text and "&#34;amount&#34;: 500" in inbox.text
    form = {"csrf": _csrf(inbox.text), "run_id": "w1", "step": "1", "decision": "approve"}
    done = client.post("/inbox/approve", data=form, follow_redirects=False)
    assert done.status_code == 303
    _continue(rt, "w1")
    assert script.tool_results() == [('{"order_id":"A1","refunded":500}', False)]
    assert 'id="inbox-empty"' in client.get("/inbox").text


def test_deny_with_a_note_reaches_the_model(rt: agentdur.Runtime, client: TestClient) -> None:
    _, script = _waiting_refund(rt, "w2")
    csrf = _csrf(client.get("/inbox").text)
    form = {"csrf": csrf, "run_id": "w2", "step": "1", "decision": "deny", "note": "too much"}
    assert client.post("/inbox/approve", data=form).status_code == 200  # the inbox again
    _continue(rt, "w2")
    assert script.tool_results() == [
        ("Error: ApprovalDenied: a human reviewer denied this call: too much", True)
    ]


def test_resolve_from_the_inbox(rt: agentdur.Runtime, client: TestClient) -> None:
    script = Script(Scripted.tool_call("refund_uncertain", {"order_id": "B1"}), "done")
    agent = agentdur.Agent("uncertain", Scripted(script), tools=[refund_uncertain])
    with pytest.raises(agentdur.NeedsAttentionError):
        rt.start_agent(agent, "refund B1", run_id="n1").result(timeout=30)
    inbox = client.get("/inbox").text
    assert 'class="inbox-item attention"' in inbox and "the bank timed out" in inbox
    form = {"csrf": _csrf(inbox), "run_id": "n1", "step": "1", "action": "result"}
    bad = client.post("/inbox/resolve", data={**form, "value": "not json"})
    assert bad.status_code == 400 and "must be JSON" in bad.text
    client.post("/inbox/resolve", data={**form, "value": '{"refund_id": "re_ui"}'})
    _continue(rt, "n1")
    assert rt.steps("n1")[1].output == {"refund_id": "re_ui"}
    assert script.tool_results() == [('{"refund_id":"re_ui"}', False)]


def test_actions_without_the_csrf_token_are_refused(
    rt: agentdur.Runtime, client: TestClient
) -> None:
    _waiting_refund(rt, "w3")
    form = {"run_id": "w3", "step": "1", "decision": "approve"}
    assert client.post("/inbox/approve", data=form).status_code == 403
    assert client.post("/inbox/approve", data={**form, "csrf": "forged"}).status_code == 403
    assert client.get("/inbox/approve").status_code == 405
    assert rt.get_run("w3").status == "WAITING"


# -- security -----------------------------------------------------------------------------


def test_token_is_required_off_loopback(rt: agentdur.Runtime, database_url: str) -> None:
    _lookup_run(rt)
    app = create_app(database_url, token="s3cret-token")
    with TestClient(app, base_url="http://10.0.0.5:7800") as c:
        assert c.get("/").status_code == 401
        assert c.get("/api/runs").status_code == 401
        assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = c.get("/api/runs", headers={"Authorization": "Bearer s3cret-token"})
        assert bearer.status_code == 200 and bearer.json()["runs"][0]["run_id"] == "r1"
        first = c.get("/runs/r1?token=s3cret-token", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/runs/r1"
        assert "httponly" in first.headers["set-cookie"].lower()
        assert c.get("/runs/r1").status_code == 200  # the cookie now
        assert "s3cret-token" not in c.get("/runs/r1").text


def test_loopback_binding_refuses_other_host_names(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "evil.example:7800"}).status_code == 400
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_static_assets_are_served(client: TestClient) -> None:
    assert "step-bar" in client.get("/static/ui.css").text
    assert "fetch(" in client.get("/static/ui.js").text


# -- the command --------------------------------------------------------------------------


def test_agentdur_ui_prints_a_token_only_off_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    import uvicorn

    from agentdur.cli import main

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    assert main(["ui", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:7800/" in out and "token" not in out
    assert served == [{"host": "127.0.0.1", "port": 7800, "log_level": "warning"}]
    assert main(["ui", "--host", "0.0.0.0", "--port", "7801", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert re.search(r"http://0\.0\.0\.0:7801/\?token=[\w-]{20,}", out)
    if "@" in database_url and ":" in database_url.split("@")[0].split("//")[1]:
        password = database_url.split("@")[0].rsplit(":", 1)[1]
        assert password not in out
