"""aiomqtt 2.5's socket write watch, made safe against a socket paho has already closed.

aiomqtt asks for a writer watch (``loop.add_writer(fd)``) whenever paho has a packet to
send, but it does so through ``call_soon_threadsafe`` with the descriptor number taken at
once. When paho closes the socket before that callback runs (a QoS 1 message read, its
PUBACK queued, then the broker's end of file read in the same ``loop_read``), the
callback registers a closed descriptor: ``OSError: [Errno 9] Bad file descriptor`` from
the event loop's exception handler (seen at the end of demo runs when the broker went
away), or, had the number been reused meanwhile, a watch on someone else's descriptor.
:func:`guard_write_watch` installs a watch that checks, when it runs, that paho still
holds that socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from gateway.core.errors import SubscriptionRefused


def guard_write_watch(client: aiomqtt.Client) -> aiomqtt.Client:
    """Replace aiomqtt's write-watch callback of ``client`` (before it connects); return it."""
    loop = asyncio.get_running_loop()
    inner: paho.Client = client._client  # pinned aiomqtt 2.5

    def writable() -> None:
        # as aiomqtt's own callback: a failed write is the connection's end
        try:
            inner.loop_write()
        except Exception as exc:
            disconnected: asyncio.Future[None] = client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def register_write(_paho: paho.Client, _userdata: Any, sock: Any) -> None:
        def watch() -> None:
            current = inner.socket()
            if current is not None and current is sock:  # else paho closed it meanwhile
                loop.add_writer(current.fileno(), writable)

        # paho may call this from aiomqtt's connect thread: hop onto the loop
        loop.call_soon_threadsafe(watch)

    inner.on_socket_register_write = register_write
    return client


def retrieve_disconnect(client: aiomqtt.Client) -> None:
    """Read the exception aiomqtt 2.5 (pinned) leaves in its ``_disconnected`` future.

    Call it when a connection has ended (``finally``). Nothing awaits that future when the
    connection drops while no one reads the messages: the broker drops a leaving client
    (a second gateway took the client id over), or the keepalive expires while the client
    waits for a SUBACK or a PUBACK (a frozen node). asyncio then logs "Future exception
    was never retrieved" with a traceback when the client is freed, after the client's own
    one line about the disconnect.
    """
    fut = getattr(client, "_disconnected", None)
    if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
        fut.exception()


async def subscribe(client: aiomqtt.Client, topic: str, qos: int = 1) -> None:
    """Subscribe to ``topic`` and check the SUBACK; raise :class:`SubscriptionRefused` if refused.

    aiomqtt returns the broker's answer without judging it: a refused subscription (an ACL,
    or NATS's per-session limit of un-PUBACKed messages) would otherwise look like a quiet
    site. Raised as an MqttError, it ends the connection like any broker failure: the
    client's retry loop logs it and tries again.
    """
    granted = await client.subscribe(topic, qos=qos)
    for code in granted:
        value = code if isinstance(code, int) else code.value
        if value >= 0x80:
            raise SubscriptionRefused(
                f"the broker refused the subscription to {topic} (SUBACK 0x{value:02x})"
            )
