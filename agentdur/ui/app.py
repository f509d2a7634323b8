"""The web UI as a Starlette application: pages, the JSON API, the operator's actions.

`create_app(database_url, token=None, allowed_hosts=None)` builds it; `agentdur ui`
(cli_ui.py) serves it with Uvicorn. Every store read runs in a worker thread
(`asyncio.to_thread`), so a slow query never blocks the event loop. The UI needs no
application code: Approve, Deny and Resolve record the decision in the store as
`agentdur approve` / `agentdur resolve` do, and whatever executor runs the agent
continues the run.

Security: with `token`, every request must carry it (`Authorization: Bearer TOKEN`,
the cookie set by one visit with `?token=TOKEN`, or that query itself), else 401. With
`allowed_hosts` (the loopback names when bound to 127.0.0.1), requests naming another
Host are refused (DNS rebinding). Every action is a POST carrying the CSRF token
rendered into the page's forms. Responses forbid framing and inline scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentdur.audit import Audit, parse_since
from agentdur.cli_format import TOOL_CALL_COLUMNS, tool_calls_csv
from agentdur.cli_operations import _RecordOnly
from agentdur.errors import AgentdurError, RunNotFoundError, UsageError
from agentdur.runtime import Runtime
from agentdur.store import FINISHED, UNFINISHED, RunInfo
from agentdur.store.ui_queries import inbox_steps, runs_page
from agentdur.ui import views

HERE = Path(__file__).parent
PAGE_SIZE = 50
MAX_FORM_BYTES = 1_000_000
COOKIE = "agentdur_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
UNAUTHORIZED = (
    "unauthorized: open the URL with ?token=... that `agentdur ui` printed, "
    "or send Authorization: Bearer TOKEN"
)
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class _Guard(BaseHTTPMiddleware):
    """Host check, token check, security headers."""

    def __init__(self, app: Any, *, token: str | None, allowed_hosts: Sequence[str] | None):
        super().__init__(app)
        self.token = token
        self.allowed_hosts = allowed_hosts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        host = _host_name(request.headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return _plain(400, "this UI answers only to the host it is bound to")
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and request.method == "GET" and _same(given, self.token):
                rest = {k: v for k, v in request.query_params.items() if k != "token"}
                url = request.url.path + ("?" + urlencode(rest) if rest else "")
                response: Response = RedirectResponse(url, status_code=303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                return _secured(response)
            header = request.headers.get("authorization", "")
            bearer = header[7:] if header.lower().startswith("bearer ") else None
            cookie = request.cookies.get(COOKIE)
            if not any(v is not None and _same(v, self.token) for v in (bearer, cookie)):
                return _secured(_plain(401, UNAUTHORIZED))
        return _secured(await call_next(request))


def _host_name(header: str) -> str:
    """The Host header without its port: `[::1]:7800` -> `[::1]`, `a:1` -> `a`."""
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.partition(":")[0]


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _secured(response: Response) -> Response:
    for key, value in HEADERS.items():
        response.headers[key] = value
    return response


def _plain(status: int, text: str) -> Response:
    return Response(text, status_code=status, media_type="text/plain; charset=utf-8")


class UI:
    """The pages and their reads, over one record-only Runtime."""

    def __init__(self, database_url: str) -> None:
        self.rt: Runtime = _RecordOnly(database_url)
        self.csrf = secrets.token_urlsafe(32)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.globals.update(show=views.show, csrf=self.csrf)

    async def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        text = self.env.get_template(name).render(**context)
        return HTMLResponse(text, status_code=status)

    # -- reads (in worker threads) -----------------------------------------------------

    def _runs(self, params: dict[str, str]) -> tuple[list[RunInfo], str | None]:
        store = self.rt._ensure_store()
        workflow = params.get("workflow") or None
        if params.get("agent"):
            workflow = f"agent:{params['agent']}"
        status = (params.get("status") or "").upper() or None
        if status is not None and status not in (*UNFINISHED, *FINISHED):
            raise UsageError(f"status must be one of {', '.join((*UNFINISHED, *FINISHED))}")
        now = datetime.now(timezone.utc)
        since = parse_since(params.get("since") or None, now)
        until = parse_since(params.get("until") or None, now)
        before = _cursor(params.get("before"))
        limit = min(max(int(params.get("limit") or PAGE_SIZE), 1), 500)
        runs = runs_page(
            store,
            status=status,
            workflow=workflow,
            since=since,
            until=until,
            before=before,
            limit=limit + 1,
        )
        more = len(runs) > limit
        runs = runs[:limit]
        if not more:
            return runs, None
        stamp = runs[-1].created_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return runs, f"{stamp}|{runs[-1].run_id}"

    def _run(self, run_id: str, tree: bool = True) -> tuple[RunInfo, list[Any], list[RunInfo]]:
        run = self.rt.get_run(run_id)
        steps = self.rt.store.steps(run_id)
        if not tree:
            return run, steps, []
        root = run
        while root.forked_from:  # the tree is shown from its root
            parent = self.rt.store.get_run(root.forked_from)
            if parent is None:
                break
            root = parent
        return run, steps, Audit(self.rt.store).run_tree(root.run_id)

    def _inbox(self) -> list[tuple[RunInfo, Any]]:
        store = self.rt._ensure_store()
        items = []
        runs: dict[str, RunInfo | None] = {}
        for step in inbox_steps(store):
            if step.run_id not in runs:
                runs[step.run_id] = store.get_run(step.run_id)
            run = runs[step.run_id]
            if run is not None:
                items.append((run, step))
        return items


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    if not text:
        return None
    created, _, run_id = text.partition("|")
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a page cursor: {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)), run_id


def create_app(
    database_url: str,
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The UI over the database at `database_url` (see the module docstring)."""
    ui = UI(database_url)

    def page(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except RunNotFoundError as exc:
                return _error(request, 404, f"no run {exc.run_id!r} in this database")
            except (UsageError, ValueError) as exc:
                return _error(request, 400, str(exc))
            except AgentdurError as exc:
                return _error(request, 500, str(exc))

        return wrapped

    def _error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return Response(
                views.to_json({"error": message}), status, media_type="application/json"
            )
        return ui.render("error.html", status=status, message=message)

    def api(data: Any) -> Response:
        return Response(views.to_json(data), media_type="application/json")

    async def runs_html(request: Request) -> Response:
        params = dict(request.query_params)
        runs, cursor = await ui.read(ui._runs, params)
        keep = {k: v for k, v in params.items() if k != "before" and v}
        next_url = "/?" + urlencode({**keep, "before": cursor}) if cursor else None
        return ui.render(
            "runs.html",
            runs=runs,
            params=params,
            statuses=(*UNFINISHED, *FINISHED),
            next_url=next_url,
            first_url="/?" + urlencode(keep),
            api_url="/api/runs?" + urlencode(keep),
            paged="before" in params,
        )

    async def runs_api(request: Request) -> Response:
        runs, cursor = await ui.read(ui._runs, dict(request.query_params))
        return api({"runs": [views.run_record(r) for r in runs], "next": cursor})

    async def run_html(request: Request) -> Response:
        run, steps, tree = await ui.read(ui._run, request.path_params["run_id"])
        now = datetime.now(timezone.utc)
        return ui.render(
            "run.html",
            run=run,
            steps=steps,
            tree=tree,
            tokens=views.tokens(steps),
            timeline=views.timeline(run, steps, now),
            finished=run.status in FINISHED,
        )

    async def run_api(request: Request) -> Response:
        run, steps, _ = await ui.read(ui._run, request.path_params["run_id"], tree=False)
        record = views.run_record(run)
        t = views.tokens(steps)
        record["steps_recorded"] = len(steps)
        record["tokens"] = {"input": t.input, "output": t.output, "llm_calls": t.calls}
        return api(record)

    async def steps_api(request: Request) -> Response:
        steps = await ui.read(ui.rt.steps, request.path_params["run_id"])
        return api([views.step_record(s) for s in steps])

    async def step_html(request: Request) -> Response:
        run, steps, _ = await ui.read(ui._run, request.path_params["run_id"], tree=False)
        index = request.path_params["index"]
        found = [s for s in steps if s.step_index == index]
        if not found:
            return _error(request, 404, f"run {run.run_id!r} has no step {index}")
        step = found[0]
        return ui.render(
            "step.html",
            run=run,
            step=step,
            llm=views.llm_view(step, steps) if step.kind == "llm" else None,
            tool=views.tool_view(step) if step.kind == "tool" else None,
            last=steps[-1].step_index,
        )

    def _calls(params: dict[str, str]) -> list[Any]:
        return Audit(ui.rt).tool_calls(
            params.get("tool") or None,
            run_id=params.get("run") or None,
            agent=params.get("agent") or None,
            since=params.get("since") or None,
            status=params.get("status") or None,
            effect=params.get("effect") or None,
        )

    async def audit_html(request: Request) -> Response:
        params = dict(request.query_params)
        calls = await ui.read(_calls, params)
        keep = {k: v for k, v in params.items() if v}
        return ui.render(
            "audit.html",
            columns=TOOL_CALL_COLUMNS,
            rows=views.audit_rows(calls),
            params=params,
            csv_url="/audit.csv?" + urlencode(keep),
        )

    async def audit_csv(request: Request) -> Response:
        calls = await ui.read(_calls, dict(request.query_params))
        return Response(
            tool_calls_csv(calls),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="tool_calls.csv"'},
        )

    async def inbox_html(request: Request) -> Response:
        items = await ui.read(ui._inbox)
        return ui.render("inbox.html", items=items, done=request.query_params.get("done"))

    async def checked_form(request: Request) -> dict[str, str]:
        # Plain urlencoded forms, parsed here: no multipart dependency, bounded size.
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise PermissionError
        data = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not _same(data.get("csrf", ""), ui.csrf):
            raise PermissionError
        return data

    async def act(request: Request, decide: Callable[[dict[str, str]], str]) -> Response:
        try:
            data = await checked_form(request)
        except PermissionError:
            return _plain(403, "missing or wrong CSRF token: reload the page and try again")
        try:
            message = await ui.read(decide, data)
        except RunNotFoundError as exc:
            return _error(request, 404, f"no run {exc.run_id!r} in this database")
        except UsageError as exc:
            return _error(request, 400, str(exc))
        return RedirectResponse("/inbox?" + urlencode({"done": message}), status_code=303)

    def _approve(data: dict[str, str]) -> str:
        run_id, index = data.get("run_id", ""), _index(data.get("step"))
        approved = data.get("decision") != "deny"
        note = data.get("note") or None
        ui.rt.approve(run_id, index, approved=approved, note=note)
        verb = "approved" if approved else "denied"
        return f"step {index} of run {run_id} {verb}; any executor continues the run"

    def _resolve(data: dict[str, str]) -> str:
        run_id, index = data.get("run_id", ""), _index(data.get("step"))
        action = data.get("action", "")
        value: Any = data.get("value") or None
        if action == "result":
            try:
                value = json.loads(data.get("value") or "null")
            except json.JSONDecodeError as exc:
                raise UsageError(f"the result must be JSON ({exc.msg}); quote a text") from None
        ui.rt.resolve(run_id, index, action, value)
        return f"step {index} of run {run_id} resolved ({action}); any executor continues the run"

    async def approve(request: Request) -> Response:
        return await act(request, _approve)

    async def resolve(request: Request) -> Response:
        return await act(request, _resolve)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(ui.rt.close)

    routes = [
        Route("/", page(runs_html)),
        Route("/runs/{run_id}", page(run_html)),
        Route("/runs/{run_id}/steps/{index:int}", page(step_html)),
        Route("/audit", page(audit_html)),
        Route("/audit.csv", page(audit_csv)),
        Route("/inbox", page(inbox_html)),
        Route("/inbox/approve", approve, methods=["POST"]),
        Route("/inbox/resolve", resolve, methods=["POST"]),
        Route("/api/runs", page(runs_api)),
        Route("/api/runs/{run_id}", page(run_api)),
        Route("/api/runs/{run_id}/steps", page(steps_api)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_Guard, token=token, allowed_hosts=allowed_hosts)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.ui = ui
    return app


def _index(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise UsageError(f"step must be a step index, not {text!r}") from None
