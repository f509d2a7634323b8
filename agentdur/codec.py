"""JSON encoding of the values a run records, and rebuilding them as typed values.

Everything agentdur stores is JSON: pydantic turns models, dataclasses, datetimes, enums
and the like into JSON values, and a function's type annotation turns them back. There is
no pickle, so reading the database never runs code. Errors are recorded as JSON too and
rebuilt only as exception classes that are already imported (never by importing a module
named in the database).

Text is stored losslessly on both databases: `dumps` escapes what PostgreSQL cannot hold
(NUL) and what UTF-8 cannot encode (lone surrogates) with a private marker, and `loads`
(which the stores use for every JSON value they read) reverses it; ordinary text is
never changed. `dumps` is also where a value is refused, naming the step, when it holds
NaN or Infinity or is larger than the cap (`Runtime(max_value_bytes=...)`).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import re
import sys
import traceback
from typing import Any, cast

import pydantic
import pydantic_core

from agentdur.errors import SerializationError, StepFailed, ValueTooLarge


def to_json(value: Any, *, what: str) -> Any:
    """Turn `value` into plain JSON data (dicts, lists, str, numbers, bools, None).

    `what` names the thing being stored ("output of step 3 'charge'") for the error.
    """
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise SerializationError(
            f"cannot store {what} as JSON: a value of type {type(value).__qualname__} "
            f"is not JSON-serialisable ({exc}). Return JSON data, a pydantic model or "
            "a dataclass instead.",
            step=what,
        ) from None


DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024
"""The default cap on one recorded value as JSON text (UTF-8 bytes): 16 MiB."""

MARK = "\ufdd0"
"""Escape character inside stored JSON strings: a Unicode noncharacter, reserved for
internal use, so real text almost never holds it (and is escaped itself when it does).
`MARK` + 4 hex digits stands for that code point: `0000` for NUL, `d800`-`dfff` for a
lone surrogate, `fdd0` for the marker itself."""
_MARK_UTF8 = MARK.encode()
# In JSON text a NUL is the escape `\u0000`; an escaped backslash (`\\`) is matched too,
# so that `\\u0000` (a backslash, then "u0000") is left alone.
_ESCAPE = re.compile(r"\\\\|\\u0000|[\ud800-\udfff\ufdd0]")
_UNESCAPE = re.compile(MARK + "([0-9a-f]{4})")
_SURROGATES = re.compile(r"[\ud800-\udfff\ufdd0]")


def _holds_surrogate_or_mark(text: str) -> bool:
    """Whether `text` holds a lone surrogate or the marker. String tests in C: a regex
    scan of the same text costs ~30 us per KB, on every value written and hashed."""
    if MARK in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    if found == "\\\\":
        return found
    if found == "\\u0000":
        return MARK + "0000"
    return f"{MARK}{ord(found):04x}"


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    return MARK if code == "fdd0" else "\\u" + code  # a JSON escape json.loads decodes


def dumps(data: Any, *, what: str | None = None, limit: int | None = None) -> str:
    """Compact JSON text for already-JSON data, as the store keeps it.

    NUL and lone surrogates in strings (keys too) are escaped (see `MARK`), so any
    Python `str` round-trips through `loads` on both databases. `what` names the value
    for the errors: `SerializationError` for NaN or Infinity, `ValueTooLarge` for text
    over `limit` UTF-8 bytes (no limit when None).
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        named = what or "a value"
        if "Out of range float" not in str(exc):
            raise SerializationError(f"cannot store {named} as JSON: {exc}", step=what) from None
        raise SerializationError(
            f"cannot store {named} as JSON: it contains NaN or Infinity, which JSON cannot "
            "hold. Return None, a string or a finite number instead.",
            step=what,
        ) from None
    if "\\u0000" in text or _holds_surrogate_or_mark(text):
        text = _ESCAPE.sub(_escape, text)
    # Counting bytes costs an encode: only for text that might be over the limit.
    if limit is not None and len(text) * 4 > limit:
        size = len(text.encode())
        if size > limit:
            raise ValueTooLarge(
                f"cannot store {what or 'a value'}: it is {size:,} bytes as JSON, over the "
                f"limit of {limit:,} bytes per recorded value (Runtime(max_value_bytes=...))",
                step=what,
                size=size,
                limit=limit,
            )
    return text


