# Freeze manifest for the 32-bit unix port that `make firmware32` builds: the firmware
# and asyncio frozen as on an ESP32 image, with the virtual board (ptys, file storage)
# in place of board/esp32.py. Not a module of the firmware (see manifest.py).
include("manifest.py", board="virtual")
