# CampusGuard alarm unit. Stays source on the board (deploy compiles the rest to .mpy).
import gc
import sys


def _board_class():
    if sys.platform == "esp32":
        from board.esp32 import Board

        return Board
    from board.virtual import Board

    return Board


def _make(board_class):
    return board_class() if sys.platform == "esp32" else board_class(sys.argv[1:])


def _main():
    gc.collect()
    before = gc.mem_alloc()
    board_class = _board_class()
    try:
        import app
    except Exception as e:  # a broken module on flash: reset (and count it) like a crash
        _make(board_class).crashed(e)
        return
    gc.collect()
    # the firmware's code as loaded into the heap (on an ESP32 with the modules frozen or
    # on ROMFS, only their function and class objects): bench/firmware.py reports it
    code = gc.mem_alloc() - before
    board = _make(board_class)
    board.code_bytes = code
    gc.collect()
    app.main(board)


_main()
