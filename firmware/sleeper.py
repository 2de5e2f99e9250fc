# Scheduling on public asyncio only: a task that sleeps until its next deadline and is
# still hurried along when work arrives (the outbox when a frame is added, the feedback
# when a pattern is shown). asyncio.core's internals (_task_queue, cur_task, _io_queue)
# are not API, and a MicroPython upgrade may change them.
#
# Allocation: the one public wait that allocates nothing is asyncio.sleep_ms (a singleton
# generator), and only cancel() cuts it short, which throws a new CancelledError. An
# Event's wait() makes a generator per call; its set() makes nothing. So a timed sleep is
# a run of sleep_ms calls of at most hurry_ms each (the owner picks it per sleep), and a
# wake() during one is seen when it ends: no allocation, at the price of up to hurry_ms
# of delay and a pass of the loop every hurry_ms of a long sleep. An untimed sleep
# (nothing to do until wake()) waits on the Event: its generator is made as the task goes
# to sleep, not when it is woken. So a wake-up from idle (a press: the outbox sends, the
# feedback shows it) and every timed step after it allocate nothing (bench/sched.py); a
# timer task per timed sleep and a CancelledError per early wake cost 416 B per wake-up
# on the 64-bit port and 208 B on frozen32 before.
import asyncio


class Sleeper:
    """What the one task that owns it awaits between two passes of its loop: until a
    deadline or until wake(). The owner's loop works out its next deadline every pass,
    so a long wait is simply several passes."""

    def __init__(self):
        self._ev = asyncio.Event()

    def sleep_ms(self, ms, hurry_ms):
        """An awaitable: sleep ms, at most hurry_ms (ms < 0: until woken); none at all
        if wake() came since the last one. Not itself a coroutine: calling one would
        make a generator each time."""
        ev = self._ev
        if ev.is_set():
            ev.clear()
            return asyncio.sleep_ms(0)
        if ms < 0:
            return ev.wait()  # a generator, made now: as the task goes idle
        return asyncio.sleep_ms(ms if ms < hurry_ms else hurry_ms)

    def wake(self):
        """End the current untimed sleep, and make the next sleep none. Allocates
        nothing."""
        self._ev.set()
