"""The event loop's watches on a broker client's socket (gateway/relay/socketloop.py).

Regressions: a writer watch asked for while paho had a packet queued, then that packet
written at once in the same loop turn (the relay's direct publish), survived the socket:
the next connection's socket got the same descriptor number, its ``add_reader`` failed
("Exception in callback BaseSelectorEventLoop.add_reader ... FileNotFoundError" in a
gateway's log in a cluster failover), and it timed out waiting for its CONNACK. And
aiomqtt's deferred writer watch registered a socket paho had closed meanwhile (``OSError:
[Errno 9] Bad file descriptor`` at the end of demo runs, when the broker went away).
Real sockets on loopback, a few lines of broker: the orders of events are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import selectors
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest

from gateway.relay.socketloop import connect_sent, loop_watched

ROOT = Path(__file__).resolve().parents[2]
CONNACK = b"\x20\x02\x00\x00"
CONNECT_TIMEOUT_S = 5.0  # aiomqtt's wait for the CONNACK: a lost attempt fails after it
LOST_ATTEMPT_S = 0.5  # ... where the attempt is expected to be lost


class _Broker:
    """CONNACK to every CONNECT; :meth:`hang_up` ends the connections made so far."""

    def __init__(self) -> None:
        self.connections: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Broker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.hang_up()
        self._server.close()
        await self._server.wait_closed()

    def hang_up(self) -> None:
        for w in self.connections:
            w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(CONNACK)
        self.connections.append(writer)
        try:
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass


def _problems() -> list[dict[str, Any]]:
    """What reaches the running loop's exception handler from now on ("Exception in
    callback ...", logged with a traceback by the default handler)."""
    problems: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
    return problems


def _watched(fd: int) -> int:
    """The events the running loop's selector holds for ``fd`` (0: none)."""
    selector: selectors.BaseSelector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    key = selector.get_map().get(fd)
    return key.events if key is not None else 0


async def _next_turns() -> None:
    """Let what the client scheduled (call_soon) run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def _until_disconnected(client: aiomqtt.Client) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async for _ in client.messages:
            pass


@contextlib.contextmanager
def _numbers_in_order() -> Iterator[None]:
    """These tests need the next socket to take the number just freed. A socket an earlier
    test left to the garbage collector, closed meanwhile, would free a lower number for the
    client to take instead (and the broker's side, accepted next, would take the freed one
    and never read the CONNECT): collect them first, and none during the test."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _direct_write_after_a_queued_packet(*, watched: bool) -> tuple[int, int, int, int]:
    """A packet queued through the writer hook, then one that paho writes at once in the
    same loop turn (as the relay's _Direct.publish does), then the broker hangs up and
    the client connects again. Returns the first socket's descriptor, the events watched
    on it with nothing left to send, and after it closed, and the second socket's
    descriptor."""
    wrap = loop_watched if watched else (lambda c: c)
    timeout = CONNECT_TIMEOUT_S if watched else LOST_ATTEMPT_S
    with _numbers_in_order():
        return await _direct_write_and_again(wrap, timeout)


async def _direct_write_and_again(
    wrap: Callable[[aiomqtt.Client], aiomqtt.Client], timeout: float
) -> tuple[int, int, int, int]:
    async with _Broker() as broker:
        first = wrap(aiomqtt.Client("127.0.0.1", broker.port, timeout=CONNECT_TIMEOUT_S))
        async with first:
            p: paho.Client = first._client
            sock = p.socket()
            assert isinstance(sock, socket.socket)
            fd = sock.fileno()
            p.publish("t/ack", b"queued", qos=0)  # a PUBACK, a PINGREQ: a watch is asked for
            hook = p.on_socket_register_write
            p.on_socket_register_write = None  # the relay's direct publish
            try:
                p.publish("t/alarm", b"written now", qos=0)
            finally:
                p.on_socket_register_write = hook
            await _next_turns()
            idle = _watched(fd)  # a writer watch here runs on every turn of the loop
            broker.hang_up()
            await _until_disconnected(first)
        left = _watched(fd)
        second = wrap(aiomqtt.Client("127.0.0.1", broker.port, timeout=timeout))
        async with second:  # aiomqtt.MqttError "Operation timed out": the attempt lost
            again = second._client.socket()
            assert isinstance(again, socket.socket)
            return fd, idle, left, again.fileno()


async def test_a_failover_after_a_direct_write_connects_at_once() -> None:
    problems = _problems()
    fd, idle, left, again = await _direct_write_after_a_queued_packet(watched=True)
    assert idle == selectors.EVENT_READ
    assert left == 0
    assert again == fd  # the number came back: the case under test
    assert problems == []


