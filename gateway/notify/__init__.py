"""Reaching people: SMS through a GSM modem to the people on a ladder."""
