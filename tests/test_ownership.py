"""Telling a dead owner on this host from a live one (executor identity)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from agentdur.ownership import ProcessIdentity, is_dead, process_started, this_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_live_process_is_alive_and_an_exited_one_dead() -> None:
    me = this_process()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_started(child.pid)
        assert started is not None
        assert not is_dead(child.pid, started, me)
    finally:
        child.kill()
        child.wait()
    assert is_dead(child.pid, started, me)


def test_an_exited_process_its_parent_has_not_reaped_is_dead() -> None:
    """A zombie (a worker whose supervisor has not called wait yet) runs no code: its
    runs are taken at once, not after their lease."""
    me = this_process()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_started(child.pid)
    assert started is not None
    try:
        for _ in range(500):  # until it has exited (it stays a zombie: no wait yet)
            with open(f"/proc/{child.pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the child did not exit")
        assert is_dead(child.pid, started, me)
    finally:
        child.wait()


def test_a_reused_pid_is_told_apart_by_its_start_time() -> None:
    me = this_process()
    assert me.started is not None
    namespace = me.started.rpartition(":")[0]
    # Our own pid, recorded by another executor id with another start time: a process
    # that had this pid before us (a restarted container's pid 1, say).
    assert is_dead(me.pid, f"{namespace}:1", me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert is_dead(child.pid, f"{namespace}:1", me)  # the pid lives, but it is not it
    finally:
        child.kill()
        child.wait()


def test_another_pid_namespace_is_never_judged() -> None:
    me = this_process()
    other_container = "pid:[1]:12345"
    assert not is_dead(999_999_999, other_container, me)
    unknown = ProcessIdentity(me.host, me.pid, None)
    assert not is_dead(999_999_999, me.started, unknown)


def test_another_runtime_of_this_process_is_alive() -> None:
    me = this_process()
    assert not is_dead(me.pid, me.started, me)
