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


TESTS = Path(__file__).parent
# A test may read only what is in the repository: no relative climbs, no absolute paths to
# this machine's folders, no sibling "shared" folder.
OUTSIDE_PATH = re.compile(r"\.\./|\.\.\\|/work/|/home/|/\s*[\"']shared[\"']|[\"']shared/")
FILE_PARENTS = re.compile(r"__file__\)(?:\.resolve\(\))?(?:\.parents\[(\d+)\]|((?:\.parent\b)+))")


def outside_repo_references(relative: Path, text: str) -> list[str]:
    """`file:line: text` for each line of a test source (path under tests/) reaching outside."""
    # Path(__file__).parents[i]: i == len(relative.parts) - 1 is tests/, one more the root.
    highest = len(relative.parts)
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        climbs = [
            int(index) if index else chain.count(".parent") - 1
            for index, chain in FILE_PARENTS.findall(line)
        ]
        if OUTSIDE_PATH.search(line) or any(level > highest for level in climbs):
            found.append(f"tests/{relative.as_posix()}:{number}: {line.strip()}")
    return found


def test_outside_repo_check_flags_known_escapes() -> None:
    lines = [
        'A = Path(__file__).parents[3] / "shared" / "fixtures"',
        'B = Path(__file__).resolve().parent.parent.parent.parent / "x"',
        'C = "../shared/fixtures/providers"',
        'D = Path("/work/shared/fixtures")',
        'E = Path(__file__).parents[3] / "elsewhere"',
        'ok = Path(__file__).resolve().parent.parent / "fixtures", rate_limit="shared"',
        'ok = Path(__file__).parents[2] / "tools" / "crashtest.py"',
    ]
    found = outside_repo_references(Path("models/test_x.py"), "\n".join(lines))
    assert [entry.split(":")[1] for entry in found] == ["1", "2", "3", "4", "5"]
    assert outside_repo_references(Path("test_x.py"), lines[6]) != []


def test_tests_need_only_the_repository() -> None:
    offenders = [
        entry
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__)
        for entry in outside_repo_references(path.relative_to(TESTS), path.read_text())
    ]
    assert offenders == [], "test sources refer to paths outside the repository:\n" + "\n".join(
        offenders
    )
