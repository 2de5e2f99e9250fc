# Scheduling on public asyncio only: a task that sleeps until its next deadline and is
# still hurried along when work arrives (the outbox when a frame is added, the feedback
# when a pattern is shown). An Event and a cancellable timer task, as Peter Hinch's
# Delay_ms does; asyncio.core's internals (_task_queue, cur_task, _io_queue) are not
# API, and a MicroPython upgrade may change them.
#
# Cost (bench/sched.py): a timed sleep makes a timer Task and its coroutine, and the
# Event's wait() a generator; a wake before the deadline cancels the timer (one
# CancelledError). An untimed sleep (nothing to do: wait for wake()) makes only the
# wait() generator, so an idle unit allocates nothing while it sleeps.
import asyncio


class Sleeper:
    """Sleep until a deadline or until wake(): for the one task that owns it, which is
    also the owner of the timer task (started and cancelled in sleep_ms())."""

    def __init__(self):
        self._ev = asyncio.Event()

    async def _ring(self, ms):
        await asyncio.sleep_ms(ms)
        self._ev.set()

    async def sleep_ms(self, ms):
        """Sleep ms (ms < 0: until woken), or less if wake() comes first (or came since
        the last sleep)."""
        ev = self._ev
        if not ev.is_set():
            timer = None if ms < 0 else asyncio.create_task(self._ring(ms))
            try:
                await ev.wait()
            finally:
                if timer is not None:
                    timer.cancel()  # done already if it rang: then a no-op
        ev.clear()

    def wake(self):
        """End the current (or the next) sleep now. Allocates nothing."""
        self._ev.set()
