"""Frames -> events -> incidents -> outbox: the gateway's decisions, and the watchers' ports."""
