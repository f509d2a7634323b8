"""What each adapter records (answer parameters) and what it only sends (everything else).

Recorded and hashed: the parameters that change the model's answer, an allowlist per
adapter. Sent, never recorded: request options (user, metadata, ...), transport options
(`extra_headers`, `extra_query`, timeouts) and the client options (`base_url`,
`api_key`, ...), which build the SDK client. Anything else is a `UsageError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import respx

from agentdur.errors import UsageError
from agentdur.models import AnthropicMessages, Model, OpenAIChat, OpenAIResponses, UserMessage
from agentdur.models.base import SDKModel, public_url
from agentdur.testing import anthropic_client, mock_http_client, openai_client

if TYPE_CHECKING:
    from conftest import Recorded

pytestmark = pytest.mark.anyio

SECRET = "sk-live-SECRET-4711"


@dataclass(frozen=True)
class Case:
    cls: type[SDKModel]
    client: Callable[..., Any]
    path: str
    fixture: str
    answer: dict[str, Any]
    """Answer parameters, as given and as recorded."""
    request: dict[str, Any]
    """Request options: sent, not recorded."""
    auth_header: str


CASES = {
    "openai_chat": Case(
        OpenAIChat,
        openai_client,
        "/chat/completions",
        "openai_chat_text",
        {"temperature": 0.2, "seed": 7, "max_completion_tokens": 50, "reasoning_effort": "low"},
        {"user": "u-1", "metadata": {"team": "a"}, "store": False},
        "authorization",
    ),
    "openai_responses": Case(
        OpenAIResponses,
        openai_client,
        "/responses",
        "openai_responses_text",
        {"temperature": 0.2, "max_output_tokens": 50, "reasoning": {"effort": "low"}},
        {"user": "u-1", "metadata": {"team": "a"}, "store": False},
        "authorization",
    ),
    "anthropic_messages": Case(
        AnthropicMessages,
        anthropic_client,
        "/v1/messages",
        "anthropic_messages_text",
        {"temperature": 0.2, "top_k": 3, "stop_sequences": ["\n\nHuman:"]},
        {"metadata": {"user_id": "u-1"}, "service_tier": "auto"},
        "authorization",  # anthropic 2.x sends the key as a bearer token
    ),
}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def served(router: respx.Router, recorded: Recorded, case: Case, base: str) -> respx.Route:
    return router.post(base + case.path).mock(return_value=recorded.response(case.fixture))


def build(case: Case, **options: Any) -> SDKModel:
    return case.cls("m", **options)


async def test_only_answer_parameters_are_recorded(
    router: respx.Router, recorded: Recorded, case: Case
) -> None:
    route = served(router, recorded, case, "https://api.example.test/v1")
    transport = {
        "extra_headers": {"Authorization-Extra": SECRET},
        "extra_query": {"api-key": SECRET},
        "timeout": 33,
        "idle_timeout": 7,
    }
    model = build(
        case,
        base_url="https://api.example.test/v1",
        api_key=SECRET,
        default_headers={"X-Gateway-Key": SECRET},
        http_client=mock_http_client(router),
        **case.answer,
        **case.request,
        **transport,
    )

    await model.request([UserMessage(content="hi")], [])

    described = model.describe()
    expected = dict(case.answer)
    if isinstance(model, AnthropicMessages):
        expected["max_tokens"] = 4096
    assert described == {"provider": model.provider, "model": "m", "params": expected}
    assert SECRET not in json.dumps(described) and "example.test" not in json.dumps(described)
    request = route.calls.last.request
    sent = json.loads(request.content)
    for key, value in {**case.answer, **case.request}.items():
        assert sent[key] == value  # every option reaches the API, as a body field
    for key in ("base_url", "api_key", "timeout", "extra_headers", "idle_timeout"):
        assert key not in sent
    assert SECRET not in request.content.decode()
    assert SECRET in request.headers[case.auth_header]
    assert request.headers["authorization-extra"] == SECRET
    assert request.headers["x-gateway-key"] == SECRET
    assert request.url.params["api-key"] == SECRET
    assert request.extensions["timeout"] == {"connect": 33, "read": 33, "write": 33, "pool": 33}
    assert model.endpoint() == "https://api.example.test/v1"


async def test_base_url_and_api_key_build_the_client(
    router: respx.Router, recorded: Recorded, case: Case
) -> None:
    route = served(router, recorded, case, "http://127.0.0.1:8080/gateway")
    model = build(
        case,
        base_url="http://127.0.0.1:8080/gateway",
        api_key=SECRET,
        http_client=mock_http_client(router),
    )
    assert model.endpoint() == "http://127.0.0.1:8080/gateway"  # known before the client
    response = await model.request([UserMessage(content="hi")], [])
    assert response.text
    assert SECRET in route.calls.last.request.headers[case.auth_header]
    assert model.endpoint() == "http://127.0.0.1:8080/gateway"


async def test_stream_timeouts_reach_the_sdk(
    router: respx.Router, recorded: Recorded, case: Case
) -> None:
    route = served(router, recorded, case, "https://api.example.test")
    model = build(
        case, base_url="https://api.example.test", api_key="k", http_client=mock_http_client(router)
    )
    await model.request([UserMessage(content="hi")], [])
    assert route.calls.last.request.extensions["timeout"] == dict.fromkeys(
        ("connect", "read", "write", "pool"), 120
    )
    assert model._timeout(model._client_for_call(), stream=True).as_dict() == {
        "connect": 120,
        "read": 60,
        "write": 120,
        "pool": 120,
    }


def _client_on_a_loop(model: Any) -> Any:
    """The model's client as a call made on an event loop gets it (clients are per loop)."""

    async def take() -> Any:
        return model._client_for_call()

    return asyncio.run(take())


