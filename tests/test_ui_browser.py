"""The web UI in a real browser: headless Chromium (Debian's) driven by Playwright.

The UI is served by Uvicorn in a thread on 127.0.0.1 (a free port), over the test's
database on each backend; the Runtime in this process stands for the executor that
continues the runs the inbox decides. Every wait is bounded (10 s), so a broken page
fails fast. Without CI the tests skip when Chromium or Playwright is missing; with
CI=true they fail instead (`.ci/run` installs both).
"""

from __future__ import annotations

import csv
import io
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentdur
from agentdur.ui.app import LOOPBACK_HOSTS, create_app
from tests.helpers import wait_for
from tests.test_ui import SUPPORT, _waiting_refund

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: the browser tests must run)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium, one per module (launched with a new empty profile)."""
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed: pip install -e '.[dev]'")
    expect.set_options(timeout=TIMEOUT_MS)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        # A persistent context is how Playwright takes a --user-data-dir of our own.
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            accept_downloads=True,
            timeout=TIMEOUT_MS,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new tab; fails the test if the page logged an error or broke a CSP rule."""
    tab = browser.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.set_default_navigation_timeout(TIMEOUT_MS)
    errors: list[str] = []
    # Any failed request counts, the browser's own (a page with no icon of its own makes
    # it ask for /favicon.ico, a 404).
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield tab
    tab.close()
    browser.clear_cookies()
    assert errors == [], f"the browser logged errors: {errors}"


