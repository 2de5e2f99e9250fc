# Boards: esp32.py (the real unit; the only module that imports machine/esp32) and
# virtual.py (the MicroPython unix port on a host, driven through ptys). Both offer the
# same small interface, documented in firmware/README.md ("Board interface").
