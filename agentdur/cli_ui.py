"""`agentdur ui`: serve the web UI (the `agentdur[ui]` extra: Starlette, Uvicorn, Jinja2).

    agentdur ui [--host 127.0.0.1] [--port 7800] [--database-url URL]

Bound to a loopback address (the default) it answers anyone on this machine and only to
the loopback host names. Bound elsewhere it makes a random token, prints the URL that
carries it once, and answers 401 to any request without it (`Authorization: Bearer
TOKEN`, or the cookie the URL sets). The database URL is printed with its password
masked. The UI needs no application code: decisions taken in it are continued by any
executor (a worker, or `Runtime(..., recover=True)`).
"""

from __future__ import annotations

import argparse
import secrets
from typing import Any, TextIO

from agentdur.cli_format import CommandError
from agentdur.store import mask_password

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_ui_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add `ui` to the `agentdur` command's subparsers."""
    cmd = subparsers.add_parser(
        "ui",
        help="serve the web UI: runs, timelines, audit, inbox (needs agentdur[ui])",
        description="Serve the web UI over the database.",
        parents=[parent],
    )
    cmd.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; any other requires the printed token)",
    )
    cmd.add_argument("--port", type=int, default=7800, help="default 7800")
    cmd.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace, out: TextIO) -> int:
    """Serve until Ctrl-C."""
    try:
        import uvicorn

        from agentdur.ui.app import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        raise CommandError(
            f"the web UI needs the ui extra ({exc.name} is missing): pip install 'agentdur[ui]'"
        ) from None
    loopback = args.host in LOOPBACK
    token = None if loopback else secrets.token_urlsafe(24)
    app = create_app(
        args.database_url, token=token, allowed_hosts=LOOPBACK_HOSTS if loopback else None
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"agentdur ui on {url} reading {mask_password(args.database_url)}", file=out)
    if token is not None:
        print(f"open {url}?token={token} (the token is required off loopback)", file=out)
    out.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
