"""How recorded values are kept once: packed on write, rebuilt exactly on read.

Pure functions over JSON data; the store applies them (base.py), the agent loop builds
the packed forms (recording.py, agent.py). Two mechanisms:

**Tool calls are kept in the LLM step that made them.** An LLM step's output holds the
provider's raw body (`raw`) or the neutral response (`response`) with each tool call's
id and argument value moved out into `calls`: `[{"id", "arguments", "at": [paths]}]`,
where `at` gives where in the body each was (absent when the body did not carry it). The
tool step's input then names the call, `{"llm": L, "call": i, "effect": ...}`, plus its
own `arguments` only when the validated arguments differ from the call's. The arguments
live in the LLM step because that is written first: a crash before the tool step must
not lose them. `expand` rebuilds both the body and the tool step's input exactly as they
were before packing (the audit views read `calls` the same way, in SQL).

**Big strings are kept once, by content.** A string over `BLOB_THRESHOLD` bytes in a
step's input, output or error is replaced by `{"$blob": sha256}` and its bytes go to the
`blobs` table (zlib), linked to the step in `step_blobs`. Only hashes linked to the step
are resolved on read, so a user value that looks like a reference stays what it was.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentdur.store.core import StepInfo

BLOB_THRESHOLD = 64 * 1024
"""Strings of more UTF-8 bytes than this are kept in the content-addressed blobs table."""

Path = list[str | int]


@dataclass(frozen=True)
class Packed:
    """A value to record (`full`, what the step carries in memory) and the form the
    store keeps (`stored`)."""

    full: Any
    stored: Any


def full(value: Any) -> Any:
    """The in-memory value of a possibly packed value."""
    return value.full if isinstance(value, Packed) else value


def stored(value: Any) -> Any:
    """The stored form of a possibly packed value."""
    return value.stored if isinstance(value, Packed) else value


# -- tool calls ------------------------------------------------------------------------


def parse_arguments(value: Any) -> Any:
    """The arguments a call's stored argument value stands for (text is JSON-decoded);
    `_UNPARSED` when the text is not JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return _UNPARSED
    return value


_UNPARSED = object()


def pack_calls(
    output: dict[str, Any], key: str, calls: Sequence[tuple[str, str, Any]]
) -> dict[str, Any]:
    """`output` with each call's (id, raw_arguments, arguments) moved out of `output[key]`.

    The argument value moved is the text when the body carries it, else the object (a body
    whose calls carry objects, as Anthropic's `input`), else the text is added.
    """
    body = _copy(output[key])
    entries: list[dict[str, Any]] = []
    for call_id, raw_arguments, arguments in calls:
        entry: dict[str, Any] = {}
        at: list[Path | None] = []
        path = _find(body, lambda v, raw=raw_arguments: v == raw and isinstance(v, str))
        if path is None:
            path = _find(body, lambda v, a=arguments: isinstance(v, dict) and bool(v) and v == a)
        entry["arguments"] = raw_arguments if path is None else _pop(body, path)
        at.append(path)
        id_path = _find(body, lambda v, i=call_id: v == i and isinstance(v, str))
        entry["id"] = call_id if id_path is None else _pop(body, id_path)
        at.append(id_path)
        entry["at"] = at
        entries.append(entry)
    return {**output, key: body, "calls": entries}


def call_arguments(output: dict[str, Any], position: int) -> Any:
    """The argument value of call `position` as `pack_calls` keeps it."""
    return output["calls"][position]["arguments"]


def _unpack_calls(output: dict[str, Any], *, copy: bool = True) -> dict[str, Any]:
    """The output as recorded before `pack_calls`; without `copy` its body is rebuilt in
    place (an output just read, which nothing else holds)."""
    key = "raw" if "raw" in output else "response"
    body = _copy(output[key]) if copy else output[key]
    for entry in reversed(output["calls"]):
        args_at, id_at = entry["at"]
        if id_at is not None:
            _put(body, id_at, entry["id"])
        if args_at is not None:
            _put(body, args_at, entry["arguments"])
    rebuilt = {k: v for k, v in output.items() if k != "calls"}
    rebuilt[key] = body
    return rebuilt


