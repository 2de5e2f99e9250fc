"""A cancellation that an MQTT client's exit swallowed, given back to the task that was sent it.

aiomqtt's ``Client.__aexit__`` says goodbye to the broker. When the task running the client
is cancelled (a service stopping, Ctrl-C) while the broker is slow, frozen or already gone,
that goodbye times out and aiomqtt raises ``MqttError`` *in place of* the ``CancelledError``.
Every client here retries on ``MqttError``: caught there, the cancellation is lost and the
client reconnects for ever, so whoever awaits the cancelled task waits for ever (a police
station that never stopped hung CI for an hour; ``demo --serve`` ignored Ctrl-C). The task
still counts the cancellation (``Task.cancelling()``), so each retry loop asks this first.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling(cause: BaseException | None = None) -> None:
    """Raise ``CancelledError`` (from ``cause``) if the current task is being cancelled.

    Call it first in every ``except aiomqtt.MqttError`` of a retry loop, and after any
    await whose cancellation may have been lost (``asyncio.wait_for`` on Python 3.11
    returns a result that raced with a cancel).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


async def cancel_and_wait(
    task: asyncio.Task[object], *, again_s: float = 2.0, tries: int = 30
) -> None:
    """Cancel ``task`` and wait until it has ended.

    The cancellation is sent again every ``again_s`` while the task runs on: Python 3.11's
    ``asyncio.wait_for`` loses one that races with its result (inside aiomqtt's subscribe).

    Raises ``RuntimeError`` naming the task if it still runs after ``tries`` cancellations:
    a stop that never returns would hang its caller (and CI) in silence.
    """
    for _ in range(tries):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=again_s)
        if done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            return
    raise RuntimeError(f"task {task.get_name()!r} did not end after {tries} cancellations")