@pytest.fixture
def server(rt: agentdur.Runtime, database_url: str) -> Iterator[str]:
    """`agentdur ui`'s app served by Uvicorn in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(database_url, allowed_hosts=LOOPBACK_HOSTS)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: uv.started or not thread.is_alive(), timeout=10, what="uvicorn")
        assert uv.started, "the UI server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "the UI server did not stop"


def _expect(locator: Any) -> Any:
    from playwright.sync_api import expect

    return expect(locator)


# -- pages --------------------------------------------------------------------------------


def test_open_a_run_and_see_its_timeline(rt: agentdur.Runtime, server: str, page: Any) -> None:
    rt.run_agent(SUPPORT, "where is A1?", run_id="r1")
    steps = rt.steps("r1")
    page.goto(server + "/")
    page.locator('tr.run-row[data-run-id="r1"] a').first.click()
    page.wait_for_url(server + "/runs/r1")
    _expect(page.locator("#run-status")).to_have_text("SUCCEEDED")
    bars = page.locator("svg#timeline g.step-bar")
    _expect(bars).to_have_count(len(steps))
    assert bars.evaluate_all("gs => gs.map(g => g.dataset.index)") == [
        str(s.step_index) for s in steps
    ]
    for step in steps:  # each bar is drawn: a visible rect, coloured by its status
        rect = page.locator(f"#bar-{step.step_index} rect.bar")
        _expect(rect).to_be_visible()
        box = rect.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        classes = page.locator(f"#bar-{step.step_index}").get_attribute("class") or ""
        assert f"kind-{step.kind}" in classes and "status-succeeded" in classes
    # The last tick's label ends inside the drawing.
    svg = page.locator("svg#timeline").bounding_box()
    label = page.locator("svg#timeline text.tick-label").last.bounding_box()
    assert svg is not None and label is not None
    assert label["x"] + label["width"] <= svg["x"] + svg["width"]
    # A bar's whole row links to its step, the gap between its label and its bar too.
    page.locator("#bar-3 rect.bar").scroll_into_view_if_needed()
    svg = page.locator("svg#timeline").bounding_box()
    bar = page.locator("#bar-3 rect.bar").bounding_box()
    assert svg is not None and bar is not None
    page.mouse.click(svg["x"] + 217, bar["y"] + bar["height"] / 2)
    page.wait_for_url(server + "/runs/r1/steps/3")
    page.go_back()
    # A bar links to its step, as the model saw it.
    page.locator("#bar-3 rect.bar").click()
    page.wait_for_url(server + "/runs/r1/steps/3")
    _expect(page.locator("main")).to_contain_text("Be brief")
    _expect(page.locator("main")).to_contain_text("where is A1?")


def test_the_runs_filter_wraps_whole_fields_in_a_narrow_window(
    rt: agentdur.Runtime, server: str, page: Any
) -> None:
    page.set_viewport_size({"width": 900, "height": 800})
    page.goto(server + "/")
    labels = page.locator("#runs-filter label")
    assert labels.count() >= 3
    # Each field (its name and its control) stays on one line when the form wraps.
    assert labels.evaluate_all("ls => ls.map(l => l.getClientRects().length)") == [1] * (
        labels.count()
    )


def test_download_the_audit_csv(rt: agentdur.Runtime, server: str, page: Any) -> None:
    rt.run_agent(SUPPORT, "where is A1?", run_id="r1")
    page.goto(server + "/audit")
    page.fill("#filter-tool", "lookup")
    page.locator("#audit-filter button[type=submit]").click()
    page.wait_for_url("**/audit?**tool=lookup**")
    _expect(page.locator("#tool-calls tr.tool-call")).to_have_count(2)
    columns = page.locator("#tool-calls thead th").all_inner_texts()
    cells = page.locator("#tool-calls tr.tool-call").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.innerText))"
    )
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.locator("#audit-csv").click()
    download = info.value
    assert download.suggested_filename == "tool_calls.csv"
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows[0] == columns
    assert len(rows) == 3
    step_index = columns.index("step_index")
    assert [r[step_index] for r in rows[1:]] == [c[step_index] for c in cells] == ["1", "2"]


# -- the inbox ----------------------------------------------------------------------------


def _continue(rt: agentdur.Runtime, run_id: str) -> None:
    """What any executor does: recover the runnable run and finish it."""
    wait_for(lambda: rt.get_run(run_id).status == "PENDING", timeout=10, what="PENDING")
    rt.recover()
    wait_for(lambda: rt.get_run(run_id).status == "SUCCEEDED", timeout=10, what="SUCCEEDED")


def test_approve_a_refund_from_the_inbox(rt: agentdur.Runtime, server: str, page: Any) -> None:
    _, script = _waiting_refund(rt, "w1")
    page.goto(server + "/")
    page.locator("#nav-inbox").click()
    item = page.locator('section.inbox-item[data-run-id="w1"]')
    _expect(item).to_contain_text("refund_order")
    _expect(item.locator("pre.arguments")).to_contain_text('"amount": 500')
    item.locator("button.approve").click()
    _expect(page.locator("#done")).to_contain_text("step 1 of run w1 approved")
    _expect(page.locator("#inbox-empty")).to_be_visible()
    # The run page, open while the run is runnable, follows it (live refresh) to the end.
    page.goto(server + "/runs/w1")
    _expect(page.locator("#run-status")).to_have_text("PENDING")
    _continue(rt, "w1")
    _expect(page.locator("#run-status")).to_have_text("SUCCEEDED")
    _expect(page.locator("svg#timeline g.step-bar")).to_have_count(len(rt.steps("w1")))
    assert script.tool_results() == [('{"order_id":"A1","refunded":500}', False)]


def test_deny_a_refund_with_a_note(rt: agentdur.Runtime, server: str, page: Any) -> None:
    _, script = _waiting_refund(rt, "w2")
    page.goto(server + "/inbox")
    item = page.locator('section.inbox-item[data-run-id="w2"]')
    item.locator("input.note").fill("over the limit, ask a manager")
    item.locator("button.deny").click()
    _expect(page.locator("#done")).to_contain_text("step 1 of run w2 denied")
    _continue(rt, "w2")
    denied = "a human reviewer denied this call: over the limit, ask a manager"
    assert script.tool_results() == [(f"Error: ApprovalDenied: {denied}", True)]
    page.goto(server + "/runs/w2/steps/2")  # the model's next request, in the UI too
    _expect(page.locator("main")).to_contain_text("over the limit, ask a manager")
