"""The alarm receiving centre wired in: boards.yaml's ``arc`` or ``--arc`` URLs, keys, feed.

``--arc dc09+tcp://ACCOUNT@HOST:PORT`` (repeatable, primary first) replaces boards.yaml's
receivers, as ``--serial`` replaces its links; ACCOUNT is the default for sites without
one. Keys: ``--arc-key-file FILE`` with a single ``--arc``, otherwise ``dc09-<receiver
id>.key`` in the key directory for each receiver (``--arc`` receivers are ``arc-1``,
``arc-2``, ...). Never in boards.yaml.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.arc.dc09 import KeyForm, Token, parse_key
from gateway.arc.feed import Addressing, ArcFeed
from gateway.arc.queue import ArcQueue
from gateway.arc.transmitter import ArcSettings, Endpoint, Transmitter
from gateway.core.config import Arc, ArcReceiver, Config
from gateway.core.credentials import SecretDir
from gateway.core.errors import ConfigError, DC09Error, KeyMissingError, UsageError
from gateway.journal.store import Store
from gateway.pipeline.ports import Outlet

log = logging.getLogger(__name__)

SCHEME = "dc09+tcp"
_ACCOUNT = re.compile(r"^[0-9A-Fa-f]{3,16}$")


def arc_key_file(receiver_id: str) -> str:
    """The file name of a receiver's DC-09 key in the key directory."""
    return f"dc09-{receiver_id}.key"


def parse_arc_url(text: str) -> tuple[str, ArcReceiver]:
    """``dc09+tcp://ACCOUNT@HOST:PORT`` -> (account, receiver); :class:`UsageError` if not."""
    usage = f"--arc {text!r}: expected {SCHEME}://ACCOUNT@HOST:PORT"
    try:
        u = urlsplit(text)
        port = u.port
    except ValueError:
        raise UsageError(f"{usage} (bad port)") from None
    if u.scheme != SCHEME or not u.hostname or port is None or u.path not in ("", "/"):
        raise UsageError(usage)
    if not u.username or not _ACCOUNT.match(u.username):
        raise UsageError(f"{usage}: ACCOUNT is 3-16 hex digits")
    return u.username.upper(), ArcReceiver("arc", u.hostname, port)


@dataclass(frozen=True, slots=True)
class ArcPlan:
    """Everything the gateway needs to run its ARC transmitter."""

    settings: ArcSettings
    default_account: str | None


def plan_arc(
    config: Config,
    keydir: Path | SecretDir,
    urls: Sequence[str] = (),
    key_file: Path | None = None,
    key_format: KeyForm = "auto",
) -> ArcPlan | None:
    """The ARC to report to (None: none configured); :class:`UsageError` for bad input."""
    arc = config.arc
    if urls:
        parsed = [parse_arc_url(u) for u in urls]
        receivers = tuple(
            ArcReceiver(f"arc-{i}", r.host, r.port) for i, (_, r) in enumerate(parsed, 1)
        )
        accounts = {a for a, _ in parsed}
        if len(accounts) > 1:
            raise UsageError(f"--arc: one account for all receivers, got {sorted(accounts)}")
        base = arc or Arc("arc", receivers)
        arc = Arc(
            base.id,
            receivers,
            account=parsed[0][0],
            protocol=base.protocol,
            key_format=base.key_format,
            null_interval_s=base.null_interval_s,
            ack_timeout_s=base.ack_timeout_s,
            failover_after=base.failover_after,
            retry_s=base.retry_s,
        )
    if arc is None:
        if key_file is not None:
            raise UsageError("--arc-key-file needs --arc or an arc section in boards.yaml")
        return None
    if key_file is not None and len(arc.receivers) != 1:
        raise UsageError("--arc-key-file goes with a single receiver; use dc09-<id>.key files")
    source = keydir if isinstance(keydir, SecretDir) else SecretDir(keydir)
    endpoints = []
    for r in arc.receivers:
        key = _key(arc, r, key_file or source.file(arc_key_file(r.id)), key_format, key_file)
        endpoints.append(Endpoint(r.host, r.port, r.receiver, r.line, key))
    try:
        settings = ArcSettings(
            arc.id,
            tuple(endpoints),
            token=Token.SIA_DCS if arc.protocol == "sia-dcs" else Token.ADM_CID,
            ack_timeout_s=float(arc.ack_timeout_s),
            null_interval_s=float(arc.null_interval_s),
            failover_after=arc.failover_after,
            retry_s=float(arc.retry_s),
        )
        Addressing.from_config(config, arc.account)  # every site and unit addressable
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return ArcPlan(settings, arc.account)


def _key(arc: Arc, r: ArcReceiver, path: Path, form: KeyForm, given: Path | None) -> bytes | None:
    if given is None and arc.key_format == "none":
        log.warning("ARC %s: receiver %s without encryption (key_format: none)", arc.id, r.id)
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyMissingError(
            f"{path}: cannot read the DC-09 key of receiver {r.id}: {exc.strerror or exc}"
            " (the key the ARC gave you, 16/24/32 characters or hex)"
        ) from None
    if given is None and arc.key_format in ("text", "hex"):
        form = "text" if arc.key_format == "text" else "hex"
    try:
        return parse_key(text, form, str(path))
    except DC09Error as exc:
        raise UsageError(str(exc)) from None


class ArcLink:
    """Queue, feed and transmitter of one ARC, attached to the gateway's journal."""

    def __init__(
        self,
        plan: ArcPlan,
        config: Config,
        store: Store,
        *,
        outlet: Outlet | None = None,
        now: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Hook the feed into ``store`` (``Store.on_enqueue``); nothing runs until :meth:`run`."""
        self.queue = ArcQueue(store)
        addressing = Addressing.from_config(config, plan.default_account)
        self.transmitter = Transmitter(
            plan.settings,
            self.queue,
            outlet=outlet,
            site=config.site,
            null_account=addressing.account(config.site),
            wall=wall,
            now=now,
        )
        self.feed = ArcFeed(
            self.queue, [plan.settings.name], addressing, on_queued=self.transmitter.wake
        )
        store.on_enqueue = self.feed.on_enqueue

    async def run(self) -> None:
        """Run the transmitter until cancelled."""
        await self.transmitter.run()
