"""Fixtures for the adapter tests: recorded provider payloads served through respx.

The payloads are real API responses from tests/fixtures/providers (see its
SOURCES.md); AGENTDUR_FIXTURES points elsewhere if set. Every SDK call goes through
the real `openai` / `anthropic` client and `agentdur.testing.RespxTransport`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agentdur.models import ToolDefinition


def fixtures_dir() -> Path:
    """Where the recorded payloads live: $AGENTDUR_FIXTURES, else tests/fixtures/providers."""
    configured = os.environ.get("AGENTDUR_FIXTURES")
    if configured:
        return Path(configured)
    return Path(__file__).parents[1] / "fixtures" / "providers"


class Recorded:
    """Access to one directory of recorded payloads (NAME.json / .sse / .request.json)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def body(self, name: str) -> dict[str, Any]:
        """The recorded JSON response body (a fresh copy each time)."""
        data: dict[str, Any] = json.loads((self.root / f"{name}.json").read_text())
        return data

    def sse(self, name: str) -> bytes:
        return (self.root / f"{name}.sse").read_bytes()

    def request(self, name: str) -> dict[str, Any]:
        """The recorded request: {method, url, body}."""
        data: dict[str, Any] = json.loads((self.root / f"{name}.request.json").read_text())
        return data

    def meta(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / f"{name}.response_meta.json").read_text())
        return data

    def response(self, name: str, *, body: dict[str, Any] | None = None) -> httpx.Response:
        """The recorded status, headers and body; `body` replaces a JSON body."""
        meta = self.meta(name)
        headers = dict(meta["headers"])
        if body is not None:
            content = json.dumps(body).encode()
        elif (self.root / f"{name}.sse").exists():
            content = self.sse(name)
            headers.setdefault("content-type", "text/event-stream; charset=utf-8")
        else:
            content = (self.root / f"{name}.json").read_bytes()
            headers.setdefault("content-type", "application/json")
        return httpx.Response(meta["status_code"], headers=headers, content=content)

    def serve(
        self, router: respx.Router, name: str, *, body: dict[str, Any] | None = None
    ) -> respx.Route:
        """Route the recorded request's URL to the recorded response."""
        url = self.request(name)["url"]
        return router.post(url).mock(return_value=self.response(name, body=body))

    @staticmethod
    def sent(route: respx.Route, call: int = -1) -> dict[str, Any]:
        """The JSON body the SDK sent on one call of a route (the last by default)."""
        data: dict[str, Any] = json.loads(route.calls[call].request.content)
        return data

    def tools(self, name: str) -> list[ToolDefinition]:
        """The recorded request's tools as neutral definitions (any of the three shapes)."""
        out = []
        for tool in self.request(name)["body"].get("tools", []):
            spec = tool.get("function", tool)
            out.append(
                ToolDefinition(
                    name=spec["name"],
                    description=spec["description"],
                    parameters=copy.deepcopy(spec.get("parameters") or spec["input_schema"]),
                )
            )
        return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def recorded() -> Recorded:
    root = fixtures_dir()
    if not (root / "SOURCES.md").exists():
        pytest.fail(f"recorded provider fixtures not found in {root}; set AGENTDUR_FIXTURES")
    return Recorded(root)


@pytest.fixture
def router() -> Iterator[respx.Router]:
    """A respx router that rejects unmocked requests and wants every route called."""
    router = respx.Router(assert_all_mocked=True, assert_all_called=True)
    yield router
    router.assert_all_called()
