"""Summarise a folder of documents through a rate-limited queue; kill it and start it again.

    python examples/doc_pipeline.py                      # offline: a scripted model
    python examples/doc_pipeline.py --crash-after 5      # SIGKILL itself after 5 summaries...
    python examples/doc_pipeline.py                      # ...and finish the rest, redoing none
    python examples/doc_pipeline.py --model openai:gpt-4.1-mini   # needs OPENAI_API_KEY

Each document of examples/docs/ is one run of the workflow `summarise_doc` in the queue
"summaries": at most 5 run at once and at most --per-minute start per minute, across
every process sharing the database. A run fetches the text (a step), asks the model for a
summary (a step), and writes it to the table `summaries` of the same database with a
transactional step: the row and the step's checkpoint commit together, so a document is
summarised exactly once however often the process dies. The run id is the document's
name (and so is the dedup id), so enqueueing the folder again is idempotent: a restarted
process finds the finished documents finished, resumes the ones it was in the middle of
(its executor id is fixed, so it takes back its own runs at once), and does the rest.

This process serves the queue itself, in a thread, and draws a progress bar meanwhile.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import agentdur
from agentdur.models import Model, OpenAIChat, Scripted, SystemMessage, UserMessage

DOCS = Path(__file__).resolve().parent / "docs"
EXECUTOR_ID = "doc-pipeline"
INSTRUCTIONS = "Summarise the document in one sentence of at most 30 words."
state: dict[str, Any] = {"model": None, "docs": DOCS}
"""What the steps use: the model and the folder of documents (set by main)."""

# -- the workflow ----------------------------------------------------------------------------


@agentdur.step
async def fetch(doc: str) -> str:
    """The document's text (from the folder; a real pipeline would download it)."""
    path: Path = state["docs"] / doc
    return path.read_text("utf-8")


@agentdur.step(retries=3, backoff=2.0)
async def summarise(text: str) -> str:
    model: Model = state["model"]
    messages = [SystemMessage(content=INSTRUCTIONS), UserMessage(content=text)]
    response = await model.request(messages, [])
    return (response.text or "").strip()


@agentdur.transaction
async def store_summary(db: Any, doc: str, summary: str) -> None:
    """One row per document, committed together with this step's checkpoint."""
    mark = "?" if isinstance(db, sqlite3.Connection) else "%s"
    db.execute(f"INSERT INTO summaries (doc, summary) VALUES ({mark}, {mark})", (doc, summary))


@agentdur.workflow(name="doc_pipeline.summarise_doc")
async def summarise_doc(doc: str) -> str:
    text = await fetch(doc)
    summary = await summarise(text)
    await store_summary(doc, summary)
    return summary


# -- the model: scripted offline, or a real one with --model ---------------------------------


def scripted_summary(messages: list[Any], info: Any) -> str:
    """The document's title and first sentence: what a tired model might write."""
    title, _, body = str(messages[-1].content).strip().partition("\n")
    first = re.split(r"(?<=[.!?])\s", " ".join(body.split()), maxsplit=1)[0]
    return f"{title.strip()}: {first}"


def make_model(spec: str, delay: float) -> Model:
    if spec == "scripted":
        return Scripted(scripted_summary, model_name="scripted", delay=delay)
    provider, _, name = spec.partition(":")
    if provider != "openai" or not name:
        sys.exit(f"--model must be scripted or openai:NAME, not {spec!r}")
    if importlib.util.find_spec("openai") is None:
        sys.exit(f"--model {spec} needs the OpenAI SDK: pip install openai")
    if not os.environ.get("OPENAI_API_KEY"):
        sys.exit(f"--model {spec} needs OPENAI_API_KEY in the environment")
    return OpenAIChat(name)


# -- the summaries table ---------------------------------------------------------------------

# No unique constraint on doc, on purpose: exactly once comes from the transactional step.
CREATE_SUMMARIES = "CREATE TABLE IF NOT EXISTS summaries (doc TEXT NOT NULL, summary TEXT)"


