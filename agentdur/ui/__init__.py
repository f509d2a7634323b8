"""The web UI (`agentdur ui`, the `agentdur[ui]` extra): runs, timelines, audit, inbox.

Server-rendered pages (Starlette, Jinja2, one small script for live refresh) over the
store's read API; see app.py for the routes and the security model and docs/ui.md for
users.
"""