def loads(text: str | bytes) -> Any:
    """JSON data from text `dumps` made (or the database returned): escapes reversed."""
    if isinstance(text, (bytes, bytearray)):
        if _MARK_UTF8 not in text:
            return json.loads(text)
        text = text.decode()
    elif MARK not in text:
        return json.loads(text)
    return json.loads(_UNESCAPE.sub(_unescape, text))


def dumps_sorted(data: Any) -> str:
    """Canonical JSON text (sorted keys), for hashing; always encodable as UTF-8."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    if _holds_surrogate_or_mark(text):
        # Lone surrogates (and the marker) only: a NUL keeps its `\u0000` form, so
        # hashes recorded before escaping existed stay the same.
        text = _SURROGATES.sub(lambda m: f"{MARK}{ord(m.group()):04x}", text)
    return text


@functools.lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def from_json(data: Any, annotation: Any) -> Any:
    """Rebuild a typed value from JSON data using a type annotation (no annotation: as is)."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is None:
        return data
    try:
        return _adapter(annotation).validate_python(data)
    except TypeError:
        # Unhashable or unusual annotations: build the adapter without the cache.
        return pydantic.TypeAdapter(annotation).validate_python(data)


def return_annotation(fn: Any) -> Any:
    """The resolved return annotation of `fn`, or `Parameter.empty`."""
    try:
        hints = _type_hints(fn)
    except Exception:
        return inspect.Parameter.empty
    return hints.get("return", inspect.Parameter.empty)


def parameter_annotations(fn: Any) -> dict[str, Any]:
    """Resolved parameter annotations of `fn` (unresolvable ones are left out)."""
    try:
        hints = _type_hints(fn)
    except Exception:
        return {}
    hints.pop("return", None)
    return hints


def _type_hints(fn: Any) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(fn, include_extras=False)


def encode_error(exc: BaseException) -> dict[str, Any]:
    """Record an exception as JSON: its type, message, traceback text, its `args` and
    public attributes when they are JSON data (what `decode_error` restores)."""
    cls = type(exc)
    data: dict[str, Any] = {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__))[-8000:],
    }
    if exc.args != (str(exc),) and _is_json(list(exc.args)):
        data["args"] = list(exc.args)
    attributes = vars(exc) if hasattr(exc, "__dict__") else {}
    fields = {
        key: value
        for key, value in attributes.items()
        if not key.startswith("_") and _is_json(value)
    }
    if fields:
        data["fields"] = fields
    return data


_FIELD_LIMIT = 4000
"""Characters of JSON an exception's attribute or args may take to be recorded."""


def _is_json(value: Any) -> bool:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return len(text) <= _FIELD_LIMIT


def decode_error(data: dict[str, Any]) -> BaseException:
    """Rebuild a recorded exception as the type the live code saw.

    The class must already be imported in this process (a module named in the database
    is never imported): it is rebuilt without calling its constructor, which may take
    other arguments or do work, as `cls.__new__(cls)`, `BaseException.__init__` with
    the recorded args (or the message), then the recorded attributes (a builtin class
    is called with its args: no user code runs). Only a class that is not imported
    (or refuses `__new__`) becomes `StepFailed`.
    """
    type_name = str(data.get("type", "Exception"))
    module_name = str(data.get("module", ""))
    message = str(data.get("message", ""))
    cls = _imported_class(module_name, type_name)
    if cls is not None and issubclass(cls, Exception):
        args = data.get("args")
        rebuilt = _rebuild(
            cls,
            tuple(args) if isinstance(args, list) else (message,),
            data.get("fields") or {},
        )
        if rebuilt is not None:
            return rebuilt
    return StepFailed(type_name, message, str(data.get("traceback", "")))


def _imported_class(module_name: str, qualname: str) -> type | None:
    module = builtins if module_name == "builtins" else sys.modules.get(module_name)
    if module is None:
        return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


def _rebuild(
    cls: type[Exception], args: tuple[Any, ...], fields: dict[str, Any]
) -> BaseException | None:
    try:
        if cls.__module__ == "builtins":  # no user code: OSError sets errno from its args
            exc = cast(BaseException, cls(*args))
        else:
            exc = cast(BaseException, cls.__new__(cls))
            BaseException.__init__(exc, *args)
    except Exception:  # a __new__ that insists on its own arguments
        return None
    for key, value in fields.items():
        try:
            setattr(exc, key, value)
        except Exception:  # a read-only property or __slots__: its value stays derived
            continue
    return exc
