"""aiomqtt's deferred writer watch must not register a socket paho has closed meanwhile
(the ``OSError: [Errno 9] Bad file descriptor`` from ``add_writer`` at the end of demo
runs, when the broker went away), nor a watch paho has forgotten (the relay's fast path
wrote the packet itself meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.core.broker import BrokerSettings
from gateway.relay.mqttsocket import NodeLoop, fixed_pause, guard_write_watch
from tests.support.mosquitto import open_broker
from tests.support.tcprelay import LoseConnacks
from tests.support.timing import scaled, until

ROOT = Path(__file__).resolve().parents[2]


async def _broker_that_hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """CONNACK; once the client has two QoS 1 publishes in flight (so that paho reads
    several packets per read callback), one QoS 1 PUBLISH and the end of the connection in
    one go: paho queues its PUBACK (a writer watch is scheduled) and reads the end of file,
    closing the socket, in the same callback."""
    await reader.read(1024)  # CONNECT
    writer.write(b"\x20\x02\x00\x00")
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


async def _run_client(guarded: bool) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    problems: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: problems.append(ctx))
    server = await asyncio.start_server(_broker_that_hangs_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aiomqtt.Client("127.0.0.1", port)
    if guarded:
        guard_write_watch(client)
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
    # let any callback the client scheduled run
    done = loop.create_future()
    loop.call_soon(loop.call_soon, done.set_result, None)
    await done
    return problems


async def test_unguarded_aiomqtt_registers_a_closed_socket() -> None:
    # the bug itself, so that this test notices when aiomqtt fixes it
    problems = await _run_client(guarded=False)
    assert any(isinstance(p.get("exception"), OSError) for p in problems), problems


async def test_guarded_client_has_no_bad_file_descriptor() -> None:
    assert await _run_client(guarded=True) == []


def test_every_broker_client_in_the_gateway_is_guarded() -> None:
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        text = path.read_text()
        made = len(re.findall(r"aiomqtt\.Client\(", text))
        guarded = len(re.findall(r"guard_write_watch\(\s*aiomqtt\.Client\(", text))
        assert made == guarded, f"{path.name}: {made - guarded} aiomqtt.Client without the guard"


async def _quiet_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """CONNACK, then read whatever comes until the client leaves."""
    await reader.read(1024)  # CONNECT
    writer.write(b"\x20\x02\x00\x00")
    await writer.drain()
    while await reader.read(1024):
        pass
    writer.close()


async def _watch_left_after_paho_wrote_itself(guarded: bool) -> bool:
    """A publish through aiomqtt asks for a writer watch (on the loop's next turn); before
    that turn, paho writes the packet itself (as the relay's fast path does for the next
    alarm). Was a writer watch left on the socket? paho no longer knows of it, so it never
    removes it: its callback runs on every turn of the loop, and it outlives the socket."""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(_quiet_broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aiomqtt.Client("127.0.0.1", port)
    if guarded:
        guard_write_watch(client)
    try:
        async with client:
            inner = client._client
            sock = inner.socket()
            assert sock is not None
            fd = sock.fileno()
            inner.publish("t/status", b"online", qos=0)  # the watch asked for
            inner.loop_write()  # written now: paho forgets the watch it asked for
            assert not inner.want_write()
            turn = loop.create_future()
            loop.call_soon(loop.call_soon, turn.set_result, None)
            await turn  # the watch's callback has run
            return loop.remove_writer(fd)  # True: a watch was registered
    finally:
        server.close()
        await server.wait_closed()


async def test_unguarded_aiomqtt_leaves_a_watch_paho_forgot() -> None:
    # the bug itself, so that this test notices when aiomqtt fixes it
    assert await _watch_left_after_paho_wrote_itself(guarded=False)


async def test_guarded_client_leaves_no_watch_paho_forgot() -> None:
    assert not await _watch_left_after_paho_wrote_itself(guarded=True)


async def test_a_kept_session_made_by_a_connect_whose_connack_was_lost_is_subscribed_again(
    tmp_path: Path,
) -> None:
    """With ``resume``: a client with a clean session took the id over (the session this
    loop subscribed is gone); the broker took the next CONNECT and made a new, empty
    session, but its CONNACK never came. The connection after says "session present", of
    that empty session: the loop subscribes again, and hears what is published."""
    got = asyncio.Event()
    with open_broker(tmp_path / "broker") as broker:
        tap = LoseConnacks(broker.port)
        async with tap as port:
            node = BrokerSettings("127.0.0.1", port)
            link = NodeLoop(
                [node, node], identifier="desk-9", resume=True, pause=fixed_pause(0.05),
                timeout_s=1.0,
            )  # fmt: skip
            task = asyncio.create_task(link.run(lambda: ["t/#"], lambda t, p: got.set()))
            try:
                async with asyncio.timeout(scaled(10)):
                    await link.up.wait()
                tap.losing = True
                with contextlib.suppress(aiomqtt.MqttError):  # the loop may take it back
                    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="desk-9"):
                        pass
                await until(lambda: tap.lost == 1, what="a CONNACK lost")
                tap.losing = False
                await until(lambda: link.up.is_set(), 10, what="subscribed again")
                assert link.session_present and not link.resumed
                async with aiomqtt.Client("127.0.0.1", broker.port) as other:
                    await other.publish("t/x", b"hi", qos=1)
                async with asyncio.timeout(scaled(10)):
                    await got.wait()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
