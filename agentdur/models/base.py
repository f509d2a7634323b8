"""The abstract `Model`, stream events, and helpers every adapter shares.

Contract with the runtime: `request()` returns a `ModelResponse` whose `raw` is the
provider's JSON body, and the adapter's pure `parse_raw(raw)` rebuilds that same
response, so a replayed step is identical to the live one by construction. Adapters
know nothing about durability and never retry: SDK retries are switched off and every
failure becomes a `ModelHTTPError` carrying `retryable` and `retry_after`, so the
runtime decides and each attempt is visible. `describe()` is what gets recorded and
hashed: only the parameters that change the model's answer (an allowlist per adapter),
never API keys, headers, timeouts or base URLs. `endpoint()` says which server answered
(scheme, host, path) without credentials.

Streams are read from the HTTP body by `iter_sse`, not through the SDKs' stream
wrappers, so that an adapter sees the terminal event (`[DONE]`, `message_stop`,
`response.completed`) and the exact JSON the server sent: a stream that ends without
its terminal event, carries a corrupt event or drops is a retryable `ModelHTTPError`,
never a partial answer.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import copy
import difflib
import importlib
import inspect
import json
import math
import re
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from agentdur.errors import ConfigurationError, ModelHTTPError, UsageError
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
_T = TypeVar("_T")


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

    def endpoint(self) -> str | None:
        """The server that answers (scheme, host, path; never credentials), or None."""
        return None

    def with_model(self: _M, model_name: str) -> _M:
        """A copy that asks for another model, sharing the client (fork `--model`)."""
        clone = copy.copy(self)
        clone.model_name = model_name
        clone.params = dict(self.params)
        return clone

    def with_settings(self: _M, model_name: str, params: dict[str, Any]) -> _M:
        """A copy with another model and exactly these recorded parameters (the
        `params` of `describe()`), sharing the client: how a fork's recorded model
        switch is rebuilt on the agent's own adapter."""
        clone = self.with_model(model_name)
        clone.params = dict(params)
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


