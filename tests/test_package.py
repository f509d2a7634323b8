"""The package as users get it: examples use public names, every import is declared."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import agentdur
import agentdur.models
import agentdur.testing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(agentdur.__file__).parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

PUBLIC_SUBMODULES = {"models": agentdur.models, "testing": agentdur.testing}
"""Besides `agentdur` itself, the modules users import from (README, STYLE.md §2)."""

DISTRIBUTIONS = {
    "anthropic": "anthropic",
    "anyio": "anyio",
    "httpx": "httpx",
    "httpx2": "httpx2",
    "jinja2": "jinja2",
    "jsonschema": "jsonschema",
    "openai": "openai",
    "opentelemetry": "opentelemetry-api",
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg-pool",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",  # pydantic pins its own core; declaring it could conflict
    "respx": "respx",
    "starlette": "starlette",
    "typing_extensions": "typing-extensions",
    "uvicorn": "uvicorn",
}
"""Top-level module imported by agentdur -> the distribution that provides it."""

MODULE_EXTRAS = {
    "models/anthropic.py": {"anthropic"},
    "models/openai_chat.py": {"openai"},
    "models/openai_responses.py": {"openai"},
    # The respx bridge, plus openai_client() / anthropic_client() for those SDKs' users.
    "testing.py": {"testing", "openai", "anthropic"},
    "tracing.py": {"otel"},
    "cli_ui.py": {"ui"},  # imported when `agentdur ui` runs, with a clear error if absent
    "ui/app.py": {"ui"},
}
"""Modules whose imports may come from extras, besides `dependencies`."""


def public_names_used(tree: ast.Module) -> list[tuple[int, str]]:
    """`(line, dotted name)` for each agentdur name a module uses."""
    used = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "agentdur" or node.module.startswith("agentdur."):
                used += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            used += [(node.lineno, a.name) for a in node.names if a.name.startswith("agentdur.")]
        elif isinstance(node, ast.Attribute):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "agentdur":
                used.append((node.lineno, ".".join(["agentdur", *chain])))
    return used


def private(dotted: str) -> bool:
    """Whether `agentdur.<name>` or `agentdur.<public submodule>.<name>` is not public."""
    parts = dotted.split(".")[1:]
    if not parts:
        return False
    if parts[0] in PUBLIC_SUBMODULES:
        module = PUBLIC_SUBMODULES[parts[0]]
        return len(parts) > 1 and parts[1] not in module.__all__
    return parts[0] not in agentdur.__all__


def test_private_name_check_flags_known_cases() -> None:
    source = "\n".join(
        [
            "import agentdur",
            "from agentdur import Runtime, response_of",
            "from agentdur.models import OpenAIChat",
            "from agentdur.testing import Scripted",
            "x = agentdur.Worker, agentdur.models.Scripted, agentdur.Runtime.run",
            "from agentdur.recording import response_of",
            "from agentdur.models.base import import_sdk",
            "import agentdur.worker",
            "y = agentdur.cli_format.timeline",
            "from agentdur import audit",
        ]
    )
    flagged = sorted({line for line, name in public_names_used(ast.parse(source)) if private(name)})
    assert flagged == [6, 7, 8, 9, 10]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_examples_use_only_public_names(path: Path) -> None:
    used = public_names_used(ast.parse(path.read_text()))
    assert [f"{path.name}:{line}: {name}" for line, name in used if private(name)] == []


def third_party_imports(tree: ast.Module) -> set[str]:
    """Top-level names of what a module imports (type-checking imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"agentdur", "__future__"}


def requirement_names(requirements: list[str]) -> set[str]:
    """Normalised distribution names (PEP 503) of requirement strings."""
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(re.sub(r"[-_.]+", "-", match.group()).lower())
    return names


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def test_every_third_party_import_is_declared() -> None:
    required = requirement_names(PROJECT["dependencies"])
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        declared = required.union(
            *(requirement_names(EXTRAS[extra]) for extra in MODULE_EXTRAS.get(relative, ()))
        )
        for module in sorted(third_party_imports(ast.parse(path.read_text()))):
            distribution = DISTRIBUTIONS.get(module)
            if distribution is None or distribution not in declared:
                missing.append(f"{relative}: {module} ({distribution or 'unknown distribution'})")
    assert missing == []


def test_dev_installs_every_extra() -> None:
    dev = set(EXTRAS["dev"])
    assert {
        extra: sorted(set(reqs) - dev) for extra, reqs in EXTRAS.items() if set(reqs) - dev
    } == {}


def test_sdk_floors_are_the_httpx2_releases() -> None:
    # openai 3.0.0 and anthropic 1.0.0 are the first releases that send HTTP through
    # httpx2, which agentdur.testing's bridge and the adapters are written for.
    assert "openai>=3.0" in EXTRAS["openai"]
    assert "anthropic>=1.0" in EXTRAS["anthropic"]
