"""What a Runtime can start and recover: its workflows by name.

Each Runtime has a `Registry` of its own. A name it does not hold is looked up in the
process-wide one, where `@agentdur.workflow` and `Agent(...)` put theirs when they are
defined, so a run recovered in a new process finds its code by the name it recorded.
An agent is one workflow among others here (`agent:<name>`): the engine that executes
runs knows workflows only.

Two different workflows (or agents) under one name in a Runtime are an error, as two
workflows under one name in a process are: the recording could not tell which ran.
"""

from __future__ import annotations

from typing import Any

from agentdur.errors import UsageError
from agentdur.workflow import Workflow, find_workflow


class Registry:
    """A Runtime's workflows by name, over the process-wide registry."""

    def __init__(self) -> None:
        self._own: dict[str, Workflow[Any]] = {}

    def add(self, wf: Workflow[Any], *, what: str = "workflow", replace: bool = False) -> None:
        """Hold `wf` in this Runtime; another one already under its name is an error
        unless `replace` says to swap it in."""
        existing = self._own.get(wf.name)
        if existing is not None and existing is not wf and not replace:
            shown = wf.name.removeprefix("agent:")
            raise UsageError(
                f"{what} name {shown!r} is taken in this Runtime by another {what}; give "
                "one of them another name (or register(..., replace=True) to swap in a "
                "changed one, e.g. to replay recorded runs against a code change)"
            )
        self._own[wf.name] = wf

    def include(self, other: Registry) -> None:
        """Hold everything `other` holds (a Runtime made like another one)."""
        for wf in other._own.values():
            self.add(wf)

    def find(self, name: str) -> Workflow[Any] | None:
        """The workflow recorded runs name `name`, or None if this process lacks it."""
        return self._own.get(name) or find_workflow(name)