DEFAULT_REQUEST_TIMEOUT = 120.0
"""Seconds one attempt may take (a streamed one: until its response headers)."""
DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds a stream may go without data before the attempt fails (and is retried)."""

TRANSPORT_OPTIONS = frozenset({"extra_headers", "extra_query"})
"""Per-request options sent with every call, never recorded or hashed."""
CLIENT_OPTIONS = ("base_url", "api_key", "default_headers", "default_query", "http_client")
"""Options the adapter builds its SDK client from when no `client=` is given."""
_OWN_OPTIONS = ("client", "rate_limit", "request_timeout", "idle_timeout", "timeout")


class SDKModel(Model):
    """Shared plumbing of the SDK adapters: options, lazy client, retries off, errors.

    Keyword arguments fall in four groups, checked when the adapter is built:
    `answer_params` change the model's answer and are recorded and hashed (`describe`);
    `request_params` are sent but never recorded (metadata, caching hints, service
    tier); transport options (`extra_headers`, `extra_query`, timeouts) and the client
    options (`base_url`, `api_key`, ...) are never recorded; anything else, and what the
    adapter itself sets from the conversation (`messages`, `tools`, ...), is a
    `UsageError` naming the closest valid option.
    """

    sdk_name: ClassVar[str]
    """Python package of the SDK, imported lazily so agentdur imports without it."""
    api_label: ClassVar[str]
    """Human name of the API for error messages, e.g. "OpenAI Chat"."""
    answer_params: ClassVar[frozenset[str]]
    """Request fields that change the answer: recorded in the step and hashed."""
    request_params: ClassVar[frozenset[str]] = frozenset()
    """Request fields that do not change the answer: sent, never recorded."""
    reserved_params: ClassVar[frozenset[str]]
    """Request fields the adapter fills from the conversation and the agent."""

    def __init__(
        self,
        model: str,
        client: Any = None,
        *,
        rate_limit: Any = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        base_url: str | None = None,
        api_key: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: Any = None,
        **params: Any,
    ) -> None:
        if "timeout" in params:  # the SDKs' name for it
            timeout = params.pop("timeout")
            if request_timeout not in (DEFAULT_REQUEST_TIMEOUT, timeout):
                raise UsageError(
                    f"{type(self).__name__}: pass request_timeout= or timeout=, not both"
                )
            request_timeout = timeout
        self.request_timeout = _seconds(type(self).__name__, "request_timeout", request_timeout)
        self.idle_timeout = _seconds(type(self).__name__, "idle_timeout", idle_timeout)
        options = {
            "base_url": base_url,
            "api_key": api_key,
            "default_headers": default_headers,
            "default_query": default_query,
            "http_client": http_client,
        }
        self._client_options = {k: v for k, v in options.items() if v is not None}
        if client is not None and self._client_options:
            raise UsageError(
                f"{type(self).__name__}: pass either client= or "
                f"{', '.join(f'{k}=' for k in self._client_options)}, not both (the client "
                "already has its base URL, key and HTTP client)"
            )
        self.model_name = model
        self._check_params(params)
        self.params = {k: v for k, v in params.items() if k in self.answer_params}
        self._request_options = {k: v for k, v in params.items() if k not in self.answer_params}
        self.rate_limit = rate_limit
        self._client = client
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        """The client of each event loop, SDK retries off. SDK clients bind their
        connection pool to the loop that first used it, and each Runtime runs its own
        loop: an agent used by a second Runtime gets a client of its own there."""

    def _check_params(self, params: Mapping[str, Any]) -> None:
        name = type(self).__name__
        valid = self.answer_params | self.request_params | TRANSPORT_OPTIONS
        for key in params:
            if key in valid:
                continue
            if key in self.reserved_params:
                raise UsageError(
                    f"{name}: {key!r} is set by the agent from its conversation and tools; "
                    "it cannot be a model option"
                )
            known = sorted(valid | set(_OWN_OPTIONS) | set(CLIENT_OPTIONS))
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(
                f"{name}: unknown option {key!r}; {hint}A field only another server knows "
                f"goes in extra_body={{{key!r}: ...}}. Options that change the answer: "
                f"{', '.join(sorted(self.answer_params))}"
            )

    @abstractmethod
    def _default_client(self, sdk: ModuleType) -> Any:
        """Build a client from the client options and the environment; a missing key is
        a `ConfigurationError`."""

    def _sdk(self) -> ModuleType:
        return import_sdk(self.sdk_name)

    def _client_for_call(self) -> Any:
        """The running loop's client with SDK retries off, built on first use there (so
        constructing needs no key). A `client=` given to the adapter is the user's and
        is used on every loop; built from the options, each loop gets its own."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            base = self._client if self._client is not None else self._default_client(self._sdk())
            client = self._clients[loop] = base.with_options(max_retries=0)
        return client

    def endpoint(self) -> str | None:
        built = next(iter(self._clients.values()), None)
        client = self._client if self._client is not None else built
        base = getattr(client, "base_url", None) or self._client_options.get("base_url")
        return public_url(str(base)) if base else None

    def _request_arguments(self, client: Any, *, stream: bool) -> dict[str, Any]:
        """Answer parameters, request options and the timeout of one call, unsplit."""
        arguments = {**self.params, **self._request_options}
        timeout = self._timeout(client, stream=stream)
        if timeout is not None:
            arguments["timeout"] = timeout
        return arguments

    def _timeout(self, client: Any, *, stream: bool) -> Any:
        """The SDK timeout of one call: `request_timeout` for each phase (the client's
        own when None); for a stream, reads (the gap between chunks) get `idle_timeout`."""
        if self.request_timeout is None and (not stream or self.idle_timeout is None):
            return None
        httpx2 = importlib.import_module("httpx2")
        base = self.request_timeout if self.request_timeout is not None else client.timeout
        timeout = base if isinstance(base, httpx2.Timeout) else httpx2.Timeout(base)
        if stream and self.idle_timeout is not None:
            timeout = httpx2.Timeout(
                connect=timeout.connect,
                read=self.idle_timeout,
                write=timeout.write,
                pool=timeout.pool,
            )
        return timeout

    async def _within_request_timeout(self, call: Awaitable[_T]) -> _T:
        """Await one whole non-streamed attempt, bounded by `request_timeout`."""
        if self.request_timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, self.request_timeout)
        except asyncio.TimeoutError:
            raise ModelHTTPError(
                f"{self.api_label} request timed out: no answer within {self.request_timeout:g} s "
                "(request_timeout=)",
                status_code=None,
                retryable=True,
            ) from None

    def _map_error(self, exc: BaseException) -> Exception | None:
        """The agentdur exception for an SDK or transport exception, or None."""
        mapped = map_sdk_error(exc, self._sdk(), self.api_label)
        if mapped is not None and "timed out" in str(mapped):
            limits = [f"request_timeout={self.request_timeout:g} s"] if self.request_timeout else []
            if self.idle_timeout:
                limits.append(f"idle_timeout={self.idle_timeout:g} s between stream chunks")
            if limits:
                mapped.args = (f"{mapped} ({', '.join(limits)})",)
        return mapped

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Re-raise SDK and transport exceptions as `ModelHTTPError`, chained."""
        try:
            yield
        except Exception as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def _post(self, resource: Any, arguments: dict[str, Any]) -> bytes:
        """POST a non-streamed request through `resource.with_raw_response.create`; the
        body as bytes, the whole attempt bounded by `request_timeout`."""

        async def call() -> bytes:
            raw_response = await resource.with_raw_response.create(**arguments)
            content: bytes = await raw_response.http_response.aread()
            return content

        return await self._within_request_timeout(call())

    async def _sse(self, resource: Any, arguments: dict[str, Any]) -> AsyncGenerator[SSEvent, None]:
        """POST a streaming request through `resource.with_streaming_response.create` and
        yield its server-sent events; an error status raises before the first event."""
        async with resource.with_streaming_response.create(**arguments) as response:
            try:
                async for event in iter_sse(response.http_response.aiter_bytes()):
                    yield event
            except UnicodeDecodeError as exc:
                raise ModelHTTPError(
                    f"{self.api_label} sent a corrupt stream (not UTF-8: {exc.reason})",
                    status_code=None,
                    retryable=True,
                ) from exc

    def _event_json(self, event: SSEvent) -> dict[str, Any]:
        """The JSON object of one event; anything else is a retryable corrupt stream."""
        try:
            data = json.loads(event.data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            excerpt = event.data if len(event.data) <= 200 else event.data[:200] + "..."
            raise ModelHTTPError(
                f"{self.api_label} sent a corrupt stream event (not a JSON object): {excerpt!r}",
                status_code=None,
                retryable=True,
            )
        return data

    def _truncated(self, missing: str) -> ModelHTTPError:
        """The error for a stream that ended before its terminal event."""
        return ModelHTTPError(
            f"{self.api_label} stream ended early, without {missing}: the answer is "
            "incomplete and was not used",
            status_code=None,
            retryable=True,
        )


def _seconds(owner: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{owner}: {name} must be a positive number of seconds or None")
    return float(value)


def public_url(url: str) -> str:
    """Scheme, host, port and path of a URL: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class SSEvent:
    """One server-sent event: its `event:` name (if any) and its joined `data:` lines."""

    event: str | None
    data: str


