"""Argument types shared by the `agentdur` subcommands (argparse `type=` callables)."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta


def positive_int(text: str) -> int:
    """A whole number of at least 1 (limits, counts, concurrency)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def step_index(text: str) -> int:
    """A step index: 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a step index (0 or more), got {text!r}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), got {text!r}")
    return value


_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    """A span of time such as `30d`, `12h`, `15m`, `0s`, `2w` or `1d12h`."""
    parts = re.findall(r"(\d+)([smhdw])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30d, 12h, 15m or 0s, got {text!r}"
        )
    return sum(
        (timedelta(**{_DURATION_UNITS[unit]: int(number)}) for number, unit in parts),
        timedelta(0),
    )
