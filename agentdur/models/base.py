"""The abstract `Model`, stream events, and helpers every adapter shares.

Contract with the runtime: `request()` returns a `ModelResponse` whose `raw` is the
provider's JSON body, and the adapter's pure `parse_raw(raw)` rebuilds that same
response, so a replayed step is identical to the live one by construction. Adapters
know nothing about durability and never retry: SDK retries are switched off and every
failure becomes a `ModelHTTPError` carrying `retryable` and `retry_after`, so the
runtime decides and each attempt is visible. `describe()` is what gets recorded and
hashed; it never holds API keys, headers or base URLs.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from agentdur.errors import ConfigurationError, ModelHTTPError
from agentdur.models.types import Message, ModelResponse, ToolDefinition


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text, in arrival order."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    """The model began tool call number `index` (0-based, in the order it listed them)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A fragment of the JSON arguments of tool call number `index`."""

    index: int
    arguments_delta: str


@dataclass(frozen=True)
class StreamDone:
    """Always the last event: the assembled response, as `request()` would return it."""

    response: ModelResponse


StreamEvent = TextDelta | ToolCallStarted | ToolCallDelta | StreamDone

_M = TypeVar("_M", bound="Model")


class Model(ABC):
    """An adapter from neutral messages to one provider API.

    Subclasses implement `request` and `parse_raw`; `stream` defaults to one request
    replayed as events, and adapters with a native streaming API override it.
    """

    provider: ClassVar[str]
    model_name: str
    params: dict[str, Any]

    @abstractmethod
    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> ModelResponse:
        """Send one request and return the neutral response (raw body included)."""

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncIterator[StreamEvent]:
        """Yield text and tool-call deltas as they arrive, then a final `StreamDone`."""
        response = await self.request(messages, tools)
        for event in events_from_response(response):
            yield event

    @classmethod
    @abstractmethod
    def parse_raw(cls, raw: dict[str, Any]) -> ModelResponse:
        """Rebuild the neutral response from a recorded raw body; pure, no I/O."""

    def describe(self) -> dict[str, Any]:
        """What identifies this model in a recording: provider, model and parameters."""
        return {
            "provider": self.provider,
            "model": self.model_name,
            "params": copy.deepcopy(self.params),
        }

    def with_model(self: _M, model_name: str) -> _M:
        """A copy that asks for another model, sharing the client (fork `--model`)."""
        clone = copy.copy(self)
        clone.model_name = model_name
        clone.params = dict(self.params)
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r})"


def events_from_response(response: ModelResponse) -> Iterator[StreamEvent]:
    """The events a stream of `response` would have produced, for non-streaming models."""
    if response.text:
        for word in re.findall(r"\s*\S+\s*|\s+", response.text):
            yield TextDelta(word)
    for index, call in enumerate(response.tool_calls):
        yield ToolCallStarted(index, call.id, call.name)
        yield ToolCallDelta(index, call.raw_arguments)
    yield StreamDone(response)


class SDKModel(Model):
    """Shared plumbing of the SDK adapters: lazy client, retries off, error mapping."""

    sdk_name: ClassVar[str]
    """Python package of the SDK, imported lazily so agentdur imports without it."""
    api_label: ClassVar[str]
    """Human name of the API for error messages, e.g. "OpenAI Chat"."""

    def __init__(
        self, model: str, client: Any = None, *, rate_limit: Any = None, **params: Any
    ) -> None:
        self.model_name = model
        self.params = params
        self.rate_limit = rate_limit
        self._client = client
        self._no_retry_client: Any = None

    @abstractmethod
    def _default_client(self, sdk: ModuleType) -> Any:
        """Build a client from the environment; a missing key is a `ConfigurationError`."""

    def _sdk(self) -> ModuleType:
        return import_sdk(self.sdk_name)

    def _client_for_call(self) -> Any:
        """The client with SDK retries off; built on first use so constructing needs no key."""
        if self._no_retry_client is None:
            sdk = self._sdk()
            client = self._client
            if client is None:
                client = self._default_client(sdk)
                self._client = client
            self._no_retry_client = client.with_options(max_retries=0)
        return self._no_retry_client

    def _map_error(self, exc: BaseException) -> Exception | None:
        """The agentdur exception for an SDK exception, or None to let it propagate."""
        return map_sdk_error(exc, self._sdk(), self.api_label)

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Re-raise SDK exceptions as `ModelHTTPError`, chained to the original."""
        try:
            yield
        except Exception as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc


