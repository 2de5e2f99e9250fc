"""The virtual fleet: real firmware on MicroPython, link relays, a local broker, police, demo."""
