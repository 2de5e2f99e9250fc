"""A NATS cluster locked down as the Mosquitto broker is: the city's broker (``cluster/``).

Each node gets one config file (``<node>.conf``) with JetStream (MQTT sessions, retained
and QoS 1 messages live in replicated streams, so any node serves any client), an MQTT
listener, the cluster routes, and the same accounts as :mod:`gateway.security.brokerconfig`:

- every listener speaks TLS with the private CA (:mod:`gateway.security.pki`), and asks for a
  client certificate (``verify: true``): MQTT clients and the other nodes alike;
- every MQTT user needs its password too (bcrypt-hashed here; the clear text is written
  once per user to ``credentials/<user>.password``, as for Mosquitto), and may connect
  over MQTT only (``allowed_connection_types``);
- what each user may publish and subscribe to is the Mosquitto ACL, written as NATS
  subjects: ``/`` becomes ``.``, ``+`` becomes ``*``, and ``P/<site>/#`` becomes both
  ``P.<site>`` and ``P.<site>.>`` (an MQTT ``#`` also matches its parent level);
- packets over :data:`gateway.security.brokerconfig.MAX_PACKET_SIZE` are refused (``max_payload``);
- each subscription may hold :func:`max_ack_pending` QoS 1 messages un-PUBACKed, sized so that
  the account with the most subscriptions can make them all: NATS refuses (SUBACK 0x80) a
  subscription that would bring its session's total over 65,535, and a ``#`` filter counts
  twice. At NATS's default of 1,024 a station could subscribe 31 sites and no more;
- the stream of QoS 1 messages may have :func:`max_consumers` consumers: the MQTT layer
  makes one (a replicated Raft group) per QoS 1 subscription of every session, all on
  that one stream, and nats-server 2.15's default of 1,000 per stream
  (``jetstream.limits.default_max_consumers``) is less than 300 gateways and two
  stations need: the 301st subscription was refused with "maximum consumers limit
  reached (10026)", and a client retrying it made more.

NATS speaks MQTT 3.1.1 only and has no ``use_username_as_clientid``: a client id is not
bound to its user. A gateway notices another holder of its session by reading its own
signed status back (gateway/README.md, "Security"), as on Mosquitto.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.city import City
from gateway.core.errors import GatewayError
from gateway.security.brokerconfig import (
    ACK_LEAVES,
    GATEWAY_WRITES,
    MAX_PACKET_SIZE,
    Accounts,
    ensure_users,
    write_private,
)
from gateway.security.pki import Issued, ensure_ca, issue
from gateway.security.signkeys import dutyroom_kid, gateway_kid, public_pem

ACCOUNT = "CITY"  # every MQTT user: one account, so one set of MQTT streams
BCRYPT_COST = 11
MQTT_ACK_WAIT = "5s"  # a QoS 1 message not PUBACKed by a subscriber is sent again after this
SESSION_ACK_PENDING = 65535  # NATS: the most un-PUBACKed messages of all a session's subscriptions
ACK_PENDING_MAX = 1024  # NATS's default per subscription: more than any client needs in flight
ACK_PENDING_MIN = 8  # below this a subscriber on a slow link would stall its own deliveries
SITE_WEIGHT = 9  # a reader's cost per site: the web duty room's 8 leaves, register/# twice
NATS_DEFAULT_MAX_CONSUMERS = 1000  # nats-server 2.15's per-stream default: never set lower


@dataclass(frozen=True, slots=True)
class Node:
    """One cluster node: its name and where it listens."""

    name: str
    host: str
    mqtt_port: int = 8883
    cluster_port: int = 6222
    client_port: int = 4222
    http_port: int = 8222
    bind: str = "0.0.0.0"
    store_dir: str = "/var/lib/campusguard-nats"

    @property
    def route(self) -> str:
        """How the other nodes reach this one."""
        return f"tls://{self.host}:{self.cluster_port}"


@dataclass(frozen=True)
class ClusterFiles:
    """What :func:`write_cluster_config` made, and where."""

    dir: Path
    ca: Issued
    confs: dict[str, Path]  # node name -> its config file

    def password(self, user: str) -> str:
        """A user's password."""
        return (self.dir / "credentials" / f"{user}.password").read_text().strip()

    def client(self, user: str) -> Issued:
        """A user's client certificate and key."""
        return Issued(self.dir / "clients" / f"{user}.pem", self.dir / "clients" / f"{user}.key")

    def node_cert(self, node: str) -> Issued:
        """A node's certificate (server and route client) and key."""
        return Issued(self.dir / "nodes" / f"{node}.pem", self.dir / "nodes" / f"{node}.key")


