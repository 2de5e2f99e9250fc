# CampusGuard alarm unit. Stays source on the board (deploy compiles the rest to .mpy).
# No functions here: this module's code stays in RAM while the unit runs.
#
# The wiring: the board (picked by sys.platform), app (the unit's logic) and startup
# (boot-only: config, epoch, outbox reload, boot frames, tasks). startup imports app,
# never the other way; startup is dropped from sys.modules once the unit runs, so its
# code is freed after boot.
import gc
import sys

gc.collect()
_code = gc.mem_alloc()
if sys.platform == "esp32":
    from board.esp32 import Board

    _args: tuple = ()
else:
    from board.virtual import Board  # type: ignore[assignment]

    _args = (sys.argv[1:],)
try:
    import app
except Exception as e:  # a broken module on flash: reset (and count it) like a crash
    Board(*_args).crashed(e)
else:
    gc.collect()
    # the firmware's code as loaded into the heap (on an ESP32 with the modules frozen or
    # on ROMFS, only their function and class objects): bench/firmware.py reports it
    _code = gc.mem_alloc() - _code
    _board = Board(*_args)
    _board.code_bytes = _code
    import asyncio

    _unit = None
    _coro = None
    try:
        import startup
    except Exception as e:  # a broken module on flash: a crash, like app's
        _board.crashed(e)
    else:
        _unit = startup.build(_board)  # None: unconfigured (the board was told)
        _coro = None if _unit is None else _unit.run(startup.boot)
        del startup
        sys.modules.pop("startup", None)
    gc.collect()
    if _unit is not None and _coro is not None:
        try:
            asyncio.run(_coro)
        except KeyboardInterrupt:
            _unit.stop()
            _board.maintenance()
        except Exception as e:  # any bug: log it and restart clean, as the watchdog would
            _board.crashed(e)
