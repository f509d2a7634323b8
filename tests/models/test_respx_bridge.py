"""agentdur.testing: respx routes serving httpx2-based SDK clients."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import anyio
import httpx
import httpx2
import pytest
import respx
from respx.models import AllMockedAssertionError

from agentdur.models import OpenAIChat, StreamDone, TextDelta, UserMessage
from agentdur.testing import anthropic_client, mock_http_client, openai_client

pytestmark = pytest.mark.anyio

URL = "https://api.openai.com/v1/chat/completions"


def chunk(content: str, finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


async def test_sse_reaches_the_sdk_before_the_body_ends(router: respx.Router) -> None:
    release = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield chunk("Hello")
        await release.wait()  # the rest only comes once the caller saw "Hello"
        yield chunk(" world", finish="stop")
        yield b"data: [DONE]\n\n"

    router.post(URL).mock(
        return_value=httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body()
        )
    )
    model = OpenAIChat("gpt-4o-mini", client=openai_client(router))
    seen: list[object] = []
    with anyio.fail_after(5):
        async for event in model.stream([UserMessage(content="hi")], []):
            seen.append(event)
            if event == TextDelta("Hello"):
                release.set()
    assert seen[:2] == [TextDelta("Hello"), TextDelta(" world")]
    assert isinstance(seen[-1], StreamDone)
    assert seen[-1].response.text == "Hello world"


async def test_unmatched_request_fails_loudly() -> None:
    router = respx.Router(assert_all_mocked=True)
    router.post("https://api.openai.com/v1/embeddings").respond(200, json={})
    model = OpenAIChat("gpt-4o-mini", client=openai_client(router))
    with pytest.raises(AllMockedAssertionError, match="not mocked"):
        await model.request([UserMessage(content="hi")], [])


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ConnectTimeout, httpx2.ConnectTimeout),
        (httpx.ReadTimeout, httpx2.ReadTimeout),
        (httpx.ConnectError, httpx2.ConnectError),
        (httpx.RemoteProtocolError, httpx2.RemoteProtocolError),
    ],
)
async def test_side_effect_exceptions_become_httpx2_twins(
    router: respx.Router,
    raised: type[Exception],
    expected: type[Exception],
) -> None:
    router.get("https://example.test/").mock(side_effect=raised)
    async with mock_http_client(router) as client:
        with pytest.raises(expected) as caught:
            await client.get("https://example.test/")
    assert isinstance(caught.value.__cause__, raised)


async def test_errors_while_streaming_a_body_are_translated(router: respx.Router) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("connection reset")

    router.get("https://example.test/").mock(return_value=httpx.Response(200, content=body()))
    async with mock_http_client(router) as client:
        with pytest.raises(httpx2.ReadError, match="connection reset"):
            await client.get("https://example.test/")


async def test_async_side_effect_sees_the_request(router: respx.Router) -> None:
    async def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            201,
            json={
                "method": request.method,
                "q": request.url.params["q"],
                "body": json.loads(request.content),
                "type": request.headers["content-type"],
            },
            headers={"x-request-id": "req_1"},
        )

    router.post("https://example.test/echo").mock(side_effect=echo)
    async with mock_http_client(router) as client:
        response = await client.post("https://example.test/echo?q=1", json={"a": [1, 2]})
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req_1"
    assert response.json() == {
        "method": "POST",
        "q": "1",
        "body": {"a": [1, 2]},
        "type": "application/json",
    }


async def test_encoded_bodies_pass_through_raw(router: respx.Router) -> None:
    router.get("https://example.test/").respond(
        200, content=gzip.compress(b'{"ok": true}'), headers={"content-encoding": "gzip"}
    )
    async with mock_http_client(router) as client:
        response = await client.get("https://example.test/")
    assert response.json() == {"ok": True}


def test_sdk_client_helpers_use_a_fake_key_and_no_retries() -> None:
    router = respx.Router()
    openai = openai_client(router)
    anthropic = anthropic_client(router, base_url="https://proxy.test")
    assert (openai.api_key, openai.max_retries) == ("test-key", 0)
    assert (anthropic.api_key, anthropic.max_retries) == ("test-key", 0)
    assert str(anthropic.base_url).startswith("https://proxy.test")


async def test_the_read_timeout_is_honoured_as_on_the_wire() -> None:
    router = respx.Router(assert_all_mocked=True)  # a timed-out route does not count as called

    async def stalled() -> AsyncIterator[bytes]:
        yield b"first"
        await anyio.sleep_forever()
        yield b"never"

    async def silent(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] == 0.05  # mirrored for tests to see
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    router.get("https://example.test/body").mock(
        return_value=httpx.Response(200, content=stalled())
    )
    router.get("https://example.test/headers").mock(side_effect=silent)
    async with mock_http_client(router) as client:
        timeout = httpx2.Timeout(5, read=0.05)
        with pytest.raises(httpx2.ReadTimeout, match=r"no data for 0\.05 s"):
            await client.get("https://example.test/body", timeout=timeout)
        with pytest.raises(httpx2.ReadTimeout, match=r"no response within 0\.05 s"):
            await client.get("https://example.test/headers", timeout=timeout)
