# Firmware version, sent in HEARTBEAT `fw` as major << 8 | minor.
from micropython import const

MAJOR = const(1)
MINOR = const(0)
FW = const((MAJOR << 8) | MINOR)
