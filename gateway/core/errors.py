"""Every exception class of the gateway, in one place (grouped by the room that raises it).

:class:`GatewayError` is the base of what the gateway raises on purpose; a
:class:`UsageError` or :class:`ConfigError` reaching the cli is one line and exit status 2.
A few are not GatewayErrors on purpose: :class:`AckRejected` and :class:`EnvelopeError` are
verdicts on a message from the broker (counted, never shown to a person as a failure),
:class:`LoginRefused` is the web duty room's verdict on a login (answered with the form),
:class:`ExpectationFailed` is an ``AssertionError`` so that a test using the police
emulator fails, :class:`ReportError` and :class:`Frozen32BuildError` are caught by their own
command. The protocol's errors are in ``protocol/errors.py`` (the protocol imports nothing
of the gateway).
"""

from __future__ import annotations

import aiomqtt


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


# link
class LinkError(GatewayError):
    """A serial link cannot be opened or has gone away."""


# journal
class StoreError(GatewayError):
    """The journal cannot be opened or written."""


# relay
class DuplicateGatewayError(GatewayError):
    """Another instance of this gateway (same id, same signing key) is publishing."""


class AckRejected(Exception):
    """An ack the gateway does not act on; ``reason`` is counted in the forgery event."""

    def __init__(self, reason: str, detail: str = "", kid: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.kid = kid


# security
class EnvelopeError(ValueError):
    """A payload that is not a valid signed envelope; ``reason`` says why (for counting)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class KeyFileError(UsageError):
    """A signing key file is missing, unreadable or not an Ed25519 key: exit status 2."""


# arc
class DC09Error(GatewayError):
    """A frame or key that is not valid DC-09 (the message says why)."""


# video
class CameraCredentialError(GatewayError):
    """A camera's credential file is missing or not ``user:password``."""


# notify
class ModemError(GatewayError):
    """A modem command failed: ERROR, ``+CMS ERROR``, no answer, or the port is down."""


class PduError(ValueError):
    """An SMS PDU from the modem that cannot be decoded (untrusted input: counted)."""


# dutyroom
class RoomError(GatewayError):
    """An operator's request the web duty room cannot do; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class LoginRefused(Exception):
    """A login to the web duty room that did not succeed; ``retry_after`` when throttled.

    A verdict on what a browser sent (audited, answered with the login page), not a failure.
    """

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ReportError(Exception):
    """The report cannot be made (missing database, not a journal, bad arguments)."""


# flashing
class FirmwareBuildError(GatewayError):
    """The firmware could not be compiled (mpy-cross) or packed into a ROMFS image."""


class DeployError(GatewayError):
    """A deploy step failed; the message says which and why, in one line."""


# cli
class BackupError(GatewayError):
    """The copy could not be made or did not check out."""


# sim
class VirtualUnitError(GatewayError):
    """The virtual unit could not start, or did not do what was asked in time."""


class FleetError(GatewayError):
    """The fleet could not be built or did not do what was asked."""


class BrokerMissingError(GatewayError):
    """Mosquitto is not installed."""


class BrokerStartError(GatewayError):
    """Mosquitto did not start or did not listen in time."""


class NatsMissingError(GatewayError):
    """No nats-server executable (gateway/sim/natscluster.py)."""


class NatsStartError(GatewayError):
    """A cluster node did not start or did not become ready in time."""


class CityError(UsageError):
    """city.yaml cannot be used: one line naming the file, the entry and the problem."""


class Frozen32BuildError(Exception):
    """The source is missing, or the build failed (the message says where to look)."""


class ExpectationFailed(AssertionError):
    """What the duty room expected did not arrive in time."""


class SubscriptionRefused(aiomqtt.MqttError):
    """The broker answered a SUBSCRIBE with a failure (0x80): nothing would arrive there.

    An MqttError, so that it ends the connection as any broker failure does, in every
    client's retry loop (``gateway.relay.mqttsocket.subscribe``).
    """
