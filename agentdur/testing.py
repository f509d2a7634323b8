"""Helpers for testing agents offline: the respx bridge and the `Scripted` model.

`openai` >= 3 and `anthropic` >= 1 send HTTP through `httpx2`, while `respx` patches
`httpx` 0.x, so a plain `respx.mock` intercepts nothing and the SDK reports a connection
error. `RespxTransport` closes the gap: give the SDK an `httpx2.AsyncClient` whose
transport hands each request to a respx router.

```python
router = respx.Router(assert_all_mocked=True)
router.post("https://api.openai.com/v1/chat/completions").respond(json=body)
model = OpenAIChat("gpt-4.1-mini", client=openai_client(router))
```

This module imports respx, httpx and httpx2; agentdur itself never imports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import httpx2

from agentdur.models.scripted import Scripted, ScriptInfo

if TYPE_CHECKING:
    import respx
    from anthropic import AsyncAnthropic
    from openai import AsyncOpenAI

__all__ = [
    "RespxTransport",
    "ScriptInfo",
    "Scripted",
    "anthropic_client",
    "mock_http_client",
    "openai_client",
]


class RespxTransport(httpx2.AsyncBaseTransport):
    """An `httpx2` transport that answers every request from a `respx.Router`.

    Sync and async route side effects both work (`router.async_handler`). Response
    bodies are passed through chunk by chunk, so an SSE route built from an async
    iterator reaches the SDK's stream API before it ends. An `httpx` exception raised
    by a side effect (`httpx.ReadTimeout`, `httpx.ConnectError`, ...) is re-raised as
    its `httpx2` twin so the SDK classifies it as it would on the wire. A request no
    route matches raises respx's `AllMockedAssertionError`, which the SDKs let through.

    The request's read timeout (the SDK's `timeout`, e.g. a model's `idle_timeout` for
    a stream) is honoured as on the wire: a route or a body that gives nothing for that
    long raises `httpx2.ReadTimeout`. The mirrored `httpx` request carries the timeout
    in `request.extensions["timeout"]`, for tests that check what was asked.
    """

    def __init__(self, router: respx.Router) -> None:
        self.router = router

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        content = await request.aread()
        timeout = request.extensions.get("timeout")
        mirrored = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=content,
            extensions={"timeout": dict(timeout)} if timeout else None,
        )
        read = _read_timeout(request)
        try:
            with anyio.fail_after(read):
                response = await self.router.async_handler(mirrored)
        except httpx.HTTPError as exc:
            raise _twin(exc, request) from exc
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no response within {read} s", request=request) from None
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=_BridgedStream(response, request),
            request=request,
        )


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    read = timeout.get("read") if isinstance(timeout, dict) else None
    return float(read) if isinstance(read, (int, float)) else None


class _BridgedStream(httpx2.AsyncByteStream):
    """The raw bytes of an `httpx` response, chunk by chunk, errors translated."""

    def __init__(self, response: httpx.Response, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream: Any = self._response.stream
        read = _read_timeout(self._request)
        try:
            if isinstance(stream, httpx.AsyncByteStream):
                chunks = stream.__aiter__()
                while True:
                    with anyio.fail_after(read):
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                    yield chunk
            else:
                for chunk in stream:
                    yield chunk
        except httpx.HTTPError as exc:
            raise _twin(exc, self._request) from exc
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no data for {read} s", request=self._request) from None

    async def aclose(self) -> None:
        await self._response.aclose()


def _twin(exc: httpx.HTTPError, request: httpx2.Request) -> Exception:
    """The `httpx2` exception with the same class name, or the original if none."""
    twin = getattr(httpx2, type(exc).__name__, None)
    if isinstance(twin, type) and issubclass(twin, httpx2.RequestError):
        return twin(str(exc), request=request)
    return exc


def mock_http_client(router: respx.Router) -> httpx2.AsyncClient:
    """An `httpx2.AsyncClient` served by `router`, for any SDK's `http_client=`."""
    return httpx2.AsyncClient(transport=RespxTransport(router))


def openai_client(router: respx.Router, **kwargs: Any) -> AsyncOpenAI:
    """An `openai.AsyncOpenAI` served by `router`, with a fake key and no retries."""
    import openai

    options: dict[str, Any] = {"api_key": "test-key", "max_retries": 0}
    options.update(kwargs)
    options.setdefault("http_client", mock_http_client(router))
    return openai.AsyncOpenAI(**options)


def anthropic_client(router: respx.Router, **kwargs: Any) -> AsyncAnthropic:
    """An `anthropic.AsyncAnthropic` served by `router`, with a fake key and no retries."""
    import anthropic

    options: dict[str, Any] = {"api_key": "test-key", "max_retries": 0}
    options.update(kwargs)
    options.setdefault("http_client", mock_http_client(router))
    return anthropic.AsyncAnthropic(**options)
