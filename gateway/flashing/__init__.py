"""Putting a unit's firmware, config and key onto an ESP32."""
