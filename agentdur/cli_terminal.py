"""How the `agentdur` commands end at a terminal: Ctrl-C, a closed pipe, any encoding.

`console_exit(main)` is what the console scripts call. Ctrl-C ends a command with exit
code 130 and one stderr line (the commands catch KeyboardInterrupt and call
`interrupted`); a reader that stops early (`agentdur runs list | head`) ends it silently
with 141 (128 + SIGPIPE, as a process killed by SIGPIPE reports); text the terminal's
encoding cannot show is escaped instead of raising.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

INTERRUPTED = 130
"""128 + SIGINT."""
BROKEN_PIPE = 141
"""128 + SIGPIPE."""


def interrupted(what: str = "interrupted") -> int:
    """Report Ctrl-C in one stderr line; the exit code 130."""
    with contextlib.suppress(OSError, ValueError):
        print(f"agentdur: {what}", file=sys.stderr, flush=True)
    return INTERRUPTED


def stdout_closed() -> int:
    """Send the rest of stdout nowhere, so the exit's flush raises nothing; 141."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return BROKEN_PIPE


def console_exit(main: Callable[[], int]) -> NoReturn:
    """Run a command's `main()` as a console script and exit with its code."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        code = BROKEN_PIPE
    except KeyboardInterrupt:  # between main's own handlers, or in the final flush
        code = interrupted()
    if code == BROKEN_PIPE:
        stdout_closed()
    if code == INTERRUPTED:  # a second Ctrl-C while the interpreter exits: no traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