def subjects(topic_filter: str) -> list[str]:
    """The NATS subjects an MQTT topic filter covers, for a permission."""
    parts = ["*" if p == "+" else p for p in topic_filter.split("/")]
    if parts[-1] == "#":
        return [".".join(parts[:-1]), ".".join([*parts[:-1], ">"])]
    return [".".join(parts)]


def permissions(accounts: Accounts) -> dict[str, tuple[list[str], list[str]]]:
    """User -> (may publish, may subscribe), as NATS subjects: the Mosquitto ACL's grants."""
    p = accounts.prefix
    out: dict[str, tuple[list[str], list[str]]] = {}
    for gid, sites in accounts.gateways.items():
        status = f"{p}/gateway/{gid}/status"
        pub = [f"{p}/{s}/{leaf}" for s in sites for leaf in GATEWAY_WRITES] + [status]
        sub = [f"{p}/{s}/{leaf}" for s in sites for leaf in ACK_LEAVES] + [status]
        out[f"gateway-{gid}"] = (pub, sub)
    for name, sites in accounts.dutyrooms.items():
        pub = [f"{p}/{s}/{leaf}" for s in sites for leaf in ACK_LEAVES]
        sub = [f"{p}/{s}/#" for s in sites] + [f"{p}/gateway/+/status"]
        out[f"dutyroom-{name}"] = (pub, sub)
    for name, sites in accounts.viewers.items():
        out[f"viewer-{name}"] = ([], [f"{p}/{s}/#" for s in sites] + [f"{p}/gateway/+/status"])
    return {user: (_subjects_of(pub), _subjects_of(sub)) for user, (pub, sub) in out.items()}