_LINE_END = re.compile(r"\r\n|\r|\n")


async def iter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEvent]:
    """Server-sent events from a UTF-8 byte stream (the WHATWG rules: lines end with CR,
    LF or CRLF, `:` starts a comment, an event ends at a blank line). An event cut off by
    the end of the stream is dropped, as the standard says; bytes that are not UTF-8
    raise `UnicodeDecodeError`."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    name: str | None = None
    data: list[str] = []
    final = False
    iterator = chunks.__aiter__()
    while not final:
        try:
            pending += decoder.decode(await iterator.__anext__())
        except StopAsyncIteration:
            pending += decoder.decode(b"", final=True)
            final = True
        while True:
            match = _LINE_END.search(pending)
            if match is None:
                break  # no whole line yet
            if match.group() == "\r" and match.end() == len(pending) and not final:
                break  # a CR whose LF may come with the next chunk
            line, pending = pending[: match.start()], pending[match.end() :]
            if not line:
                text = "\n".join(data)
                if text:  # an event with no data is not dispatched
                    yield SSEvent(name, text)
                name, data = None, []
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value or None


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
    return map_transport_error(exc, api)


def map_transport_error(exc: BaseException, api: str) -> ModelHTTPError | None:
    """An `httpx2` failure the SDK did not wrap (a stream body that drops or stalls)."""
    try:
        httpx2 = importlib.import_module("httpx2")
    except ImportError:  # pragma: no cover - both SDKs depend on it
        return None
    if isinstance(exc, httpx2.TimeoutException):
        return ModelHTTPError(f"{api} request timed out", status_code=None, retryable=True)
    if isinstance(exc, httpx2.RequestError):  # dropped connection, protocol error, bad gzip
        return ModelHTTPError(
            f"{api} connection failed: {type(exc).__name__}: {exc}",
            status_code=None,
            retryable=True,
        )
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
