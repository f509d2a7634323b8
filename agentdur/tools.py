"""Tools: `@tool`, `ToolContext`, JSON Schema from type hints, argument validation.

A `Tool` is a sync or async function with a name, a description, a JSON Schema built
from its type hints with public pydantic, an effect kind (DESIGN.md semantics 4) and
optional `reconcile` / `simulate` hooks. This module knows nothing about durability.
The agent loop sends `tool.definition()` to the model; for each tool call it calls
`tool.parse_arguments(raw)`, records the plain JSON dict it returns (or sends the
`ToolArgumentsError` message back to the model, semantics 10), then
`await tool.call(arguments, ctx)`, which converts the dict to the declared types,
injects the `ToolContext` and runs the function (a sync one in a worker thread).

Decisions: the default effect is `side_effect` (an unclassified tool is assumed to
touch the world). Unknown arguments are rejected, not dropped: dropping a misspelled
optional argument (`"ammount"`) would run a side effect with its default. Empty
argument text counts as `{}` (some providers send `""` for no parameters); `NaN` and
`Infinity` are rejected, as they cannot be recorded. A domain key (`key=`) sees the
arguments with Python defaults filled in, and is used as given.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict, get_args, get_origin, overload

import jsonschema
import pydantic
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from agentdur.errors import ToolArgumentsError, UsageError
from agentdur.options import checked_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Effect", "Tool", "ToolContext", "is_async_callable", "tool", "tools_by_name"]

Effect = Literal["read_only", "idempotent", "side_effect"]
EFFECTS: tuple[Effect, ...] = ("read_only", "idempotent", "side_effect")
KeyFn = Callable[[dict[str, Any]], str]

_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what OpenAI and Anthropic both accept
_SECTION_RE = re.compile(r"^(?:Args|Arguments|Parameters):[ \t]*$")
_ENTRY_RE = re.compile(r"^\*{0,2}(\w+)[ \t]*(?:\([^)]*\))?[ \t]*:[ \t]*(.*)$")
_JSON_TYPES = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
_DRAFT = jsonschema.Draft202012Validator
_SECTIONS = ("Args:", "Arguments:", "Parameters:", "Returns:", "Raises:", "Yields:")


@dataclass(kw_only=True)
class ToolContext:
    """The step a tool runs in, filled by the runtime. A tool receives it by declaring one
    parameter annotated `ToolContext` (any name, any position), left out of its schema."""

    run_id: str
    """The run this tool call belongs to."""
    step_index: int
    """The index of the tool step inside the run."""
    idempotency_key: str
    """Stable across retries, crashes and recovery; pass it on as an Idempotency-Key."""
    attempt: int
    """1 for the first execution of the step, then 2, 3... on retries."""
    dry_run: bool = False
    """True in a dry-run fork: the tool must not change the outside world."""
    db: Any = None
    """For `transactional=True` tools: a connection in the step checkpoint's transaction."""
    tool_name: str = ""
    """The name of the tool being called."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """The call's validated arguments as JSON (as recorded): what a `reconcile` hook
    checks against the outside system."""
    fencing_token: int = 0
    """The run's epoch, increased by every takeover of the run by another executor. Pass
    it to an outside system that can refuse a lower token than it has seen, so a stalled
    former owner that wakes up cannot act after the takeover."""


class ToolOptions(TypedDict, total=False):
    """The options of `tool()` and `Tool()`; see `tool` for each."""

    name: str | None
    description: str | None
    effect: Effect
    retries: int
    requires_approval: bool
    transactional: bool
    key: str | KeyFn | None
    parameters: dict[str, Any] | None
    uncertain_on: tuple[type[BaseException], ...] | None


TOOL_OPTIONS = ToolOptions.__optional_keys__ | ToolOptions.__required_keys__


def is_async_callable(obj: object) -> bool:
    """True if calling `obj` returns a coroutine; sees through `functools.partial`."""
    obj = _unwrap(obj)
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(obj.__call__)
    )


class _NoTitles(GenerateJsonSchema):
    """Leaves out the `title` pydantic derives from each parameter's name."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class Tool:
    """A function the model can call, with its schema, effect kind and hooks; made by
    `tool()`, whose Args describe the options. Calling it calls the function directly."""

    @checked_options("Tool()", valid=TOOL_OPTIONS)
    def __init__(self, fn: Callable[..., Any], /, **options: Unpack[ToolOptions]) -> None:
        self.fn = fn
        self.name: str = options.get("name") or str(getattr(_unwrap(fn), "__name__", ""))
        self.effect: Effect = options.get("effect", "side_effect")
        self.retries: int = options.get("retries", 0)
        self.requires_approval: bool = options.get("requires_approval", False)
        self.transactional: bool = options.get("transactional", False)
        self.key: str | KeyFn | None = options.get("key")
        self.uncertain_on: tuple[type[BaseException], ...] | None = options.get("uncertain_on")
        self.is_async = is_async_callable(fn)
        self._hooks: dict[str, Callable[..., Any]] = {}
        doc = inspect.getdoc(_unwrap(fn)) or ""
        description = options.get("description")
        self.description: str = _summary(doc) if description is None else description

        problems = self._check_options()
        given = options.get("parameters")
        self._schema_names: frozenset[str] | None = None
        """For a tool made from a JSON Schema: the argument names the function takes
        (None when it takes `**kwargs`, or for a tool made from type hints)."""
        if given is not None:
            fields: dict[str, tuple[Any, str]] = {}
            self.context_param, self._schema_names = _schema_params(fn, given, problems)
            self._positional: list[str] = []
            names = list(given.get("properties") or {}) if isinstance(given, dict) else []
        else:
            fields, self.context_param, self._positional = _inspect_params(
                fn, _arg_docs(doc), problems
            )
            names = [alias for _, alias in fields.values()]
        self.takes_context = self.context_param is not None
        if isinstance(self.key, str):
            problems += _check_key_format(self.key, names)
        if problems:
            where = getattr(_unwrap(fn), "__qualname__", repr(fn))
            listed = "\n".join(f"  - {p}" for p in problems)
            raise UsageError(f"function {where!r} cannot be a tool:\n{listed}")

        # Fields have internal names and the parameter's name as alias, so a parameter
        # may be called `json` or `model_config` without clashing with BaseModel.
        self._aliases = {internal: alias for internal, (_, alias) in fields.items()}
        params = inspect.signature(fn).parameters.values()
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self._model: type[pydantic.BaseModel] | None = None
        if given is not None:
            # The schema as given is what the model sees and what validates its arguments
            # (in the draft its `$schema` names, 2020-12 by default, formats checked).
            self.parameters = copy.deepcopy(given)
            cls = jsonschema.validators.validator_for(given, default=_DRAFT)
            self._validator = cls(self.parameters, format_checker=cls.FORMAT_CHECKER)
            return
        self._model = pydantic.create_model(
            self.name,
            __config__=pydantic.ConfigDict(extra="forbid"),
            **{internal: field for internal, (field, _) in fields.items()},
        )
        schema = self._model.model_json_schema(schema_generator=_NoTitles)
        top = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
        # The top level in reading order, always with properties and required, no title.
        self.parameters = {k: v for k, v in {**top, **schema}.items() if k != "title"}
        jsonschema.Draft202012Validator.check_schema(self.parameters)
        self._validator = jsonschema.Draft202012Validator(self.parameters)

    def _check_options(self) -> list[str]:
        problems = []
        if not _NAME_RE.match(self.name):
            problems.append(f"tool name {self.name!r} must be 1 to 64 letters, digits, '_' or '-'")
        if self.effect not in EFFECTS:
            allowed = ", ".join(repr(e) for e in EFFECTS)
            problems.append(f"effect must be one of {allowed}, got {self.effect!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            problems.append(f"retries must be an int >= 0, got {self.retries!r}")
        if self.key is not None and not isinstance(self.key, str) and not callable(self.key):
            problems.append(f"key must be a format string or a callable, got {self.key!r}")
        uncertain = self.uncertain_on
        if uncertain is not None and not (
            isinstance(uncertain, tuple)
            and all(isinstance(c, type) and issubclass(c, BaseException) for c in uncertain)
        ):
            problems.append(
                f"uncertain_on must be a tuple of exception classes (or None), got {uncertain!r}"
            )
        return problems

    @property
    def has_reconcile(self) -> bool:
        """True if a reconcile hook is registered."""
        return "reconcile" in self._hooks

    @property
    def has_simulate(self) -> bool:
        """True if a simulate hook is registered."""
        return "simulate" in self._hooks

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, effect={self.effect!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, without validation or context."""
        return self.fn(*args, **kwargs)

    def definition(self) -> dict[str, Any]:
        """What the model sees: `{"name", "description", "parameters"}`, a fresh copy."""
        parameters = json.loads(json.dumps(self.parameters))
        return {"name": self.name, "description": self.description, "parameters": parameters}

    def parse_arguments(self, raw: str | dict[str, Any]) -> dict[str, Any]:
        """Parse and validate the model's arguments (raw JSON text or a decoded dict).

        Returns the plain JSON dict the agent loop records, or raises `ToolArgumentsError`
        (not JSON, not an object, failing the schema) with every problem, for the model.
        """
        value: Any = raw
        if isinstance(raw, str):
            try:
                value = json.loads(raw if raw.strip() else "{}", parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                where = f"line {exc.lineno}, column {exc.colno}"
                excerpt = repr(raw[max(0, exc.pos - 40) : exc.pos + 40])
                message = f"not valid JSON ({exc.msg} at {where}): {excerpt}"
                raise ToolArgumentsError(self.name, message) from None
            except ValueError as exc:
                raise ToolArgumentsError(self.name, f"not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            got = _JSON_TYPES.get(type(value), "null")
            raise ToolArgumentsError(self.name, f"arguments must be a JSON object, got {got}")
        problems = [self._describe(error) for error in self._validator.iter_errors(value)]
        if not problems and self._model is None:
            problems = self._unknown_names(value)
        elif not problems and self._model is not None:
            try:  # what JSON Schema cannot say: formats, the models' own validators
                self._model.model_validate(value)
            except pydantic.ValidationError as exc:
                problems = _pydantic_problems(exc)
        if problems:
            raise ToolArgumentsError(self.name, "; ".join(problems))
        return dict(value)

    def _describe(self, error: jsonschema.ValidationError) -> str:
        path = _path(error.absolute_path)
        if not path and error.validator == "additionalProperties":
            properties = self.parameters.get("properties") or {}
            return _unknown(sorted(set(error.instance) - set(properties)), properties)
        return f"{path!r}: {error.message}" if path else error.message

    def _unknown_names(self, value: dict[str, Any]) -> list[str]:
        """For a schema tool: arguments its function cannot take, which the schema did
        not exclude (no `additionalProperties: false`). Rejected, not dropped."""
        if self._schema_names is None:
            return []
        unknown = sorted(set(value) - self._schema_names)
        return [_unknown(unknown, self.parameters.get("properties") or {})] if unknown else []

    def _typed(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self._model is None:  # a schema tool takes the JSON values as they are
            return dict(arguments)
        try:
            instance = self._model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolArgumentsError(self.name, "; ".join(_pydantic_problems(exc))) from None
        return {alias: getattr(instance, internal) for internal, alias in self._aliases.items()}

    async def call(self, arguments: dict[str, Any], ctx: ToolContext | None = None) -> Any:
        """Run the tool with validated JSON arguments; return its result unchanged.

        The arguments become the declared types (pydantic models, enum members...); a sync
        function runs in a worker thread (context variables copied), an async one on the
        loop. Raises `UsageError` if the tool takes a `ToolContext` and `ctx` is None.
        """
        kwargs = self._typed(arguments)
        if self.context_param is not None:
            kwargs[self.context_param] = self._need_ctx(ctx)
        args = [kwargs.pop(p) for p in self._positional]
        return await _run(self.fn, *args, **kwargs)

    def _need_ctx(self, ctx: ToolContext | None) -> ToolContext:
        if ctx is None:
            raise UsageError(f"tool {self.name!r} takes a ToolContext; pass ctx to call it")
        return ctx

    def reconcile(self, fn: Callable[[ToolContext], Any]) -> Callable[[ToolContext], Any]:
        """Register `fn(ctx)` (sync or async), run for a side effect found started but not
        finished, or whose call ended uncertain: it asks the outside system whether the
        effect happened (by `ctx.idempotency_key`, or the call's `ctx.arguments`) and
        returns the tool's result if so, None if not."""
        return self._register("reconcile", fn)

    def simulate(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register `fn` (sync or async), run instead of the tool in a dry-run fork. It
        takes the tool's typed arguments by name (some, or `**kwargs`) and may take a
        `ToolContext`."""
        return self._register("simulate", fn)

    def _register(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if kind in self._hooks:
            raise UsageError(f"tool {self.name!r} already has a {kind} hook")
        self._hooks[kind] = fn
        return fn

    def _hook(self, kind: str) -> Callable[..., Any]:
        if kind not in self._hooks:
            raise UsageError(f"tool {self.name!r} has no {kind} hook")
        return self._hooks[kind]

    async def call_reconcile(self, ctx: ToolContext) -> Any:
        """Run the reconcile hook: the tool's result if the effect happened, else None."""
        return await _run(self._hook("reconcile"), ctx)

    async def call_simulate(self, arguments: dict[str, Any], ctx: ToolContext | None) -> Any:
        """Run the simulate hook with the typed arguments it declares."""
        simulate = self._hook("simulate")
        values = self._typed(arguments)
        params = inspect.signature(simulate).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            values = {p.name: values[p.name] for p in params if p.name in values}
        for p in params:
            if p.annotation in (ToolContext, "ToolContext"):
                values[p.name] = self._need_ctx(ctx)
        return await _run(simulate, **values)

    def domain_key(self, arguments: dict[str, Any]) -> str | None:
        """The domain key for these arguments (e.g. `refund:A17`), or None without `key`."""
        if self.key is None:
            return None
        filled = {**self._defaults, **arguments}
        result = self.key.format(**filled) if isinstance(self.key, str) else self.key(filled)
        if not isinstance(result, str):
            got = type(result).__name__
            raise UsageError(f"key of tool {self.name!r} returned {got}, expected a str")
        return result


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(**options: Unpack[ToolOptions]) -> Callable[[Callable[..., Any]], Tool]: ...
@checked_options("tool()", valid=TOOL_OPTIONS)
def tool(
    fn: Callable[..., Any] | None = None, /, **options: Unpack[ToolOptions]
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a `Tool` of a sync or async function: `@tool` or `@tool(effect=...)`; raise
    one `UsageError` listing every problem with the function and the options.

    Args:
        name: the name the model sees; the function's name by default.
        description: the first paragraph of the docstring by default. Parameter
            descriptions come from `Annotated[T, Field(description=...)]` or the
            docstring's `Args:` section.
        effect: `"read_only"`, `"idempotent"` or `"side_effect"` (the default);
            see DESIGN.md semantics 4.
        retries: how often the runtime retries the tool after it raises (default 0).
        requires_approval: the runtime waits for an operator before the call.
        transactional: the tool gets `ctx.db`, in the checkpoint's transaction.
        key: a domain key, a format string (`"refund:{order_id}"`) or a callable of the
            arguments dict, so the effect ledger dedupes across runs and forks.
        parameters: a JSON Schema of the arguments (an OpenAI function's `parameters`,
            an MCP tool's `inputSchema`), used instead of the type hints: sent to the
            model as given, the arguments validated against it (jsonschema) and passed
            to `fn` as keyword arguments, plain JSON values. `fn` takes each property
            by name (or `**kwargs`) and may take a `ToolContext`; an invalid schema is a
            `UsageError`. The other options apply unchanged.
        uncertain_on: for a `side_effect` tool, the exceptions after which its effect
            may have happened (reconcile, or NEEDS_ATTENTION) besides `UncertainEffect`.
            None (the default) means transport timeouts and disconnects after sending
            (httpx, requests, aiohttp, urllib3, builtin `TimeoutError` and connection
            resets); `()` means none: every other exception counts as not executed.
    """
    if fn is None:
        return lambda f: Tool(f, **options)
    if not callable(fn):
        raise UsageError(f"@tool takes a function, got {fn!r}; pass options by keyword")
    return Tool(fn, **options)


def tools_by_name(tools: Iterable[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Index tools by name, making plain functions tools with `tool()` defaults; raise
    `UsageError` if two share a name."""
    result: dict[str, Tool] = {}
    for item in tools:
        t = item if isinstance(item, Tool) else Tool(item)
        if t.name in result:
            raise UsageError(f"two tools are named {t.name!r}; give one another name")
        result[t.name] = t
    return result


async def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if is_async_callable(fn):
        return await fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def _unwrap(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _inspect_params(
    fn: Callable[..., Any], docs: dict[str, str], problems: list[str]
) -> tuple[dict[str, tuple[Any, str]], str | None, list[str]]:
    """`{internal name: ((type, Field), parameter name)}`, the `ToolContext` parameter's
    name and the positional-only names; problems are appended to `problems`."""
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError) as exc:
        problems.append(f"cannot resolve its type hints: {exc}")
        sig = inspect.signature(fn)
    fields: dict[str, tuple[Any, str]] = {}
    context: str | None = None
    positional: list[str] = []
    for param in sig.parameters.values():
        ann, name = param.annotation, param.name
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            problems.append(f"{stars}{name} is not supported: declare each argument")
            continue
        if ann is param.empty:
            problems.append(f"parameter {name!r} has no type annotation")
        elif ann is ToolContext:
            if context is not None:
                problems.append(f"parameter {name!r} is a second ToolContext after {context!r}")
            context = context or name
        elif isinstance(param.default, FieldInfo):
            problems.append(f"parameter {name!r}: put Field() in Annotated[], not the default")
        elif not isinstance(ann, str):  # a str is unresolved and reported above
            try:
                pydantic.TypeAdapter(ann).json_schema()
            except (pydantic.PydanticUserError, TypeError) as exc:
                shown = f"{getattr(ann, '__name__', ann)} ({type(exc).__name__})"
                problems.append(f"parameter {name!r}: no JSON Schema for type {shown}")
                continue
            extra: dict[str, Any] = {"alias": name}
            if name in docs and not _has_description(ann):
                extra["description"] = docs[name]
            default = ... if param.default is param.empty else param.default
            fields[f"p{len(fields)}"] = ((ann, pydantic.Field(default, **extra)), name)
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(name)
    return fields, context, positional


def _schema_params(
    fn: Callable[..., Any], schema: Any, problems: list[str]
) -> tuple[str | None, frozenset[str] | None]:
    """For a tool made from a JSON Schema: the `ToolContext` parameter's name and the
    argument names `fn` takes (None with `**kwargs`); problems appended to `problems`."""
    if not isinstance(schema, dict):
        problems.append(f"parameters must be a JSON Schema object (a dict), got {schema!r}")
        return None, None
    cls = jsonschema.validators.validator_for(schema, default=_DRAFT)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = _path(exc.absolute_path)
        problems.append(
            f"parameters is not a valid JSON Schema: {exc.message}"
            + (f" (at {where})" if where else "")
        )
        return None, None
    if schema.get("type") != "object":
        problems.append(
            f'parameters must describe an object ("type": "object"), got {schema.get("type")!r}'
        )
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    try:
        params = inspect.signature(fn, eval_str=True).parameters.values()
    except (NameError, TypeError, SyntaxError):
        params = inspect.signature(fn).parameters.values()
    context: str | None = None
    takes: set[str] = set()
    any_name = False
    for param in params:
        if param.annotation is ToolContext:
            context = context or param.name
        elif param.kind is param.VAR_KEYWORD:
            any_name = True
        elif param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            problems.append(f"parameter {param.name!r} cannot be passed by keyword")
        else:
            takes.add(param.name)
            if param.default is param.empty and param.name not in required:
                problems.append(
                    f"parameter {param.name!r} has no default but is not required by the schema"
                )
    missing = [name for name in properties if name not in takes and not any_name]
    if missing:
        problems.append(
            "the function takes no parameter for schema properties "
            + ", ".join(repr(name) for name in missing)
        )
    return context, None if any_name else frozenset(properties)


def _unknown(names: list[str], properties: Any) -> str:
    valid = ", ".join(repr(p) for p in properties) or "none"
    noun = "argument" if len(names) == 1 else "arguments"
    return f"unknown {noun} {', '.join(repr(u) for u in names)} (valid: {valid})"


def _has_description(annotation: Any) -> bool:
    metadata = get_args(annotation)[1:] if get_origin(annotation) is Annotated else ()
    return any(isinstance(m, FieldInfo) and m.description for m in metadata)


def _check_key_format(key: str, names: list[str]) -> list[str]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(key) if f is not None]
    except ValueError as exc:
        return [f"key {key!r} is not a valid format string: {exc}"]
    roots = sorted({re.split(r"[.\[]", f, maxsplit=1)[0] for f in fields} - set(names))
    return [f"key {key!r} refers to {root!r}, which is not a parameter" for root in roots]


def _summary(doc: str) -> str:
    """The docstring's first paragraph on one line, unless it is a section."""
    first = doc.strip().split("\n\n", 1)[0]
    return "" if first.startswith(_SECTIONS) else " ".join(first.split())


def _arg_docs(doc: str) -> dict[str, str]:
    """Descriptions from a Google-style `Args:` section, keyed by parameter name."""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if _SECTION_RE.match(line)), None)
    docs: dict[str, str] = {}
    current, indent = "", 0
    for line in lines[start + 1 :] if start is not None else []:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth == 0:
            break  # the next section
        match = _ENTRY_RE.match(line.strip())
        if match and (not current or depth <= indent):
            current, indent = match.group(1), depth
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def _path(parts: Iterable[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _pydantic_problems(exc: pydantic.ValidationError) -> list[str]:
    paths = [(_path(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
    return [f"{path!r}: {msg}" if path else msg for path, msg in paths]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
