"""Gateway-to-unit frames (ACK, SIGNAL): the gateway's own counter and the route to a unit.

The counter follows SPEC.md 1.3: an epoch stored in the journal and bumped at every start
(and before ``seq`` would pass 65535), ``seq`` counting up per frame. A frame goes to the
link its unit last spoke on, else the unit's configured link, else every link (frames are
addressed and signed, so a unit ignores what is not for it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from gateway.journal.store import Store
from protocol import Ack, AckState, Codec, Frame, Message, ProtocolError

log = logging.getLogger(__name__)

MAX_SEQ = 0xFFFF


class Writable(Protocol):
    """A link as the downlink sees it."""

    def write(self, data: bytes) -> bool:
        """Queue bytes for the line; False if the link is down."""
        ...


class Downlink:
    """Signs and routes downlink frames."""

    def __init__(
        self,
        codec: Codec,
        store: Store,
        links: Mapping[str, Writable],
        home_links: Mapping[int, str],
    ) -> None:
        """``home_links`` maps a unit address to its configured link id."""
        self._codec = codec
        self._store = store
        self._links = links
        self._home = dict(home_links)
        self._route: dict[int, str] = {}
        self.epoch = store.bump_epoch()
        self._seq = 0
        self.sent = 0
        self.unsent = 0
        log.info("downlink epoch %d", self.epoch)

    def heard(self, addr: int, link: str) -> None:
        """A unit spoke on ``link``: answer it there from now on."""
        self._route[addr] = link

    def ack(self, addr: int, epoch: int, seq: int, state: AckState) -> bool:
        """ACK the uplink counter (epoch, seq) of unit ``addr``."""
        return self.send(addr, Ack(ref_epoch=epoch, ref_seq=seq, state=state))

    def send(self, addr: int, body: Message) -> bool:
        """Sign and write one frame to unit ``addr``; False if no link took it."""
        epoch, seq = self._next()
        try:
            data = self._codec.encode(Frame(unit=addr, epoch=epoch, seq=seq, body=body))
        except ProtocolError:
            log.error("no key for unit %d: cannot send %s", addr, type(body).__name__)
            return False
        route = self._route.get(addr) or self._home.get(addr)
        link = self._links.get(route) if route is not None else None
        targets = [link] if link is not None else list(self._links.values())
        ok = False
        for target in targets:
            ok = target.write(data) or ok
        if ok:
            self.sent += 1
        else:
            self.unsent += 1
            log.warning("unit %d: no link up for %s", addr, type(body).__name__)
        return ok

    def _next(self) -> tuple[int, int]:
        if self._seq > MAX_SEQ:
            self.epoch = self._store.bump_epoch()
            self._seq = 0
        seq = self._seq
        self._seq += 1
        return self.epoch, seq
