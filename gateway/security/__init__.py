"""Signing keys and envelopes, the broker's private CA, Mosquitto and NATS cluster configuration."""