def max_ack_pending(accounts: Accounts) -> int:
    """Un-PUBACKed QoS 1 messages per subscription, so every client can subscribe all it may.

    A user's weight is what its subscriptions cost in NATS's per-session budget of
    :data:`SESSION_ACK_PENDING`: a gateway one per ack filter of each site; a station or a
    viewer :data:`SITE_WEIGHT` per site (the web duty room subscribes eight leaves of a
    site, and a filter ending in ``#`` counts twice); 8 more for the status filters. Raises
    ValueError when even :data:`ACK_PENDING_MIN` does not fit: a district too big for one
    station's session (about 900 sites).
    """
    weight = max(_weights(accounts), default=8)
    per_subscription = min(ACK_PENDING_MAX, SESSION_ACK_PENDING // weight)
    if per_subscription < ACK_PENDING_MIN:
        raise ValueError(
            f"a station or viewer of {(weight - 8) // SITE_WEIGHT} sites is more than one MQTT"
            f" session of NATS can subscribe at {ACK_PENDING_MIN} messages in flight each:"
            " split its district"
        )
    return per_subscription


def _weights(accounts: Accounts) -> list[int]:
    # a user's subscriptions, a filter ending in # counted twice (two NATS subjects, two
    # consumers): what its session costs in consumers and in NATS's ack-pending budget
    weights = [len(sites) * len(ACK_LEAVES) + 8 for sites in accounts.gateways.values()]
    readers = (*accounts.dutyrooms.values(), *accounts.viewers.values())
    return weights + [len(sites) * SITE_WEIGHT + 8 for sites in readers]


def max_consumers(accounts: Accounts) -> int:
    """Consumers the MQTT layer may make on its stream of QoS 1 messages, for this city.

    One per QoS 1 subscription of every persistent session: twice what every user's
    clients subscribe at most (:func:`_weights`), for a second client of a user (a
    station's console beside its web duty room) and for the consumers a subscription cut
    short leaves behind until its session subscribes again; never below NATS's own default.
    A limit still, not none: a client that subscribes in a loop cannot make a node hold
    Raft groups without end. Grows with the city: run cluster-config again when gateways
    or stations are added (the nodes reload it, ``nats-server --signal reload``).
    """
    return max(NATS_DEFAULT_MAX_CONSUMERS, 2 * sum(_weights(accounts)))


def _subjects_of(filters: Iterable[str]) -> list[str]:
    return [s for f in filters for s in subjects(f)]


def _quoted(items: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _user_block(user: str, password_hash: str, pub: list[str], sub: list[str]) -> str:
    # an empty allow list would allow everything: deny all explicitly instead
    publish = f"allow: {_quoted(pub)}" if pub else 'deny: [">"]'
    return (
        f'      {{ user: "{user}", password: "{password_hash}",'
        ' allowed_connection_types: ["MQTT"],\n'
        f"        permissions: {{ publish: {{ {publish} }},"
        f" subscribe: {{ allow: {_quoted(sub)} }} }} }}"
    )


def node_config(
    node: Node,
    nodes: Sequence[Node],
    files: ClusterFiles,
    users: str,
    *,
    cluster_name: str = "campusguard",
    mqtt_ack_wait: str = MQTT_ACK_WAIT,
    ack_pending: int = ACK_PENDING_MAX,
    consumers: int = NATS_DEFAULT_MAX_CONSUMERS,
) -> str:
    """One node's nats-server config (``users``: the accounts' user blocks, shared).

    ``ack_pending``: :func:`max_ack_pending` of the accounts; ``consumers``: their
    :func:`max_consumers`.
    """
    cert = files.node_cert(node.name)
    tls = (
        f'tls {{ cert_file: "{cert.cert}", key_file: "{cert.key}", ca_file: "{files.ca.cert}",'
        " verify: true, timeout: 2 }"
    )
    replicas = min(3, len(nodes))
    routes = ", ".join(f'"{n.route}"' for n in nodes if n.name != node.name)
    return f"""# written by campusguard cluster-config (cluster/README.md)
server_name: "{node.name}"
# plain NATS clients: loopback only (operators' tools); the city speaks MQTT
listen: "127.0.0.1:{node.client_port}"
http: "127.0.0.1:{node.http_port}"
max_payload: {MAX_PACKET_SIZE}
jetstream {{
  store_dir: "{node.store_dir}"
  # per stream: the MQTT layer's stream of QoS 1 messages holds one consumer per QoS 1
  # subscription of every session in the city (NATS's default: 1,000)
  limits {{ default_max_consumers: {consumers} }}
}}
cluster {{
  name: "{cluster_name}"
  listen: "{node.bind}:{node.cluster_port}"
  routes: [{routes}]
  {tls}
}}
mqtt {{
  listen: "{node.bind}:{node.mqtt_port}"
  ack_wait: "{mqtt_ack_wait}"
  # per subscription, sized for the account with the most subscriptions: NATS refuses one
  # that brings its session over 65,535 in all (a station of many sites)
  max_ack_pending: {ack_pending}
  # sessions, retained and QoS 1 messages on every node (up to 3; each subscriber's
  # consumer follows its stream): any node can die and another serves the client
  stream_replicas: {replicas}
  {tls}
}}
accounts {{
  {ACCOUNT} {{
    jetstream: enabled
    users: [
{users}
    ]
  }}
  SYS {{ }}
}}
system_account: SYS
"""


def write_cluster_config(
    out: str | os.PathLike[str],
    accounts: Accounts,
    nodes: Sequence[Node],
    *,
    ca_dir: str | os.PathLike[str] | None = None,
    rotate: Iterable[str] = (),
    cluster_name: str = "campusguard",
    mqtt_ack_wait: str = MQTT_ACK_WAIT,
    bcrypt_cost: int = BCRYPT_COST,
) -> ClusterFiles:
    """Write (or update) every node's config in ``out``; keep passwords and certificates.

    ``ca_dir``: where the CA lives (default ``out``; the same CA as the Mosquitto broker's
    can sign both). ``rotate``: users whose password and client certificate are made anew.
    """
    rotate = list(rotate)
    accounts.check_users(rotate, "--rotate")
    if len({n.name for n in nodes}) != len(nodes) or not nodes:
        raise ValueError("the nodes need distinct names")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = ensure_ca(ca_dir or d)
    files = ClusterFiles(d, ca, {n.name: d / f"{n.name}.conf" for n in nodes})
    for n in nodes:
        cert = files.node_cert(n.name)
        if not (cert.cert.exists() and cert.key.exists()):
            names = list(dict.fromkeys([n.host, n.name, "localhost", "127.0.0.1"]))
            issue(ca, cert.cert, cert.key, n.name, server_names=names, peer=True)
    ensure_users(d, ca, accounts.users(), rotate)
    blocks = []
    for user, (pub, sub) in permissions(accounts).items():
        hashed = bcrypt.hashpw(files.password(user).encode(), bcrypt.gensalt(bcrypt_cost))
        blocks.append(_user_block(user, hashed.decode(), pub, sub))
    users = "\n".join(blocks)
    ack_pending = max_ack_pending(accounts)
    for n in nodes:
        text = node_config(
            n,
            nodes,
            files,
            users,
            cluster_name=cluster_name,
            mqtt_ack_wait=mqtt_ack_wait,
            ack_pending=ack_pending,
            consumers=max_consumers(accounts),
        )
        write_private(files.confs[n.name], text)
    return files


def cluster_nodes(
    city: City, where: str | os.PathLike[str], *, mqtt_port: int, cluster_port: int, store_dir: str
) -> list[Node]:
    """The city's nodes (city.yaml at ``where``) as servers of one cluster.

    GatewayError when there are fewer than three: JetStream keeps three copies and needs
    two to agree, so a smaller cluster does not survive losing a server.
    """
    if len(city.nodes) < 3:
        raise GatewayError(
            f"{where}: nodes: {len(city.nodes)} given; a cluster that survives losing"
            " a server needs 3 (JetStream keeps 3 copies and needs 2 to agree)"
        )
    return [
        Node(
            name=n.name,
            host=n.host,
            mqtt_port=mqtt_port,
            cluster_port=cluster_port,
            store_dir=store_dir,
        )
        for n in city.nodes
    ]


def accounts_of(city: City) -> Accounts:
    """The broker accounts of a city.

    Each gateway writes its sites; each station reads its district's sites and acks
    there; each viewer reads every site.
    """
    return Accounts(
        prefix=city.prefix,
        gateways={g.id: list(g.sites) for g in city.gateways.values()},
        dutyrooms={s.id: city.district_sites(s.district) for s in city.stations.values()},
        viewers={v: ["+"] for v in city.viewers},
    )


def write_trust(out: str | os.PathLike[str], city: City) -> dict[str, Path]:
    """Per broker user, the public keys it must trust, as its key directory holds them.

    ``<out>/gateway-<id>/dutyroom-<station>@<site>.pub``: the stations of its district,
    each authorised for the gateway's sites only; ``<out>/dutyroom-<station>/`` and
    ``<out>/viewer-<name>/``: ``gateway-<id>.pub`` of the gateways they read. Copy each
    folder's files into that client's ``--keydir``. Returns user -> folder.
    """
    d = Path(out)
    folders: dict[str, Path] = {}

    def put(user: str, name: str, key: Ed25519PublicKey) -> None:
        folder = folders.setdefault(user, d / user)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(public_pem(key))

    for g in city.gateways.values():
        for st in city.stations_of(g.id):
            for site in g.sites:
                put(f"gateway-{g.id}", f"{dutyroom_kid(st.id)}@{site}.pub", st.key)
    for st in city.stations.values():
        for g in city.gateways.values():
            if g.district == st.district:
                put(f"dutyroom-{st.id}", f"{gateway_kid(g.id)}.pub", g.key)
    for v in city.viewers:
        for g in city.gateways.values():
            put(f"viewer-{v}", f"{gateway_kid(g.id)}.pub", g.key)
    return folders