def import_sdk(name: str) -> ModuleType:
    """Import a provider SDK, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {name!r} package is needed for this model: pip install 'agentdur[{name}]'"
        ) from exc


def split_params(
    method: Callable[..., Any], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split user parameters into SDK keyword arguments and `extra_body` fields.

    SDK methods reject unknown keywords (Anthropic's `stream()` has no `temperature`,
    OpenAI-compatible servers take vendor fields), so anything the method does not name
    goes into the JSON body unchanged.
    """
    accepted = inspect.signature(method).parameters
    known: dict[str, Any] = {}
    extra: dict[str, Any] = dict(params.get("extra_body") or {})
    for key, value in params.items():
        if key == "extra_body":
            continue
        if key in accepted:
            known[key] = value
        else:
            extra[key] = value
    return known, extra


_RETRYABLE_STATUS = frozenset({408, 409, 429})
# An error event inside a 200 stream carries only a type; these are the statuses the
# providers document for each type (Anthropic names, plus OpenAI's stream error types).
_STATUS_OF_ERROR_TYPE = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "request_too_large": 413,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
}


def is_retryable_status(status: int) -> bool:
    """Rate limits, timeouts, conflicts and server errors may succeed on a later try."""
    return status in _RETRYABLE_STATUS or status >= 500


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    text = headers.get("retry-after")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return value if math.isfinite(value) and value >= 0 else None


def status_error(
    api: str,
    status: int | None,
    body: Any,
    headers: Mapping[str, str] | None = None,
    fallback_message: str = "",
) -> ModelHTTPError:
    """The `ModelHTTPError` for an error status, or for an error event inside a stream.

    An error event arrives with the stream's 200 status (or none): its status is then
    taken from the error type, and stays None when the type is unknown.
    """
    error = _error_object(body)
    error_type = next(
        (v for v in (error.get("type"), error.get("code")) if isinstance(v, str) and v != "error"),
        None,
    )
    if (status is None or status < 400) and error_type is not None:
        status = _STATUS_OF_ERROR_TYPE.get(error_type)
    elif status is not None and status < 400:
        status = None
    message = _provider_message(body) or fallback_message or "no error message"
    kind = f" ({error_type})" if error_type else ""
    where = f"returned HTTP {status}" if status is not None else "sent an error"
    return ModelHTTPError(
        f"{api} {where}{kind}: {message}",
        status_code=status,
        retryable=status is not None and is_retryable_status(status),
        retry_after=parse_retry_after(headers),
        body=body,
    )


def map_sdk_error(exc: BaseException, sdk: ModuleType, api: str) -> ModelHTTPError | None:
    """Translate an openai/anthropic SDK exception (same class names in both), else None."""
    if isinstance(exc, sdk.APITimeoutError):
        return ModelHTTPError(f"{api} request timed out", status_code=None, retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        return ModelHTTPError(f"{api} connection failed{detail}", status_code=None, retryable=True)
    if isinstance(exc, sdk.APIStatusError):
        try:
            body: Any = json.loads(exc.response.content)
        except Exception:  # body not read (error event mid-stream) or not JSON
            body = exc.body
        return status_error(api, exc.status_code, body, exc.response.headers, str(exc.message))
    if isinstance(exc, sdk.APIError):  # an error event inside an OpenAI stream
        return status_error(api, None, exc.body, None, str(exc.message))
    return None


def _error_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    error = body.get("error")
    return error if isinstance(error, dict) else body


def _provider_message(body: Any) -> str | None:
    if isinstance(body, str):
        return body or None
    message = _error_object(body).get("message")
    if isinstance(message, str):
        return message
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


def json_body(content: bytes) -> dict[str, Any]:
    """The response body as a JSON object; anything else is kept as text, never raised."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    return {"unparsed_body": content.decode("utf-8", errors="replace")}


def as_int(value: Any) -> int:
    """A token count from a raw body; missing or odd values count as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