def test_request_timeout_none_keeps_the_clients_own(case: Case) -> None:
    router = respx.Router()
    model = case.cls("m", case.client(router, timeout=300), request_timeout=None)
    assert model._timeout(_client_on_a_loop(model), stream=False) is None
    assert model._timeout(_client_on_a_loop(model), stream=True).as_dict() == {
        "connect": 300,
        "read": 60,
        "write": 300,
        "pool": 300,
    }
    both_off = case.cls("m", case.client(router), request_timeout=None, idle_timeout=None)
    assert both_off._timeout(_client_on_a_loop(both_off), stream=True) is None


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"temprature": 0.2}, "unknown option 'temprature'; did you mean 'temperature'?"),
        ({"api_kye": "k"}, "did you mean 'api_key'?"),
        ({"extra_header": {}}, "did you mean 'extra_headers'?"),
        ({"vendor_field": 1}, "extra_body={'vendor_field': ...}"),
        ({"tools": []}, "'tools' is set by the agent"),
        ({"request_timeout": 0}, "request_timeout must be a positive number"),
        ({"idle_timeout": "60"}, "idle_timeout must be a positive number"),
        ({"timeout": 10, "request_timeout": 20}, "not both"),
    ],
)
def test_bad_options_are_usage_errors(case: Case, options: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError) as caught:
        build(case, **options)
    assert words in str(caught.value)


def test_client_and_client_options_together_are_a_usage_error(case: Case) -> None:
    with pytest.raises(UsageError, match="either client= or base_url=, api_key="):
        case.cls("m", case.client(respx.Router()), base_url="http://x", api_key="k")


def test_extra_body_is_recorded(case: Case) -> None:
    model = build(case, extra_body={"vendor_field": 1})
    assert model.describe()["params"]["extra_body"] == {"vendor_field": 1}


def test_with_model_keeps_the_options(case: Case) -> None:
    model = build(case, base_url="https://gw.test/v1", api_key="k", idle_timeout=5, **case.request)
    other = model.with_model("m2")
    assert other.describe()["params"] == model.describe()["params"]
    assert (other.endpoint(), other.idle_timeout, other.model_name) == (
        "https://gw.test/v1",
        5,
        "m2",
    )


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
        ("https://user:pa55@gw.example.com:8443/v1?key=abc#x", "https://gw.example.com:8443/v1"),
        ("http://[::1]:11434/v1", "http://[::1]:11434/v1"),
        ("https://api.anthropic.com", "https://api.anthropic.com"),
    ],
)
def test_public_url_drops_credentials(url: str, public: str) -> None:
    assert public_url(url) == public


def test_a_model_without_a_server_has_no_endpoint() -> None:
    from agentdur.testing import Scripted

    model: Model = Scripted([])
    assert model.endpoint() is None
