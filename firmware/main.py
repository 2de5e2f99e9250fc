# CampusGuard alarm unit. Stays source on the board (deploy compiles the rest to .mpy).
import gc
import sys


def _board():
    if sys.platform == "esp32":
        from board.esp32 import Board

        return Board()
    from board.virtual import Board

    return Board(sys.argv[1:])


def _main():
    board = _board()
    gc.collect()
    import app

    gc.collect()
    app.main(board)


_main()
