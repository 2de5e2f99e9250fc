# CampusGuard alarm unit. Stays source on the board (deploy compiles the rest to .mpy).
# No functions here: this module's code stays in RAM while the unit runs.
import gc
import sys

gc.collect()
_before = gc.mem_alloc()
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
    _code = gc.mem_alloc() - _before
    _board = Board(*_args)
    _board.code_bytes = _code
    gc.collect()
    app.main(_board)