def connect(url: str) -> Any:
    """A plain connection to the database (sqlite3 or psycopg), in autocommit mode."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    import psycopg

    return psycopg.connect(url, autocommit=True)


def create_table(url: str) -> None:
    conn = connect(url)
    try:
        conn.execute(CREATE_SUMMARIES)
    finally:
        conn.close()


def read_summaries(url: str) -> list[tuple[str, str]]:
    conn = connect(url)
    try:
        rows = conn.execute("SELECT doc, summary FROM summaries ORDER BY doc").fetchall()
    finally:
        conn.close()
    return [(str(doc), str(summary)) for doc, summary in rows]


# -- progress --------------------------------------------------------------------------------


def progress_bar(done: int, running: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    return f"\r[{bar}] {done}/{total} summarised, {running} in progress "


def counts(rt: agentdur.Runtime, run_ids: list[str]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for run_id in run_ids:
        status = rt.get_run(run_id).status
        tally[status] = tally.get(status, 0) + 1
    return tally


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise documents through a durable queue.")
    parser.add_argument("--database-url", default="sqlite:///demo-state/doc_pipeline.db")
    parser.add_argument("--model", default="scripted", help="scripted (default) or openai:NAME")
    parser.add_argument(
        "--per-minute",
        type=int,
        help="summaries started per minute, across every process (default 120 scripted, 30 "
        "with a real model)",
    )
    parser.add_argument("--delay", type=float, default=0.4, help="scripted model's delay, s")
    parser.add_argument("--crash-after", type=int, default=0, help="SIGKILL after N summaries")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the folder of .txt documents")
    args = parser.parse_args(argv)

    url = args.database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    per_minute = args.per_minute or (120 if args.model == "scripted" else 30)
    queue = agentdur.Queue(
        "summaries", concurrency=5, rate_limit=agentdur.RateLimit(per_minute, 60.0)
    )
    state["model"] = make_model(args.model, args.delay)
    state["docs"] = args.docs.resolve()
    docs = sorted(path.name for path in state["docs"].glob("*.txt"))
    if not docs:
        sys.exit(f"no .txt documents in {state['docs']}")
    print(f"database: {url}\ndocuments: {len(docs)} in {state['docs']}")
    print(f"queue: {queue.name}, at most 5 at once and {per_minute} per minute\n")

    with agentdur.Runtime(url, executor_id=EXECUTOR_ID) as rt:
        create_table(url)
        handles = [
            rt.enqueue(summarise_doc, doc, queue=queue, run_id=doc, dedup_id=doc) for doc in docs
        ]
        run_ids = [h.run_id for h in handles]
        done_before = counts(rt, run_ids).get("SUCCEEDED", 0)
        if done_before:
            print(f"{done_before} of {len(docs)} already summarised by an earlier process")
        worker = agentdur.Worker(rt, [queue], grace=10.0)
        serving = threading.Thread(target=worker.run, name="doc-pipeline-worker", daemon=True)
        serving.start()
        try:
            while True:
                tally = counts(rt, run_ids)
                done = sum(tally.get(status, 0) for status in ("SUCCEEDED", "FAILED"))
                running = tally.get("RUNNING", 0) + tally.get("PENDING", 0)
                print(progress_bar(done, running, len(docs)), end="", flush=True)
                if args.crash_after and done - done_before >= args.crash_after:
                    print(f"\n... {done - done_before} summarised in this process: SIGKILL")
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                if done == len(docs):
                    break
                time.sleep(0.1)
        finally:
            worker.stop()
            serving.join(timeout=30)
        print()
        failed = [h.run_id for h in handles if h.status() == "FAILED"]
    rows = read_summaries(url)
    print(f"\ntable summaries ({len(rows)} rows):")
    for doc, summary in rows:
        text = summary if len(summary) <= 80 else summary[:77] + "..."
        print(f"  {doc:16} {text}")
    if failed:
        print(f"\nfailed: {', '.join(failed)} (see `agentdur runs show RUN_ID`)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
