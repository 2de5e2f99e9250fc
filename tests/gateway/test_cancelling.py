"""A cancelled MQTT client ends: the cancellation aiomqtt's exit replaces, or Python 3.11's
``wait_for`` loses, is given back (gateway/core/cancelling.py)."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from gateway.core.cancelling import cancel_and_wait, raise_if_cancelling


class GoodbyeFails:
    """Like aiomqtt.Client leaving a broker that does not answer: its exit raises MqttError,
    which takes the place of the cancellation that made it leave."""

    async def __aenter__(self) -> GoodbyeFails:
        return self

    async def __aexit__(self, *exc: object) -> None:
        raise aiomqtt.MqttError("Operation timed out")


async def retry_loop(rounds: list[int], *, give_back: bool, upto: int = 1000) -> None:
    while len(rounds) < upto:
        rounds.append(1)
        try:
            async with GoodbyeFails():
                await asyncio.Event().wait()
        except aiomqtt.MqttError as exc:
            if give_back:
                raise_if_cancelling(exc)
            await asyncio.sleep(0)


async def test_a_retry_loop_that_gives_the_cancellation_back_ends() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(retry_loop(rounds, give_back=True))
    await asyncio.sleep(0)
    await cancel_and_wait(task, again_s=5.0, tries=1)
    assert task.cancelled() and len(rounds) == 1


async def test_one_that_swallows_it_is_named_instead_of_hanging_its_caller() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(retry_loop(rounds, give_back=False, upto=4), name="police")
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="'police' did not end after 3 cancellations"):
        await cancel_and_wait(task, again_s=0.05, tries=3)
    assert len(rounds) == 4  # it reconnected after each
    task.cancel()
    await task  # it has had its four rounds: no task is left behind


async def test_a_lost_cancellation_is_sent_again() -> None:
    losses = 0

    async def loses_the_first() -> None:
        nonlocal losses
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if losses:
                    raise
                losses += 1
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()  # what 3.11's wait_for does when the result raced the cancel

    task = asyncio.create_task(loses_the_first())
    await asyncio.sleep(0)
    await cancel_and_wait(task, again_s=0.05, tries=5)
    assert task.cancelled() and losses == 1


async def test_a_task_that_failed_while_stopping_says_so() -> None:
    async def fails() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise ValueError("broken at the end")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken at the end"):
        await cancel_and_wait(task)
