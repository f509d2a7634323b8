"""The kernel's decision table: recorded step x requested step -> action (no I/O)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agentdur.kernel import Action, Requested, decide
from agentdur.store import StepInfo

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _step(status: str, name: str = "charge", kind: str = "tool", request_hash: str | None = None):
    return StepInfo(
        run_id="r",
        step_index=3,
        name=name,
        kind=kind,
        status=status,
        request_hash=request_hash,
        started_at=NOW,
    )


CHARGE = Requested(3, "charge", "tool")


def _decide(recorded, requested=CHARGE, *, replaying=False, complete=False):
    return decide(recorded, requested, replaying=replaying, complete=complete, last_index=2)


@pytest.mark.parametrize(
    ("recorded", "replaying", "complete", "action"),
    [
        (None, False, False, Action.EXECUTE),  # live: nothing recorded, run it
        (None, True, False, Action.STOP),  # replay of an unfinished run reached its end
        (None, True, True, Action.DIVERGE),  # replay of a finished run asks for more
        (_step("SUCCEEDED"), False, False, Action.REPLAY),
        (_step("ERROR"), False, False, Action.REPLAY),  # a recorded error is replayed too
        (_step("SUCCEEDED"), True, True, Action.REPLAY),
        (_step("STARTED"), False, False, Action.RESUME),  # a side effect cut off mid-call
        (_step("WAITING"), False, False, Action.RESUME),  # waiting for a reviewer
    ],
)
def test_decision_table(recorded, replaying, complete, action) -> None:
    decision = _decide(recorded, replaying=replaying, complete=complete)
    assert decision.action is action
    assert decision.recorded is recorded


def test_another_step_at_the_index_diverges_and_says_what_is_recorded() -> None:
    decision = _decide(_step("SUCCEEDED", name="refund"))
    assert (decision.action, decision.found) == (Action.DIVERGE, "tool 'refund'")
    decision = _decide(_step("SUCCEEDED", kind="step"))
    assert (decision.action, decision.found) == (Action.DIVERGE, "step 'charge'")


def test_a_finished_replay_that_asks_for_more_names_where_the_recording_ends() -> None:
    decision = _decide(None, replaying=True, complete=True)
    assert decision.found == "no step (the recording ends at step 2)"


def test_an_llm_step_with_another_request_diverges() -> None:
    recorded = _step("SUCCEEDED", name="gpt", kind="llm", request_hash="a" * 64)
    same = Requested(3, "gpt", "llm", request_hash="a" * 64)
    other = Requested(3, "gpt", "llm", request_hash="b" * 64)
    assert _decide(recorded, same).action is Action.REPLAY
    decision = _decide(recorded, other)
    assert decision.action is Action.DIVERGE
    assert decision.found == f"llm 'gpt' with request hash {'a' * 12}"


def test_a_retry_after_longer_than_max_delay_is_capped() -> None:
    from agentdur import ModelHTTPError
    from agentdur.retry import RetryPolicy

    policy = RetryPolicy(retries=3, max_delay=30.0)
    an_hour = ModelHTTPError("slow down", status_code=429, retryable=True, retry_after=3600)
    assert policy.delay(1, an_hour) == 30.0
    a_second = ModelHTTPError("slow down", status_code=429, retryable=True, retry_after=1)
    assert policy.delay(1, a_second) == 1.0


# -- issue 10 items 3 and 4: a replay resumes nothing; other arguments diverge ---------


@pytest.mark.parametrize("status", ["STARTED", "WAITING"])
def test_a_replay_stops_at_a_step_it_would_have_to_resume(status: str) -> None:
    # Resuming settles the step (a reconcile hook, a reviewer's decision): user I/O.
    recorded = _step(status)
    decision = _decide(recorded, replaying=True)
    assert (decision.action, decision.recorded) == (Action.STOP, recorded)


def test_a_step_called_with_other_arguments_diverges() -> None:
    wanted = Requested(3, "charge", "step", input_hash="b" * 64)
    decision = _decide(_step("SUCCEEDED", kind="step", request_hash="a" * 64), wanted)
    assert (decision.action, decision.found) == (
        Action.DIVERGE,
        "step 'charge' with input hash aaaaaaaaaaaa",
    )
    same = _decide(_step("SUCCEEDED", kind="step", request_hash="b" * 64), wanted)
    assert same.action is Action.REPLAY


def test_a_step_recorded_without_an_input_hash_is_not_compared() -> None:
    # Recordings made before input hashes were kept replay as before.
    wanted = Requested(3, "charge", "step", input_hash="b" * 64)
    assert _decide(_step("SUCCEEDED", kind="step"), wanted).action is Action.REPLAY
