"""Durable messages: `recv` inside a run, `Runtime.send` from anywhere.

A `recv` is a step of kind `recv` named after its topic. It consumes the oldest message
on the topic and records it, in one transaction; when there is none, the step is
recorded WAITING and the run is released (status WAITING, no owner, no thread held)
until a message arrives or its timeout passes. `send` stores the message and makes a
WAITING run runnable; any executor then continues it by replaying its recording.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from agentdur import codec
from agentdur.context import ReplayStopped, current_run
from agentdur.kernel import Action, Requested
from agentdur.store import StepInfo


def recv(topic: str, timeout: float | None = None) -> Coroutine[Any, Any, Any]:
    """Wait durably for the next message on `topic`; None if `timeout` seconds pass first.

    Use as `value = await agentdur.recv("topic")`; the step index is taken at the call.
    """
    ctx = current_run("agentdur.recv")
    index = ctx.next_index()

    async def receiving() -> Any:
        decision = ctx.look_up(Requested(index, topic, "recv"))
        recorded = decision.recorded
        if decision.action is Action.REPLAY and recorded is not None:
            return recorded.output
        if ctx.replay:
            raise ReplayStopped
        now = ctx.clock()
        if recorded is not None:
            started, until_text = recorded.started_at, (recorded.input or {}).get("until")
            until = datetime.fromisoformat(until_text) if until_text else None
        else:
            started = now
            until = now + timedelta(seconds=timeout) if timeout is not None else None
        input_data = {"topic": topic, "timeout": timeout, "until": until and until.isoformat()}
        step = StepInfo(
            run_id=ctx.run_id,
            step_index=index,
            name=topic,
            kind="recv",
            status="SUCCEEDED",
            started_at=started,
            finished_at=now,
        )
        expired = until is not None and now >= until
        input_json = codec.dumps(input_data)
        found, value = await ctx.write(
            lambda: ctx.store.take_or_wait(
                step,
                epoch=ctx.epoch,
                topic=topic,
                consume=True,
                input_json=input_json,
                wake_at=until,
                wait=not expired,
            )
        )
        if found:  # recorded by take_or_wait, with the message it consumed
            ctx.remember(replace(step, input=input_data, output=value))
            return value
        if expired:
            await ctx.arecord(step, input_data=input_data, output_data=None)
            return None
        ctx.waiting()

    return receiving()
