"""A 10-step workflow for crash tests: each step appends its number to a file.

Run as `python ten_steps.py start|recover DATABASE_URL OUT_FILE`. With BLOCK_AT=k the
k-th step blocks before doing anything, so the test can SIGKILL the process right
after step k-1 is checkpointed. CODE_VERSION=v2 changes the step called at index 3,
standing for a code change deployed between the crash and the recovery.
"""

from __future__ import annotations

import os
import sys
import time

import agentdur

BLOCK_AT = int(os.environ.get("BLOCK_AT", "0"))
VERSION = os.environ.get("CODE_VERSION", "v1")
OUT = sys.argv[3] if len(sys.argv) > 3 else os.devnull


def _append(i: int) -> int:
    if i == BLOCK_AT:
        print(f"blocking at step {i}", flush=True)
        time.sleep(3600)
    with open(OUT, "a") as f:
        f.write(f"{i}\n")
        f.flush()
        os.fsync(f.fileno())
    return i


@agentdur.step
def append(i: int) -> int:
    return _append(i)


@agentdur.step
def append_differently(i: int) -> int:
    return _append(i)


@agentdur.workflow(name="crash.ten_steps")
def ten_steps() -> list[int]:
    done = []
    for i in range(1, 11):
        if VERSION == "v2" and i == 4:
            done.append(append_differently(i))
        else:
            done.append(append(i))
    return done


def main() -> int:
    mode, url = sys.argv[1], sys.argv[2]
    with agentdur.Runtime(url, executor_id="crash-test") as rt:
        if mode == "start":
            print(rt.run(ten_steps, run_id="crash-run"), flush=True)
            return 0
        for handle in rt.recover():
            try:
                print(handle.result(timeout=60), flush=True)
            except agentdur.NonDeterminismError as exc:
                print(f"diverged: {exc}", flush=True)
                return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
