"""TCP relays in front of a broker: the cable, the frozen node and the odd node of a test.

    node = FreezableNode(broker.port)
    async with node as port:          # clients connect to ``port``, passed to the broker
        node.freeze()                 # from now on they hear nothing, and nothing ends

A :class:`TcpRelay` listens on a loopback port of its own and opens, for each client it
accepts, one connection to the broker; :meth:`TcpRelay.relay` says what passes between
the two (by default everything, both ways, and an end is passed on). Left, or closed,
it stops listening and closes every connection it held.
"""

from __future__ import annotations

import asyncio
import contextlib

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


class TcpRelay:
    """A TCP relay to the broker on ``broker_port``: entered, it listens and gives its own
    port; left, it closes every connection it held. ``relay`` says what passes."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = 0  # its own, once it listens (the same one again when it listens again)
        self.accepted = 0
        self._held: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen (on the port it had before, if any); the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def close(self) -> None:
        """Stop listening and close every connection held, both sides."""
        assert self._server is not None
        self._server.close()
        for w in self._held:
            w.close()
        self._held = []

    async def __aenter__(self) -> int:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            br, bw = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:  # the broker is away: the client sees its connection end
            cw.close()
            return
        self._held += [cw, bw]
        await self.relay(cr, cw, br, bw)

    async def relay(self, cr: Reader, cw: Writer, br: Reader, bw: Writer) -> None:
        """Pass what the client (``cr``/``cw``) and the broker (``br``/``bw``) send."""
        await asyncio.gather(pipe(cr, bw), pipe(br, cw), return_exceptions=True)


async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Pass what ``r`` reads to ``w`` until ``r`` ends, then close ``w``."""
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    finally:
        w.close()


class Cable(TcpRelay):
    """A TCP cable from a client to the broker, on its own port: pulled, every
    connection through it ends and nothing connects; plugged in again, all passes."""

    async def plug(self) -> None:
        await self.start()

    async def pull(self) -> None:
        server = self._server
        self.close()
        assert server is not None
        await server.wait_closed()


class FreezableNode(TcpRelay):
    """A TCP relay in front of the broker: a cluster node the test freezes as a SIGSTOPped
    process freezes. Frozen, it passes nothing either way and closes nothing (what it reads
    is held, an end of either side is not passed on), so a client learns of it only by its
    own clocks: no answer to CONNECT, no PINGRESP. ``left`` is set when a client closes its
    end (the relay gave the node up)."""

    def __init__(self, port: int, *, frozen: bool = False) -> None:
        super().__init__(port)
        self.left = asyncio.Event()
        self._running = asyncio.Event()
        if not frozen:
            self._running.set()

    def freeze(self) -> None:
        self._running.clear()

    def thaw(self) -> None:
        self._running.set()

    def cut(self) -> None:
        """The node is gone: every connection ends without a word, and none is accepted."""
        assert self._server is not None
        self._server.close()
        self._running.set()
        for w in self._held:
            w.transport.abort()

    def close(self) -> None:
        self._running.set()  # the pipes end on the closed sockets
        super().close()

    async def relay(self, cr: Reader, cw: Writer, br: Reader, bw: Writer) -> None:
        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, client: bool) -> None:
            held: asyncio.Queue[bytes] = asyncio.Queue()

            async def take() -> None:  # read on while frozen: an end is seen, not passed
                with contextlib.suppress(OSError):
                    while data := await r.read(65536):
                        held.put_nowait(data)
                if client:
                    self.left.set()
                held.put_nowait(b"")

            reader = asyncio.create_task(take())
            try:
                while True:
                    data = await held.get()
                    await self._running.wait()  # frozen: held
                    if not data:
                        w.close()
                        return
                    w.write(data)
                    await w.drain()
            finally:
                reader.cancel()

        await asyncio.gather(pipe(cr, bw, True), pipe(br, cw, False), return_exceptions=True)


class FreezeAtSubscribe(TcpRelay):
    """A TCP relay to a broker that goes silent (both ways) at a connection's first SUBSCRIBE:
    a node that froze between accepting a client and answering it. Later connections pass."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.frozen = 0
        self.passed = asyncio.Event()  # a later connection's SUBSCRIBE went through

    async def relay(self, cr: Reader, cw: Writer, br: Reader, bw: Writer) -> None:
        freeze = self.frozen == 0  # the first connection only
        stop = asyncio.Event()

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            while not stop.is_set() and (data := await r.read(65536)):
                if up and data[0] == 0x82 and freeze:  # SUBSCRIBE: from now on, nothing
                    self.frozen += 1
                    stop.set()
                    return
                if up and data[0] == 0x82:
                    self.passed.set()
                w.write(data)
                await w.drain()

        await asyncio.gather(pipe(cr, bw, True), pipe(br, cw, False), return_exceptions=True)


class DropFirstSubacks(TcpRelay):
    """A TCP relay to a broker that drops every SUBACK of its first connection: a node that
    took the client's session over, and sent it what was queued for it, but answered its
    SUBSCRIBE too late (NATS electing its retained stream's leader after a node's death).
    Later connections pass."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.connections = 0
        self.dropped = 0

    async def relay(self, cr: Reader, cw: Writer, br: Reader, bw: Writer) -> None:
        self.connections += 1
        first = self.connections == 1

        async def up() -> None:
            while data := await cr.read(65536):
                bw.write(data)
                await bw.drain()

        async def down() -> None:
            buf = b""
            while data := await br.read(65536):
                buf += data
                while (packet := mqtt_packet(buf)) is not None:
                    buf = buf[len(packet) :]
                    if first and packet[0] >> 4 == 9:  # SUBACK
                        self.dropped += 1
                        continue
                    cw.write(packet)
                await cw.drain()

        await asyncio.gather(up(), down(), return_exceptions=True)


class LoseConnacks(TcpRelay):
    """A TCP relay to a broker that, while ``losing`` is set, keeps the CONNACKs from the
    client: the broker took its CONNECT (and made its session), the client never hears so
    and gives the attempt up after its timeout. ``lost`` counts them."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.losing = False
        self.lost = 0

    async def relay(self, cr: Reader, cw: Writer, br: Reader, bw: Writer) -> None:
        async def down() -> None:
            buf = b""
            try:
                while data := await br.read(65536):
                    buf += data
                    while (packet := mqtt_packet(buf)) is not None:
                        buf = buf[len(packet) :]
                        if packet[0] >> 4 == 2 and self.losing:  # CONNACK
                            self.lost += 1
                            continue
                        cw.write(packet)
                    await cw.drain()
            finally:
                cw.close()

        await asyncio.gather(pipe(cr, bw), down(), return_exceptions=True)


def mqtt_packet(buf: bytes) -> bytes | None:
    """The first whole MQTT packet in ``buf`` (fixed header, remaining length), or None."""
    length, shift = 0, 0
    for i in range(1, min(len(buf), 5)):
        length |= (buf[i] & 0x7F) << shift
        shift += 7
        if not buf[i] & 0x80:
            end = i + 1 + length
            return buf[:end] if len(buf) >= end else None
    return None
