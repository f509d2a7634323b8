"""JSON encoding of the values a run records, and rebuilding them as typed values.

Everything agentdur stores is JSON: pydantic turns models, dataclasses, datetimes, enums
and the like into JSON values, and a function's type annotation turns them back. There is
no pickle, so reading the database never runs code. Errors are recorded as JSON too and
rebuilt only as exception classes that are already imported (never by importing a module
named in the database).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import sys
import traceback
from typing import Any, cast

import pydantic
import pydantic_core

from agentdur.errors import AgentdurError, SerializationError, StepFailed


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


def dumps(data: Any) -> str:
    """Compact JSON text for already-JSON data."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_sorted(data: Any) -> str:
    """Canonical JSON text (sorted keys), for hashing."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


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
    """Record an exception as JSON: its type, message, traceback text and simple fields."""
    cls = type(exc)
    data: dict[str, Any] = {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__))[-8000:],
    }
    fields = {
        key: value
        for key, value in vars(exc).items()
        if not key.startswith("_") and isinstance(value, (str, int, float, bool, type(None)))
    }
    if fields:
        data["fields"] = fields
    return data


def decode_error(data: dict[str, Any]) -> BaseException:
    """Rebuild a recorded exception as its original type where that is safe and possible.

    Only classes already imported in this process are used; anything else (or a class
    whose constructor does not take one message) becomes `StepFailed`.
    """
    type_name = str(data.get("type", "Exception"))
    module_name = str(data.get("module", ""))
    message = str(data.get("message", ""))
    cls = _imported_class(module_name, type_name)
    if cls is not None and issubclass(cls, Exception):
        rebuilt = _instantiate(cls, message, data.get("fields") or {})
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


def _instantiate(
    cls: type[Exception], message: str, fields: dict[str, Any]
) -> BaseException | None:
    if issubclass(cls, AgentdurError):
        # Our own errors take keyword fields; rebuild them without calling __init__.
        exc = cast(BaseException, cls.__new__(cls))
        Exception.__init__(exc, message)
        for key, value in fields.items():
            setattr(exc, key, value)
        return exc
    try:
        plain = cast(BaseException, cls(message))
    except Exception:
        return None
    return plain if str(plain) == message else None
