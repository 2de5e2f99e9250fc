# Freeze manifest: an ESP32 MicroPython image with the CampusGuard firmware in flash.
# Frozen bytecode, constants and qstrs execute from flash and cost no heap; what stays
# in RAM is the function and class objects made at import, and the unit's data.
#
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/campusguard/firmware/manifest.py
#   make BOARD=ESP32_GENERIC deploy PORT=/dev/ttyUSB0
#   campusguard deploy UNIT --port /dev/ttyUSB0 --config-only
#
# `--config-only` writes main.py, unit.json, unit.key (and the installation-test marker)
# and removes firmware modules left on the filesystem, which would shadow the frozen ones
# ('' comes before '.frozen' in sys.path). main.py stays a file: it picks the board.
# `manifest_virtual.py` includes this one with board="virtual": the 32-bit unix port
# that `make firmware32` builds, the ESP32 image's stand-in on a host.
# Not a module of the firmware: vboard/deploy never copy it, mypy does not check it.
options.defaults(board="esp32")  # include(..., board=...) sets options.board

if options.board == "esp32":
    include("$(PORT_DIR)/boards/manifest.py")  # the port's own: asyncio and friends
else:
    include("$(MPY_DIR)/extmod/asyncio")  # the unix port's variant manifest is replaced

for _name in (
    "app.py",
    "button.py",
    "checkin.py",
    "counter.py",
    "feedback.py",
    "link.py",
    "outbox.py",
    "proto.py",
    "sleeper.py",
    "startup.py",
    "storage.py",
):
    module(_name)
package("board", files=("__init__.py", options.board + ".py"))
