"""The gateway's small exception hierarchy."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """boards.yaml (or another config file) is broken; the message names file, entry and field."""

    def __init__(self, path: str, where: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: {where}: field '{field}': {problem}")
        self.path = path
        self.where = where
        self.field = field
        self.problem = problem


class KeyMissingError(GatewayError):
    """A unit's key file is missing or unreadable."""


class LinkError(GatewayError):
    """A serial link cannot be opened or has gone away."""