async def test_aiomqtt_alone_leaves_a_watch_on_the_closed_socket() -> None:
    # the bug itself, so that this test notices when aiomqtt fixes it
    problems = _problems()
    with pytest.raises(aiomqtt.MqttError):
        await _direct_write_after_a_queued_packet(watched=False)
    assert any(isinstance(p.get("exception"), FileNotFoundError) for p in problems), problems


async def test_a_watch_left_by_another_client_is_dropped_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    problems = _problems()
    with _numbers_in_order():
        fd = await _connect_over_an_orphan_watch(caplog)
    assert [r.getMessage() for r in caplog.records] == [
        f"event loop still watched descriptor {fd} of a closed socket"
    ]
    assert problems == []


async def _connect_over_an_orphan_watch(caplog: pytest.LogCaptureFixture) -> int:
    loop = asyncio.get_running_loop()
    async with _Broker() as broker:
        # a writer watch whose owner closed its socket without removing it
        orphan = socket.socket()
        fd = orphan.fileno()
        loop.add_writer(fd, lambda: None)
        orphan.close()
        client = loop_watched(aiomqtt.Client("127.0.0.1", broker.port, timeout=CONNECT_TIMEOUT_S))
        with caplog.at_level(logging.WARNING, logger="gateway.relay.socketloop"):
            async with client:
                got = client._client.socket()
                assert isinstance(got, socket.socket)
                assert got.fileno() == fd  # the number came back: the case under test
    return fd


async def _broker_that_hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """CONNACK; once the client has two QoS 1 publishes in flight (so that paho reads
    several packets per read callback), one QoS 1 PUBLISH and the end of the connection in
    one go: paho queues its PUBACK (a writer watch is asked for) and reads the end of file,
    closing the socket, in the same callback."""
    await reader.read(1024)  # CONNECT
    writer.write(CONNACK)
    await writer.drain()
    seen = 0
    while seen < 2:
        data = await reader.read(1024)
        if not data:
            return
        seen += data.count(b"\x32")  # PUBLISH, QoS 1
    topic = b"t/x"
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x07" + b"hi"
    writer.write(bytes([0x32, len(body)]) + body)
    await writer.drain()
    writer.close()


async def _hung_up_with_a_puback_queued(*, watched: bool) -> list[dict[str, Any]]:
    problems = _problems()
    server = await asyncio.start_server(_broker_that_hangs_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aiomqtt.Client("127.0.0.1", port)
    if watched:
        loop_watched(client)
    pending: list[asyncio.Task[None]] = []
    try:
        async with client:
            pending = [asyncio.create_task(client.publish("a", str(i), qos=1)) for i in range(2)]
            async for _ in client.messages:
                pass
    except aiomqtt.MqttError:
        pass  # the broker hung up: expected
    finally:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        server.close()
        await server.wait_closed()
    await _next_turns()
    return problems


async def test_aiomqtt_alone_watches_a_socket_closed_meanwhile() -> None:
    # the bug itself, so that this test notices when aiomqtt fixes it
    problems = await _hung_up_with_a_puback_queued(watched=False)
    assert any(isinstance(p.get("exception"), OSError) for p in problems), problems


async def test_no_bad_file_descriptor_when_the_broker_hangs_up_with_a_puback_queued() -> None:
    assert await _hung_up_with_a_puback_queued(watched=True) == []


def test_every_broker_client_in_the_gateway_is_watched_from_the_loop() -> None:
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        text = path.read_text()
        made = len(re.findall(r"aiomqtt\.Client\(", text))
        watched = len(re.findall(r"loop_watched\(\s*aiomqtt\.Client\(", text))
        assert made == watched, f"{path.name}: {made - watched} aiomqtt.Client not loop_watched"


class _Silent:
    """Reads the CONNECT, never answers it (a CONNACK lost on the way)."""

    def __init__(self) -> None:
        self.connections: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        while await reader.read(1024):
            pass
        writer.close()


async def test_connect_sent_tells_a_refused_connection_from_a_connack_that_never_came() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    refused = loop_watched(aiomqtt.Client("127.0.0.1", dead, timeout=CONNECT_TIMEOUT_S))
    with pytest.raises(aiomqtt.MqttError):
        async with refused:
            pass
    assert not connect_sent(refused)  # no broker saw a CONNECT: no session made
    silent = _Silent()
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        unanswered = loop_watched(aiomqtt.Client("127.0.0.1", port, timeout=0.5))
        with pytest.raises(aiomqtt.MqttError):
            async with unanswered:
                pass
        assert connect_sent(unanswered)  # the CONNECT went out: a session may exist
    finally:
        # aiomqtt leaves the given-up socket to paho's keepalive (60 s here), and since
        # Python 3.12 wait_closed() waits for every connection: end them here
        for writer in silent.connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert connect_sent(aiomqtt.Client("127.0.0.1", dead))  # not watched: nothing known
