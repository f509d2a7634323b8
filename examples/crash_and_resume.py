"""A workflow killed mid-run resumes where it stopped (offline, SQLite).

    python examples/crash_and_resume.py

The first process runs a 10-step workflow and SIGKILLs itself after step 5 is
checkpointed; the second recovers the run: steps 1-5 come from the recording, 6-10 run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import agentdur

CRASH_AFTER = int(os.environ.get("CRASH_AFTER", "0"))


@agentdur.step
def process_item(i: int) -> str:
    if CRASH_AFTER and i == CRASH_AFTER + 1:
        print(f"  ... SIGKILL while starting step {i}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"  step {i}: executed", flush=True)
    return f"item-{i}"


@agentdur.workflow(name="demo.ten_items")
def ten_items() -> list[str]:
    return [process_item(i) for i in range(1, 11)]


def main() -> int:
    if len(sys.argv) > 1:  # the child process: start or recover the run
        with agentdur.Runtime(sys.argv[1], executor_id="demo") as rt:
            if sys.argv[2] == "start":
                rt.run(ten_items, run_id="demo-run")
            else:
                for handle in rt.recover():
                    print(f"  result: {handle.result()}")
        return 0
    db = Path(tempfile.mkdtemp(prefix="agentdur-demo-")) / "demo.db"
    url = f"sqlite:///{db}"
    print(f"state lives in {db}")
    print("first process (dies after step 5):")
    first = subprocess.run(
        [sys.executable, __file__, url, "start"], env={**os.environ, "CRASH_AFTER": "5"}
    )
    print(f"  exit code {first.returncode} (killed by signal {-first.returncode})")
    print("second process (recovers the run):")
    subprocess.run([sys.executable, __file__, url, "recover"], check=True)
    with agentdur.Runtime(url) as rt:
        run = rt.get_run("demo-run")
        print(f"run {run.run_id}: {run.status}, {len(rt.steps(run.run_id))} steps recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
