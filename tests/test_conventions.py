"""Conventions the codebase keeps (STYLE.md §9), checked so they cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import agentdur

PACKAGE = Path(agentdur.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in dir(agentdur) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(agentdur, name)).__name__ == "module"}
    assert sorted(agentdur.__all__) == agentdur.__all__
    assert set(agentdur.__all__) == public - modules


def test_exported_classes_present_as_agentdur() -> None:
    for name in agentdur.__all__:
        obj = getattr(agentdur, name)
        if isinstance(obj, type):
            assert obj.__module__ == "agentdur", name


def test_no_module_over_800_lines() -> None:
    too_long = {
        str(path.relative_to(PACKAGE)): n
        for path in SOURCES
        if (n := len(path.read_text().splitlines())) > 800
    }
    assert too_long == {}


def test_sql_lives_only_in_the_store() -> None:
    sql = re.compile(
        r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE TABLE)\b.*\b(FROM|SET|VALUES|\()"
    )
    offenders = []
    for path in SOURCES:
        if "store" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text()
        if ".execute(" in text or any(sql.search(line) for line in text.splitlines()):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_execute_arguments_are_never_built_strings() -> None:
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"execute", "executemany", "executescript"}
                and node.args
            ):
                query = node.args[0]
                built = isinstance(query, (ast.JoinedStr, ast.BinOp)) or (
                    isinstance(query, ast.Call)
                    and isinstance(query.func, ast.Attribute)
                    and query.func.attr == "format"
                )
                if built:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_no_pickle_anywhere() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in SOURCES
        if re.search(r"^\s*(import|from)\s+(c?pickle|dill|marshal)\b", path.read_text(), re.M)
    ]
    assert offenders == []
