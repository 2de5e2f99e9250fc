# The board interface: what app.py, startup.py and main.py ask of a board (README.md,
# "Board interface"). A stub, for mypy only: nothing of it is on a unit. board/conform.py
# has mypy check board.esp32.Board and board.virtual.Board against it (part of `make
# typecheck`), so a method one board lacks or takes differently is an error there.
from typing import Any, Protocol

class Input(Protocol):
    """A pin: value() is 1 while active; `flag` (a ThreadSafeFlag, or an Event with its
    interface on the virtual board) is set on every edge."""

    flag: Any
    def value(self) -> int: ...

class Board(Protocol):
    root: str
    """The unit's storage folder (unit.json, unit.key, epoch.a/b, outbox.bin)."""
    code_bytes: int
    """Set by main.py: the heap the firmware's imports took."""

    def uart(self, baud: int) -> Any:
        """A stream: write(buf, off, n), readinto(buf), pollable by asyncio; any() and
        flush() where it has them."""

    def rs485_de(self) -> Any:
        """The RS-485 driver-enable pin (value(level)), or None."""

    def input(self, name: str) -> Input | None:
        """button, checkin, tamper, mains; None if the unit has no such input."""

    def led(self, level: int) -> None: ...
    def buzzer(self, level: int) -> None: ...
    def indicate(self, what: str, name: str) -> None:
        """A pattern change by name ("led"/"buzzer", "idle", ...)."""

    def battery_mv(self) -> int: ...
    def sounder_ok(self) -> bool: ...
    def wdt_start(self, timeout: int) -> None:
        """timeout in ms (machine.WDT's)."""

    def wdt_feed(self) -> None: ...
    def reset_cause(self) -> str:
        """"wdt", "crash" or "power"."""

    def ready(self, epoch: int, count: int) -> None:
        """Running: this boot's epoch, `count` frames reloaded from flash."""

    def log(self, text: str) -> None: ...
    def start(self, app: Any) -> None:
        """Start the tasks the board owns (the virtual board's control channel)."""

    def stop(self) -> None: ...
    def crashed(self, exc: BaseException) -> None:
        """Log and reset (count it as a crash)."""

    def unconfigured(self, reason: str) -> None: ...
    def maintenance(self) -> None:
        """After Ctrl-C: stretch or stop the watchdog for a deploy."""
