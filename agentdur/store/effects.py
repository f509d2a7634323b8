"""Store operations of the effect ledger, of suspended runs and of durable messages.

Each method is one short transaction that writes a step together with what it
depends on (the ledger entry, the run's release, the consumed message), so the two can
never disagree after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from agentdur.errors import FencedError
from agentdur.store.core import Cursor, Effect, StepInfo, StoreCore, _dumps


class EffectOps(StoreCore):
    """The effect ledger, suspension and resolution, and messages."""

    def begin_effect(
        self, step: StepInfo, *, epoch: int, key: str, input_json: str, now: datetime
    ) -> Effect | None:
        """Claim the ledger entry of a side effect and record its step STARTED, together.

        Returns None when the entry is ours (new, or from an earlier attempt of this very
        step), else the entry another step holds under the same key. When that entry is
        DONE, the step is recorded SUCCEEDED with the entry's result and marked
        deduplicated, replacing a WAITING placeholder (an approval) so that every column
        is written; when it is STARTED, nothing is written.
        """
        with self.transaction() as cur:
            cur.execute(
                self.sql.BEGIN_EFFECT,
                {
                    "idempotency_key": key,
                    "run_id": step.run_id,
                    "step_index": step.step_index,
                    "tool": step.name,
                    "now": self._time_param(now),
                },
            )
            if cur.rowcount != 1:
                cur.execute(self.sql.GET_EFFECT, {"idempotency_key": key})
                row = cur.fetchone()
                assert row is not None
                existing = Effect(
                    key=row[0],
                    run_id=row[1],
                    step_index=row[2],
                    tool=row[3],
                    status=row[4],
                    result=self._json_value(row[5]),
                )
                if (existing.run_id, existing.step_index) != (step.run_id, step.step_index):
                    if existing.status == "DONE":
                        keys = {"run_id": step.run_id, "step_index": step.step_index}
                        cur.execute(self.sql.DELETE_STARTED_STEP, keys)
                        done = replace(step, status="SUCCEEDED", finished_at=now, deduplicated=True)
                        output = None if existing.result is None else _dumps(existing.result)
                        self._step_write(cur, done, epoch, input_json, output, None)
                    return existing
            self._step_write(cur, step, epoch, input_json, None, None)
        return None

    def finish_effect(
        self,
        step: StepInfo,
        *,
        epoch: int,
        key: str,
        input_json: str | None,
        output_json: str,
        now: datetime,
    ) -> None:
        """Mark the ledger entry DONE with its result and record the step, together."""
        with self.transaction() as cur:
            cur.execute(
                self.sql.FINISH_EFFECT,
                {
                    "idempotency_key": key,
                    "result": self._json_param(output_json),
                    "now": self._time_param(now),
                },
            )
            self._step_write(cur, step, epoch, input_json, output_json, None)

    def release_effect(
        self, step: StepInfo, *, epoch: int, key: str, input_json: str | None, error_json: str
    ) -> None:
        """The tool raised: free the ledger entry and record the step's error, together."""
        with self.transaction() as cur:
            cur.execute(
                self.sql.RELEASE_EFFECT,
                {"idempotency_key": key, "run_id": step.run_id, "step_index": step.step_index},
            )
            self._step_write(cur, step, epoch, input_json, None, error_json)

    def suspend_run(
        self,
        run_id: str,
        *,
        epoch: int,
        status: str,
        wake_at: datetime | None,
        error_json: str | None = None,
        step: StepInfo | None = None,
        input_json: str | None = None,
        steps: Sequence[tuple[StepInfo, str | None]] = (),
    ) -> None:
        """Release a run as WAITING or NEEDS_ATTENTION, optionally recording steps with
        it (`step` with its `input_json`, and each `(step, input_json)` of `steps`)."""
        with self.transaction() as cur:
            if step is not None:
                self._step_write(cur, step, epoch, input_json, None, None)
            for other, other_input in steps:
                self._step_write(cur, other, epoch, other_input, None, None)
            cur.execute(
                self.sql.SUSPEND_RUN,
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "status": status,
                    "wake_at": self._time_param(wake_at),
                    "error": self._json_param(error_json),
                },
            )
            if cur.rowcount != 1:
                raise FencedError(run_id, epoch)

    def resolve_step(
        self,
        run_id: str,
        step_index: int,
        *,
        action: str,
        output_json: str | None,
        error_json: str | None,
        now: datetime,
    ) -> StepInfo:
        """Apply an operator's decision on a step and make its run runnable again.

        The run must be NEEDS_ATTENTION (or WAITING) and the step STARTED or WAITING;
        otherwise `ValueError` says which. A run stopped at several STARTED steps stays
        NEEDS_ATTENTION until the last of them is resolved. Returns the step as it was.
        """
        with self.transaction() as cur:
            cur.execute(self.sql.LOCK_RUN, {"run_id": run_id})
            run_row = cur.fetchone()
            if run_row is None or run_row[0] not in ("NEEDS_ATTENTION", "WAITING"):
                raise ValueError(f"run is {run_row[0] if run_row else 'missing'}")
            cur.execute(self.sql.GET_STEP, {"run_id": run_id, "step_index": step_index})
            row = cur.fetchone()
            if row is None:
                raise ValueError(f"step {step_index} is not recorded")
            step = self._step(row)
            if step.status not in ("STARTED", "WAITING"):
                raise ValueError(f"step {step_index} is {step.status}, not waiting for a decision")
            keys = {"run_id": run_id, "step_index": step_index}
            effect = {"idempotency_key": step.idempotency_key, **keys}
            if action == "retry":
                cur.execute(self.sql.RELEASE_EFFECT, effect)
                cur.execute(self.sql.DELETE_STARTED_STEP, keys)
            elif action == "result":
                # Only this step's own entry: a step stopped because another step held
                # its key (see ToolExecution) must not settle that step's entry.
                cur.execute(self.sql.GET_EFFECT, {"idempotency_key": step.idempotency_key})
                entry = cur.fetchone()
                if entry is not None and (entry[1], entry[2]) == (run_id, step_index):
                    cur.execute(
                        self.sql.FINISH_EFFECT,
                        {
                            **effect,
                            "result": self._json_param(output_json),
                            "now": self._time_param(now),
                        },
                    )
                self._resolve(cur, keys, "SUCCEEDED", output_json, None, now)
            else:
                cur.execute(self.sql.RELEASE_EFFECT, effect)
                self._resolve(cur, keys, "ERROR", None, error_json, now)
            cur.execute(self.sql.COUNT_STARTED_STEPS, {"run_id": run_id})
            unsettled = cur.fetchone()
            if run_row[0] == "WAITING" or not unsettled or not unsettled[0]:
                cur.execute(self.sql.RELEASE_WAITING_RUN, {"run_id": run_id})
        return self.unpacked([step])[0]

    def _resolve(
        self,
        cur: Cursor,
        keys: dict[str, Any],
        status: str,
        output_json: str | None,
        error_json: str | None,
        now: datetime,
    ) -> None:
        cur.execute(
            self.sql.RESOLVE_STEP,
            {
                **keys,
                "status": status,
                "output": self._json_param(output_json),
                "error": self._json_param(error_json),
                "now": self._time_param(now),
            },
        )

    def send_message(
        self, run_id: str, topic: str, *, value_json: str, now: datetime
    ) -> str | None:
        """Deliver a message to a run; a WAITING run becomes runnable. Returns its status."""
        with self.transaction() as cur:
            cur.execute(self.sql.LOCK_RUN, {"run_id": run_id})
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(self.sql.NEXT_MESSAGE_SEQ, {"run_id": run_id})
            seq_row = cur.fetchone()
            assert seq_row is not None
            cur.execute(
                self.sql.SEND_MESSAGE,
                {
                    "run_id": run_id,
                    "seq": seq_row[0],
                    "topic": topic,
                    "value": self._json_param(value_json),
                    "now": self._time_param(now),
                },
            )
            if row[0] == "WAITING":
                cur.execute(self.sql.RELEASE_WAITING_RUN, {"run_id": run_id})
            return str(row[0])

    def take_or_wait(
        self,
        step: StepInfo,
        *,
        epoch: int,
        topic: str,
        consume: bool,
        input_json: str | None,
        wake_at: datetime | None,
        wait: bool = True,
    ) -> tuple[bool, Any]:
        """Take a message for a step, or suspend the run WAITING for one, atomically.

        With `consume`, the oldest unconsumed message on `topic` is consumed and the step
        recorded SUCCEEDED with it (recv); without, the newest message is only read (a
        decision such as an approval). When there is none and `wait`, the step is
        recorded WAITING and the run released until a message or `wake_at`. The run row
        is locked first, so a message sent meanwhile is never missed.
        """
        with self.transaction() as cur:
            cur.execute(self.sql.LOCK_RUN, {"run_id": step.run_id})
            keys = {"run_id": step.run_id, "topic": topic}
            cur.execute(self.sql.TAKE_MESSAGE if consume else self.sql.LATEST_MESSAGE, keys)
            row = cur.fetchone()
            if row is not None:
                if not consume:
                    return True, self._json_value(row[0])
                cur.execute(self.sql.CONSUME_MESSAGE, {"run_id": step.run_id, "seq": row[0]})
                value = self._json_value(row[1])
                output = None if row[1] is None else _dumps(value)
                self._step_write(cur, step, epoch, input_json, output, None)
                return True, value
            if wait:
                waiting = replace(step, status="WAITING", finished_at=None)
                self._step_write(cur, waiting, epoch, input_json, None, None)
                cur.execute(
                    self.sql.SUSPEND_RUN,
                    {
                        "run_id": step.run_id,
                        "epoch": epoch,
                        "status": "WAITING",
                        "wake_at": self._time_param(wake_at),
                        "error": None,
                    },
                )
                if cur.rowcount != 1:
                    raise FencedError(step.run_id, epoch)
            return False, None

    def latest_message(self, run_id: str, topic: str) -> tuple[bool, Any]:
        """The newest message on a topic without consuming it (decisions such as approval)."""
        with self.statement() as cur:
            cur.execute(self.sql.LATEST_MESSAGE, {"run_id": run_id, "topic": topic})
            row = cur.fetchone()
        return (False, None) if row is None else (True, self._json_value(row[0]))
