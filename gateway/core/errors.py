"""The gateway's small exception hierarchy."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class UsageError(GatewayError):
    """What a person typed is wrong (an option, an argument, a file it names): exit status 2.

    The message is one line naming the bad thing and what to do.
    """


class ConfigError(GatewayError):
    """boards.yaml (or another config file) is broken; the message names file, entry and field."""

    def __init__(self, path: str, where: str, field: str | None, problem: str) -> None:
        """``field`` None: the problem is the file's or a line's, not one field's."""
        named = f"field '{field}': " if field is not None else ""
        super().__init__(f"{path}: {where}: {named}{problem}")
        self.path = path
        self.where = where
        self.field = field
        self.problem = problem


class KeyMissingError(UsageError):
    """A unit's key file is missing or unreadable (run keygen first): exit status 2."""


class LinkError(GatewayError):
    """A serial link cannot be opened or has gone away."""