def tool_input(
    llm_index: int, position: int, llm_output: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """The stored input of a tool step whose full input is `data` (call_id, then
    arguments or raw_arguments, then effect), naming call `position` of LLM step
    `llm_index`; only values the call does not already hold are kept."""
    entry = llm_output["calls"][position]
    if data.get("call_id") != entry["id"]:
        return data
    packed: dict[str, Any] = {"llm": llm_index, "call": position}
    if "raw_arguments" in data:
        packed["raw"] = True
        if data["raw_arguments"] != entry["arguments"]:
            packed["raw_arguments"] = data["raw_arguments"]
    elif "arguments" in data and _canonical(data["arguments"]) != _canonical(
        parse_arguments(entry["arguments"])
    ):
        packed["arguments"] = data["arguments"]
    for name, value in data.items():
        if name not in ("call_id", "arguments", "raw_arguments"):
            packed[name] = value
    return packed


def _unpack_tool_input(data: dict[str, Any], output: Any) -> dict[str, Any]:
    """A tool step's input as recorded, from its stored form and the stored output of
    the LLM step it names (None when that step is not loaded)."""
    if not isinstance(output, dict) or "calls" not in output:
        return data  # the LLM step is not loaded (or not recorded): leave the reference
    entry = output["calls"][data["call"]]
    rebuilt: dict[str, Any] = {"call_id": entry["id"]}
    if data.get("raw"):
        rebuilt["raw_arguments"] = data.get("raw_arguments", entry["arguments"])
    else:
        rebuilt["arguments"] = (
            data["arguments"] if "arguments" in data else parse_arguments(entry["arguments"])
        )
    for name, value in data.items():
        if name not in ("llm", "call", "raw", "arguments", "raw_arguments"):
            rebuilt[name] = value
    return rebuilt


def expand(
    steps: Sequence[StepInfo], others: dict[tuple[str, int], StepInfo] | None = None
) -> list[StepInfo]:
    """Steps as recorded before packing: LLM bodies with their calls, tool steps' inputs
    with call id and arguments. `others` supplies LLM steps not among `steps`."""
    outputs = {key: step.output for key, step in (others or {}).items()}
    return _expand([dict(vars(step)) for step in steps], outputs, in_place=False)


def expand_loaded(values: list[dict[str, Any]]) -> list[StepInfo]:
    """`expand` of steps just read, as their field values, which nothing else holds:
    rebuilt in place, without the copies `expand` makes (it shows when a long run
    loads for recovery)."""
    return _expand(values, {}, in_place=True)


def _expand(
    values: list[dict[str, Any]], outputs: dict[tuple[str, int], Any], *, in_place: bool
) -> list[StepInfo]:
    # The stored (packed) outputs: a tool step's input names a call kept there.
    outputs.update({(v["run_id"], v["step_index"]): v["output"] for v in values})
    for v in values:
        if v["kind"] == "llm" and isinstance(v["output"], dict):
            v["output"] = _expand_llm_output(v, in_place=in_place)
    for v in values:
        data = v["input"]
        if v["kind"] == "tool" and isinstance(data, dict) and "llm" in data:
            v["input"] = _unpack_tool_input(data, outputs.get((v["run_id"], int(data["llm"]))))
    return [StepInfo(**v) for v in values]


def _expand_llm_output(step: dict[str, Any], *, in_place: bool) -> dict[str, Any]:
    output: dict[str, Any] = step["output"]
    if "calls" in output:
        output = _unpack_calls(output, copy=not in_place)
    response = output.get("response")
    if isinstance(response, dict) and ("usage" not in response or "model" not in response):
        # A neutral response leaves out what the step's own columns hold (recording.py).
        response = {**response}
        response.setdefault("usage", step["usage"])
        response.setdefault("model", step["model"])
        output = {**output, "response": response}
    return output


def is_tool_reference(step: StepInfo) -> bool:
    return step.kind == "tool" and isinstance(step.input, dict) and "llm" in step.input


# -- blobs -----------------------------------------------------------------------------


def extract_blobs(
    text: str | None, threshold: int = BLOB_THRESHOLD
) -> tuple[str | None, dict[str, tuple[int, bytes]]]:
    """JSON text with every string over `threshold` bytes replaced by a reference, and
    the (hash -> (size, zlib bytes)) of those strings. Text that cannot hold one is
    returned as is."""
    if text is None or len(text) * 4 <= threshold:
        return text, {}
    if len(text.encode("utf-8", "surrogatepass")) <= threshold:
        return text, {}
    from agentdur import codec

    found: dict[str, tuple[int, bytes]] = {}

    def visit(value: Any) -> Any:
        if isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            if len(data) <= threshold:
                return value
            digest = hashlib.sha256(data).hexdigest()
            if digest not in found:
                found[digest] = (len(data), zlib.compress(data, 6))
            return {"$blob": digest}
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, list):
            return [visit(v) for v in value]
        return value

    value = visit(codec.loads(text))
    if not found:
        return text, {}
    return codec.dumps(value), found


def resolve_blobs(value: Any, blobs: dict[str, bytes]) -> Any:
    """`value` with references to these blobs (hash -> zlib bytes) replaced by their text."""
    if not blobs:
        return value
    if isinstance(value, dict):
        ref = value.get("$blob")
        if len(value) == 1 and isinstance(ref, str) and ref in blobs:
            return zlib.decompress(blobs[ref]).decode("utf-8", "surrogatepass")
        return {k: resolve_blobs(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_blobs(v, blobs) for v in value]
    return value


def with_blobs(values: dict[str, Any], blobs: dict[str, bytes]) -> dict[str, Any]:
    """A step's field values just read, with its blob references resolved in place."""
    if blobs:
        for name in ("input", "output", "error"):
            values[name] = resolve_blobs(values[name], blobs)
    return values


# -- JSON paths ------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _walk(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every value held under a dict key, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield [*path, key], item
            yield from _walk(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, [*path, index])


def _find(body: Any, match: Any) -> Path | None:
    for path, value in _walk(body, []):
        if match(value):
            return path
    return None


def _parent(body: Any, path: Path) -> Any:
    for part in path[:-1]:
        body = body[part]
    return body


def _pop(body: Any, path: Path) -> Any:
    return _parent(body, path).pop(path[-1])


def _put(body: Any, path: Path, value: Any) -> None:
    _parent(body, path)[path[-1]] = value


def _canonical(value: Any) -> str:
    if value is _UNPARSED:
        return "\0unparsed"
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def hashes(blob_rows: Iterable[Sequence[Any]]) -> dict[int, dict[str, bytes]]:
    """Blob rows (step_index, hash, data) grouped by step."""
    grouped: dict[int, dict[str, bytes]] = {}
    for step_index, digest, data in blob_rows:
        grouped.setdefault(int(step_index), {})[str(digest)] = bytes(data)
    return grouped
