"""``campusguard cluster-config``: the city's NATS cluster from city.yaml (cluster/README.md).

Writes into ``--out`` (default ``cluster-out/``): one ``<node>.conf`` per node of
city.yaml's ``nodes`` (JetStream, the MQTT listener, routes, TLS from the private CA,
every account's permissions), ``nodes/<node>.pem``/``.key``, per broker user
``credentials/<user>.password`` and ``clients/<user>.pem``/``.key``, the CA
(``ca.pem``, ``ca.key``), and ``trust/<user>/``: the public keys that client must trust
(copy them into its ``--keydir``). Run it again after a change in city.yaml: passwords
and certificates are kept unless ``--rotate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.core.city import load_city
from gateway.core.errors import GatewayError
from gateway.security.cluster import (
    accounts_of,
    cluster_nodes,
    write_cluster_config,
    write_trust,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard cluster-config``."""
    parser.add_argument("--city", default="city.yaml", help="the city register")
    parser.add_argument("--out", type=Path, default=Path("cluster-out"), help="output folder")
    parser.add_argument("--ca-dir", type=Path, help="where the private CA is kept (default: --out)")
    parser.add_argument("--mqtt-port", type=int, default=8883, help="MQTT (TLS) listener port")
    parser.add_argument("--cluster-port", type=int, default=6222, help="route (TLS) port")
    parser.add_argument(
        "--store-dir", default="/var/lib/campusguard-nats", help="JetStream store on each node"
    )
    parser.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="USER",
        help="make this user's password and client certificate anew (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Write every node's config and each client's files; 2 on a usage or config error."""
    try:
        city = load_city(args.city)
        nodes = cluster_nodes(
            city,
            args.city,
            mqtt_port=args.mqtt_port,
            cluster_port=args.cluster_port,
            store_dir=args.store_dir,
        )
        accounts = accounts_of(city)
        files = write_cluster_config(
            args.out, accounts, nodes, ca_dir=args.ca_dir, rotate=args.rotate
        )
        trust = write_trust(args.out / "trust", city)
    except (GatewayError, OSError, ValueError) as exc:
        print(f"campusguard cluster-config: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(str(p) for p in files.confs.values())}")
    print(
        f"users: {', '.join(accounts.users())}; hand each its credentials/<user>.password,"
        f" clients/<user>.*, {files.ca.cert} and the public keys in {args.out / 'trust'}/<user>/"
        f" ({len(trust)} folders)"
    )
    return 0
