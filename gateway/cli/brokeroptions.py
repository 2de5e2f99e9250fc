"""The broker options every client subcommand shares (``--broker``, ``--ca-file``, ...).

What they mean is gateway/core/broker.py's; the password is never an option (it would
show in ``ps``): it comes from the URL or from ``CAMPUSGUARD_BROKER_PASSWORD``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from gateway.core.broker import (
    DEFAULT_BROKER,
    DEFAULT_PREFIX,
    PASSWORD_ENV,
    BrokerSettings,
    brokers_from,
)


def add_broker_options(parser: argparse.ArgumentParser, default_text: str = DEFAULT_BROKER) -> None:
    """Declare the shared broker options (one group, defaults in the help)."""
    g = parser.add_argument_group(
        "broker", f"the password comes from the URL or ${PASSWORD_ENV}, never an option"
    )
    g.add_argument(
        "--broker",
        action="append",
        metavar="URL",
        help="mqtt[s]://[user@]host:port; repeat for the nodes of ONE cluster, tried in"
        " order, the next when one dies (separate brokers would split the persistent"
        f" session) (default: {default_text})",
    )
    g.add_argument("--ca-file", metavar="PEM", help="CA certificate(s) to verify the broker")
    g.add_argument("--client-cert", metavar="PEM", help="client certificate (mqtts)")
    g.add_argument("--client-key", metavar="PEM", help="key of the client certificate")
    g.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="MQTT topic prefix",
    )


def broker_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> list[BrokerSettings]:
    """The brokers named on the command line, in order; :class:`UsageError` names a bad one."""
    return brokers_from(
        args.broker,
        ca_file=args.ca_file,
        client_cert=args.client_cert,
        client_key=args.client_key,
        environ=environ,
    )
