# Host-only, never on a unit (gateway.flashing.unitfiles.HOST_ONLY): mypy checks both boards against
# the board interface, the Protocol in board/iface.pyi.
from board.esp32 import Board as Esp32Board
from board.iface import Board
from board.virtual import Board as VirtualBoard


def esp32(b: Esp32Board) -> Board:
    return b


def virtual(b: VirtualBoard) -> Board:
    return b
