"""The event loop's watches on an aiomqtt client's socket, kept in step with paho.

aiomqtt 2.5 (pinned) hands paho's socket to the event loop through four paho callbacks
(socket open, close, register write, unregister write). The two that add a watch defer it
with ``call_soon_threadsafe`` (paho calls them from aiomqtt's connect thread too), the two
that remove one act at once, and each acts on the descriptor number it was given. The
order breaks: a packet queued through the writer hook (a manual PUBACK, a PINGREQ, a
SUBSCRIBE) schedules a writer watch; the relay's direct publish writes that packet in the
same loop turn, so paho clears its "watch asked" flag and asks for a removal that finds
nothing yet; then the scheduled watch registers anyway. paho no longer knows of it: it
never asks to remove it, and its callback runs on every turn of the loop (the socket is
writable) until paho asks for a watch again. When the connection dies meanwhile, paho closes
the socket, the kernel's epoll set forgets the descriptor, the loop's selector still maps
it, and the next connection's socket gets the same number: its reader watch fails
(``add_reader`` -> ``FileNotFoundError`` from epoll's modify, a traceback in the log), so
it never reads its CONNACK and times out: a lost connect attempt in a cluster failover.
A deferred watch that runs after paho closed the socket registers a closed descriptor
(``OSError: [Errno 9] Bad file descriptor`` when a broker hangs up with a PUBACK queued).

:func:`loop_watched` replaces the four callbacks: the loop's thread decides every watch
from paho's state at that moment (its open socket; whether it has bytes to send), and
drops the watches of a socket before paho closes it. :func:`connect_sent` says whether a
connection attempt that failed got as far as an open socket (its CONNECT may have reached
the broker) or not (refused, unreachable: the broker saw nothing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

log = logging.getLogger(__name__)


# paho clients that loop_watched watches, and those of them that opened a socket
_WATCHED: weakref.WeakSet[paho.Client] = weakref.WeakSet()
_OPENED: weakref.WeakSet[paho.Client] = weakref.WeakSet()


def connect_sent(client: aiomqtt.Client) -> bool:
    """Whether ``client`` opened a socket to the broker: its CONNECT may have reached it.

    The broker may then have made a session whose CONNACK never came. False only for a
    :func:`loop_watched` client whose connection was refused or never made; True for a
    client this module does not watch (nothing known).
    """
    inner = client._client  # pinned aiomqtt 2.5
    return inner in _OPENED or inner not in _WATCHED


def loop_watched(client: aiomqtt.Client) -> aiomqtt.Client:
    """Let the running loop's thread keep ``client``'s socket watches (before it connects).

    Returns ``client``. Use it on every ``aiomqtt.Client`` the gateway makes.
    """
    _Watches(client)
    return client


class _Watches:
    """The reader and writer watches of one aiomqtt client's socket."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._paho: paho.Client = client._client  # pinned aiomqtt 2.5
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._sock: Any = None  # paho's socket that the loop watches
        self._fd = -1
        self._writing = False
        p = self._paho
        _WATCHED.add(p)
        p.on_socket_open = self._opened
        p.on_socket_register_write = self._changed
        p.on_socket_unregister_write = self._changed
        p.on_socket_close = self._closing

    def _opened(self, _paho: paho.Client, _userdata: Any, _sock: Any) -> None:
        _OPENED.add(self._paho)  # paho sends its CONNECT next
        self._changed(_paho, _userdata, _sock)

    def _changed(self, _paho: paho.Client, _userdata: Any, _sock: Any) -> None:
        if threading.get_ident() == self._thread:
            self._settle()
        else:  # aiomqtt's connect thread: the loop's thread decides, on its next turn
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        """Watch paho's open socket: for reading always, for writing while it has bytes."""
        sock = self._paho.socket()
        if sock is None:
            return  # closed before this turn: _closing dropped what it had
        try:
            if sock is not self._sock:
                fd = sock.fileno()
                if self._unwatch_stale(fd):
                    log.warning("event loop still watched descriptor %d of a closed socket", fd)
                self._loop.add_reader(fd, self._readable)
                self._sock, self._fd, self._writing = sock, fd, False
                self._client._misc_task = self._loop.create_task(self._client._misc_loop())
            if self._paho.want_write() != self._writing:
                if self._writing:
                    self._loop.remove_writer(self._fd)
                else:
                    self._loop.add_writer(self._fd, self._writable)
                self._writing = not self._writing
        except OSError as exc:
            log.error("event loop cannot watch the broker's socket: %s", exc)
            failed = aiomqtt.MqttError(f"socket not watched: {exc}")
            # the connection ends, and a connect attempt at once rather than at its timeout
            connected: asyncio.Future[None] = self._client._connected
            for fut in (connected, self._client._disconnected):
                if not fut.done():
                    fut.set_exception(failed)

    def _unwatch_stale(self, fd: int) -> bool:
        """Drop what the loop still watches under ``fd``, a socket this new's number.

        No one can watch a socket paho has just opened: a watch under its number belongs
        to a closed socket that its owner did not unwatch (a client without
        :func:`loop_watched`), and it would make ``add_reader`` fail.
        """
        stale = False
        for remove in (self._loop.remove_writer, self._loop.remove_reader):
            try:
                stale = remove(fd) or stale
            except OSError:  # epoll lost it with the close; the selector dropped its entry
                stale = True
        return stale

    def _closing(self, _paho: paho.Client, _userdata: Any, sock: Any) -> None:
        """Unwatch ``sock``, which paho closes next, while the number is still its own."""
        if sock is self._sock:
            # from aiomqtt's connect thread only when a client is reused (paho closes the
            # last socket in reconnect()): then at once too, as aiomqtt does, since the
            # number may be reused as soon as this returns
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._sock, self._fd, self._writing = None, -1, False
        task = self._client._misc_task
        if task is not None and not task.done():
            self._loop.call_soon_threadsafe(task.cancel)

    def _readable(self) -> None:
        try:
            while True:
                self._paho.loop_read()
                # an SSL socket may keep decoded bytes that loop_read left (paho issue 131)
                pending = getattr(self._paho.socket(), "pending", None)
                if pending is None or pending() == 0:
                    break
        except Exception as exc:  # as aiomqtt's: a failed read is the connection's end
            self._failed(exc)

    def _writable(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as exc:  # as aiomqtt's: a failed write is the connection's end
            self._failed(exc)
        # paho asks to unwatch only when it believes it asked to watch: check
        self._settle()

    def _failed(self, exc: Exception) -> None:
        disconnected: asyncio.Future[None] = self._client._disconnected
        if not disconnected.done():
            disconnected.set_exception(exc)
