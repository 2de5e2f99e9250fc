"""Shared by every room: boards.yaml, errors, clocks, Contact ID, broker settings, credentials."""
