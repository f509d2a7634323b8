"""Unknown options are errors: a misspelt keyword must never switch a control off.

`checked_options` wraps a public constructor or decorator (`tool`, `step`, `workflow`,
`Agent`, `Queue`, `Runtime`) so that a keyword it does not take raises `UsageError`
naming the closest valid one, instead of Python's `TypeError` (or, for a function that
takes `**options`, silence): `@tool(requires_aproval=True)` would otherwise run the
tool without approval.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from agentdur.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

HINTS = {
    "reconcile": "register the hook on the tool: `@my_tool.reconcile`",
    "simulate": "register the hook on the tool: `@my_tool.simulate`",
}
"""What to say for an option that names something set up another way."""


def reject_unknown(what: str, given: Collection[str], valid: Collection[str]) -> None:
    """Raise `UsageError` for the first of `given` not in `valid`, naming the closest."""
    for name in given:
        if name in valid:
            continue
        close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
        if name in HINTS:
            hint = HINTS[name]
        elif close:
            hint = f"did you mean {close[0]!r}?"
        else:
            hint = "valid options: " + ", ".join(repr(v) for v in sorted(valid))
        raise UsageError(f"{what} got an unknown option {name!r}: {hint}")


def checked_options(
    what: str | None = None, *, valid: Collection[str] | None = None
) -> Callable[[F], F]:
    """Check the keyword arguments of each call against `fn`'s own (or `valid`, for a
    function taking `**options`). `what` names the callable in the message; for an
    `__init__` it defaults to the class of the instance (`Runtime()` for a Runtime)."""

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters.values()
        names = {
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        allowed = frozenset(names | set(valid or ()))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not allowed.issuperset(kwargs):
                label = what
                if label is None:
                    owner = type(args[0]).__name__ if args else fn.__qualname__
                    label = f"{owner}()"
                reject_unknown(label, kwargs, allowed)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
