"""Signing keys and envelopes, the broker's private CA, Mosquitto configuration."""
