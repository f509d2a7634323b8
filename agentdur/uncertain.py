"""Which exceptions leave a side effect uncertain: the request may have reached the other
system although the call failed (a timeout or a disconnect after sending).

Classified by the class names and top-level modules of the exception's classes, so the
HTTP libraries (httpx, requests, aiohttp, urllib3) are never imported here. A failure to
*connect* (refused, DNS, connect timeout) is certain: nothing was sent. A wrapper raised
`from` a transport error (SDKs such as openai or stripe do that) is judged by its cause.
"""

from __future__ import annotations

_HTTPX = ("httpx", "httpx2", "httpcore")

NOT_SENT: dict[str, tuple[str, ...]] = {
    "ConnectTimeout": (*_HTTPX, "requests"),
    "ConnectError": _HTTPX,
    "PoolTimeout": _HTTPX,
    "UnsupportedProtocol": _HTTPX,
    "NewConnectionError": ("urllib3",),
    "NameResolutionError": ("urllib3",),
    "ConnectTimeoutError": ("urllib3",),
    "ClientConnectorError": ("aiohttp",),
    "ConnectionTimeoutError": ("aiohttp",),
    "ConnectionRefusedError": ("builtins",),
}
"""Exceptions raised before anything was sent: the call did not happen."""

UNCERTAIN: dict[str, tuple[str, ...]] = {
    "ReadTimeout": (*_HTTPX, "requests"),
    "WriteTimeout": _HTTPX,
    "ReadError": _HTTPX,
    "WriteError": _HTTPX,
    "RemoteProtocolError": _HTTPX,
    "ChunkedEncodingError": ("requests",),
    "ConnectionError": ("requests",),
    "ReadTimeoutError": ("urllib3",),
    "ProtocolError": ("urllib3",),
    "ServerDisconnectedError": ("aiohttp",),
    "ServerTimeoutError": ("aiohttp",),
    "SocketTimeoutError": ("aiohttp",),
    "ClientPayloadError": ("aiohttp",),
    "ClientOSError": ("aiohttp",),
    "TimeoutError": ("builtins",),
    "ConnectionResetError": ("builtins",),
    "ConnectionAbortedError": ("builtins",),
    "BrokenPipeError": ("builtins",),
}
"""Exceptions that may come after the request was sent: the effect may have happened."""

_GENERIC = {("requests", "ConnectionError"), ("aiohttp", "ClientOSError")}
"""Raised for failures before and after sending alike: the cause decides, if it can."""


def _matches(exc: BaseException, table: dict[str, tuple[str, ...]]) -> tuple[str, str] | None:
    for cls in type(exc).__mro__:
        modules = table.get(cls.__name__, ())
        top = cls.__module__.split(".", 1)[0]
        if top in modules:
            return top, cls.__name__
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """What an exception wraps: `raise ... from`, a wrapped first argument, `.reason`."""
    found = [exc.__cause__, exc.args[0] if exc.args else None, getattr(exc, "reason", None)]
    return [e for e in found if isinstance(e, BaseException) and e is not exc]


def _verdict(exc: BaseException, depth: int) -> bool | None:
    """True: may have happened; False: nothing was sent; None: not a transport error."""
    if _matches(exc, NOT_SENT) is not None:
        return False
    match = _matches(exc, UNCERTAIN)
    if match is not None and match not in _GENERIC:
        return True
    if depth < 4:
        for cause in _causes(exc):
            verdict = _verdict(cause, depth + 1)
            if verdict is not None:
                return verdict
    return True if match is not None else None


def is_uncertain(exc: BaseException, declared: tuple[type[BaseException], ...] | None) -> bool:
    """True if `exc` from a side-effecting call leaves its effect uncertain.

    `declared` is the tool's `uncertain_on`: None for the transport errors above, else
    exactly those classes.
    """
    if declared is not None:
        return isinstance(exc, declared)
    return bool(_verdict(exc, 0))
