"""The duty-room console: --json lines, --ack-after back to the unit (ACK state 2)."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import json
import logging
import os
import pty
import re
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

import gateway.cli.console as console_cli
import gateway.dutyroom.console as console_module
from gateway.core.timefmt import iso
from gateway.dutyroom.board import Board
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid
from protocol import AckState, Alarm, AlarmKind
from tests.gateway.conftest import (
    GATEWAY_ID,
    GATEWAY_USER,
    INTRUDER,
    SITE,
    Police,
    Site,
    client_for,
    running_gateway,
)
from tests.support.mosquitto import Mosquitto, open_broker
from tests.support.tcprelay import DropFirstSubacks, FreezeAtSubscribe
from tests.support.timing import scaled, until

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


async def test_console_json_and_auto_ack(site: Site, broker: Mosquitto, police: Police) -> None:
    unit = site.unit("shop-a", epoch=12)
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        s = broker.settings("dutyroom-desk2")  # a second desk: its own broker account
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "console",
            *s.cli_args(),
            "--site",
            SITE,
            "--json",
            "--ack-after",
            "50",
            "--by",
            "Officer Wu",
            "--keydir",
            str(site.dutyroom_dir),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **s.environ()},
        )
        assert proc.stdout is not None
        lines: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(scaled(20)):  # a subprocess start on a loaded machine
                # the gateway's retained status tells us the console is subscribed
                while not any(x["kind"] == "gateway" for x in lines):
                    lines.append(json.loads(await proc.stdout.readline()))
                assert lines[-1]["payload"]["state"] == "online"
                # what the gateway did not sign is never shown (nor acked), and nothing
                # kills the console: a fake alarm, deep nesting, an oversized payload
                # (under the broker's packet limit), from a broker account that may
                # write the site's topics but holds no signing key
                fake = {"incident": "fake-1", "update": "new", "gateway": GATEWAY_ID}
                alarm_topic = f"campusguard/{SITE}/alarm/shop-b"
                for payload in (json.dumps(fake).encode(), b"[" * 5000, b"x" * 12_000):
                    await police.publish(alarm_topic, payload, user=INTRUDER)
                while sum(x["kind"] == "dropped" for x in lines) < 3:
                    lines.append(json.loads(await proc.stdout.readline()))
                frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
                while not any(
                    x["kind"] == "alarm" and x["payload"]["update"] == "police_ack" for x in lines
                ):
                    lines.append(json.loads(await proc.stdout.readline()))
            await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=3)
        finally:
            proc.terminate()
            await proc.wait()
        iid = f"{GATEWAY_ID}-shop-a-12-0"
        kinds = [(x["kind"], (x["payload"] or {}).get("update")) for x in lines]
        assert ("alarm", "new") in kinds and ("ack_sent", None) in kinds
        reasons = [x["payload"]["reason"] for x in lines if x["kind"] == "dropped"]
        assert reasons == ["malformed", "malformed", "oversized"]
        assert not any(x["kind"] == "alarm" and x["payload"]["incident"] == "fake-1" for x in lines)
        sent = next(x for x in lines if x["kind"] == "ack_sent")
        assert sent["topic"] == f"campusguard/{SITE}/ack/{iid}"
        body = sent["payload"]
        assert (body["kind"], body["site"], body["incident"]) == ("police_ack", SITE, iid)
        assert (body["by"], body["disposition"]) == ("Officer Wu", "genuine")
        for x in lines:
            assert set(x) == {"topic", "kind", "payload", "at"}
        row = gw.store.conn.execute("SELECT police_ack_by FROM incidents").fetchone()
        assert row == ("Officer Wu",)


ROWS, COLS = 24, 120
_CSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


def emulate(out: str, rows: int = ROWS, cols: int = COLS) -> list[str]:
    """What a VT100 shows after ``out``: only the sequences the console (and the tty's
    echo) use: CUP, ED 2, EL, DECSC/DECRC, CR, LF (scrolling), BS, BEL."""
    grid = [[" "] * cols for _ in range(rows)]
    r = c = 0
    saved = (0, 0)
    i = 0
    while i < len(out):
        ch = out[i]
        if ch == "\x1b":
            if out[i + 1 : i + 2] in ("7", "8"):
                if out[i + 1] == "7":
                    saved = (r, c)
                else:
                    r, c = saved
                i += 2
                continue
            m = _CSI.match(out, i)
            assert m is not None, repr(out[i : i + 10])
            params, cmd = m.groups()
            if cmd == "H":
                nums = [int(p) if p else 1 for p in params.split(";")] if params else [1, 1]
                r, c = nums[0] - 1, (nums[1] if len(nums) > 1 else 1) - 1
            elif cmd == "J" and params == "2":
                grid = [[" "] * cols for _ in range(rows)]
            elif cmd == "K":
                grid[r][c:] = [" "] * (cols - c)
            i = m.end()
            continue
        if ch == "\r":
            c = 0
        elif ch == "\n":
            r += 1
            if r == rows:
                grid = [*grid[1:], [" "] * cols]
                r = rows - 1
        elif ch == "\b":
            c = max(0, c - 1)
        elif ch >= " " and c < cols:
            grid[r][c] = ch
            c += 1
        i += 1
    return ["".join(row).rstrip() for row in grid]


class Terminal:
    """A real pseudo-terminal (24 x 120) with the console on its other side."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.out = b""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the console side closed
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.master)
        self.out += chunk
        self._changed.set()

    def screen(self) -> str:
        """What the terminal shows now, row by row."""
        return "\n".join(emulate(self.out.decode("utf-8", "replace")))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


async def test_restarted_console_on_a_terminal_shows_the_open_incident_and_acks_it(
    site: Site, broker: Mosquitto
) -> None:
    """The console starts after the alarm: it rebuilds from the retained topics, rings,
    redraws its clock every second, and its ack reaches the unit."""
    unit = site.unit("shop-a", epoch=14)
    iid = f"{GATEWAY_ID}-shop-a-14-0"
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
        await site.port.wait_ack(frame)
        await until(lambda: gw.store.pending_count() == 0)
        term = Terminal()
        s = broker.settings("dutyroom-desk2")
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env.update(s.environ())
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "console",
            *s.cli_args(),
            "--keydir",
            str(site.dutyroom_dir),
            "--tz",
            "Asia/Shanghai",
            "--by",
            "Officer Wu",
            stdin=term.slave,
            stdout=term.slave,
            stderr=term.slave,
            env={**env, "TERM": "xterm"},
        )
        os.close(term.slave)
        try:
            await term.wait_for(lambda: " 1  OPEN" in term.screen())
            screen = term.screen()
            assert "Place of shop-a (shop-a)" in screen
            assert "CST" in screen.split("\n", 1)[0]  # --tz: the header in local time
            assert b"\a" in term.out  # the bell: a new alarm on the board
            assert all(len(line) <= 120 for line in screen.split("\n"))
            # the operator starts typing; the clock moves on, and the typing stays in view
            term.type("1")
            await term.wait_for(lambda: term.screen().split("\n")[-1] == "> 1")
            first_clock = term.screen().split("\n", 1)[0]
            await term.wait_for(lambda: term.screen().split("\n", 1)[0] != first_clock)
            assert term.screen().split("\n")[-1] == "> 1"
            term.type("\n")
            await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=10)
            await term.wait_for(lambda: " 1  police_ack" in term.screen())
            assert term.screen().split("\n")[-1] == ">"  # a fresh prompt after the Enter
        finally:
            proc.terminate()
            await proc.wait()
            term.close()
        row = gw.store.conn.execute(
            "SELECT police_ack_by, disposition FROM incidents WHERE id = ?", (iid,)
        ).fetchone()
        assert row == ("Officer Wu", "genuine")


def test_unknown_time_zone_is_one_line_and_exit_2() -> None:
    import subprocess

    proc = subprocess.run(
        [CAMPUSGUARD, "console", "--tz", "Mars/Olympus", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "campusguard console: --tz 'Mars/Olympus': unknown time zone"


async def test_console_answers_a_missed_checkin_and_realerts_a_duress_upgrade(
    broker: Mosquitto, site: Site
) -> None:
    """Retained post state and incident as the gateway leaves them; P1 answers the post."""
    signer = Signer.load(site.keydir, gateway_kid(GATEWAY_ID))
    post_state = {
        "gateway": GATEWAY_ID,
        "post": "north-gate",
        "site": SITE,
        "place": "North gate post",
        "escalating": True,
        "missed_deadline": "2026-12-01T12:00:00.000Z",
        "rung": 3,
        "of": 3,
        "step": "police",
    }
    acked = {
        "gateway": GATEWAY_ID,
        "incident": "gw-shop-a-1-0",
        "update": "police_ack",
        "update_no": 2,
        "site": SITE,
        "unit": "shop-a",
        "place": "Shop A",
        "kind": "panic",
        "received_at": "2026-12-01T12:00:00.000Z",
        "presses": 1,
        "state": "police_ack",
        "police_ack_at": "2026-12-01T12:00:05.000Z",
        "disposition": "genuine",
    }
    post_topic = f"campusguard/{SITE}/post/north-gate/state"
    open_topic = f"campusguard/{SITE}/open/gw-shop-a-1-0"
    async with client_for(broker.settings(GATEWAY_USER)) as gw:
        await gw.publish(post_topic, signer.seal_obj(post_topic, post_state), qos=1, retain=True)
        await gw.publish(open_topic, signer.seal_obj(open_topic, acked), qos=1, retain=True)
        await gw.subscribe(f"campusguard/{SITE}/duty/+/ack", qos=1)
        term = Terminal()
        s = broker.settings("dutyroom-desk2")
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "console",
            *s.cli_args(),
            "--keydir",
            str(site.dutyroom_dir),
            "--by",
            "Officer Wu",
            stdin=term.slave,
            stdout=term.slave,
            stderr=term.slave,
            env={**os.environ, **s.environ(), "TERM": "xterm"},
        )
        os.close(term.slave)
        try:
            await term.wait_for(lambda: "rung 3/3 police" in term.screen())
            assert " 1  police_ack" in term.screen()
            rang = term.out.count(b"\a")
            upgrade = {**acked, "update": "kind", "update_no": 3, "kind": "duress"}
            alarm_topic = f"campusguard/{SITE}/alarm/shop-a"
            await gw.publish(alarm_topic, signer.seal_obj(alarm_topic, upgrade), qos=1)
            await term.wait_for(lambda: " 1  DURESS!" in term.screen())
            assert term.out.count(b"\a") > rang  # the bell again
            term.type("P1\n")
            async with asyncio.timeout(scaled(10)):
                message = await anext(aiter(gw.messages))
            assert str(message.topic) == f"campusguard/{SITE}/duty/north-gate/ack"
            envelope = json.loads(message.payload)  # type: ignore[arg-type]
            body = json.loads(envelope["body"])  # a signed duty ack
            assert (body["kind"], body["post"], body["by"]) == (
                "duty_ack",
                "north-gate",
                "Officer Wu",
            )
            assert envelope["kid"] == "dutyroom-police"
        finally:
            proc.terminate()
            await proc.wait()
            term.close()


def test_a_gateway_whose_signed_status_stops_is_stale_and_a_replay_does_not_revive_it() -> None:
    b = Board()
    t0 = 1_800_000_000.0
    status = "campusguard/gateway/gw1/status"

    def online(at: float) -> dict[str, Any]:
        return {"gateway": "gw1", "state": "online", "at": iso(at), "period_s": 60.0}

    assert b.take(status, online(t0), t0).kind == "gateway"
    assert b.gateway_state("gw1", t0 + 179) == "online"
    assert b.gateway_state("gw1", t0 + 181).startswith("stale")
    assert b.take(status, online(t0 - 600), t0).kind == "other"  # older: a replay
    assert b.gateway_state("gw1", t0 + 181).startswith("stale")
    b.take(status, online(t0 + 180), t0 + 180)  # the next period's status
    assert b.gateway_state("gw1", t0 + 200) == "online"
    assert "gw1 stale" in b.render(now=t0 + 1000)


async def test_console_on_a_node_frozen_while_subscribing_leaves_no_unretrieved_future(
    tmp_path: Path, site: Site
) -> None:
    """The keepalive expires while the console waits for its SUBACK: aiomqtt stores the
    disconnect in a future nobody awaits (the subscribe ends by its own timeout), and
    asyncio logs "Future exception was never retrieved" with a traceback when the client
    is freed, unless the console reads it."""
    retrying, unretrieved = asyncio.Event(), []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                retrying.set()
            if "never retrieved" in record.getMessage():
                unretrieved.append(record.getMessage())

    # the SUBACK's wait (gateway.relay.mqttsocket.SUBSCRIBE_TIMEOUT_S) outlasts the
    # keepalive (2 s with two nodes: ping, then give up), so the keepalive is what ends
    # the connection, as on a loaded machine
    watch = Watch()
    for name in ("gateway.dutyroom.console", "asyncio"):
        logging.getLogger(name).addHandler(watch)
    with open_broker(tmp_path / "broker") as broker:
        proxy = FreezeAtSubscribe(broker.port)
        async with proxy as port:
            parser = argparse.ArgumentParser()
            console_cli.add_arguments(parser)
            # two --broker: a cluster's keepalive (2 s), so the freeze is noticed quickly
            url = f"mqtt://127.0.0.1:{port}"
            args = parser.parse_args(
                ["--broker", url, "--broker", url, "--keydir", str(site.dutyroom_dir), "--json"]
            )
            console = console_module.Console(console_cli.options(args))
            task = asyncio.create_task(console.run())
            try:
                async with asyncio.timeout(scaled(30)):
                    await retrying.wait()
                    await proxy.passed.wait()  # the console has let the first client go
                # what asyncio would log when the client is freed (whenever the
                # collector gets to it): a disconnect future whose exception nobody read
                unread = [
                    c._disconnected
                    for c in gc.get_objects()
                    if isinstance(c, aiomqtt.Client)
                    and c._disconnected.done()
                    and c._disconnected._log_traceback  # type: ignore[attr-defined]
                ]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                for name in ("gateway.dutyroom.console", "asyncio"):
                    logging.getLogger(name).removeHandler(watch)
    assert proxy.frozen == 1
    assert unread == [] and unretrieved == []


async def test_console_shows_what_came_before_a_suback_that_never_came(
    tmp_path: Path, site: Site
) -> None:
    """Regression (issue 14): a console failed over to a node that sent it the alarms queued
    for its session at once but its SUBACK too late. paho had PUBACKed them on receipt; the
    console dropped them with the connection that its SUBSCRIBE's timeout ended, and the
    broker, PUBACKed, never sent them again: alarms never shown. Now the console shows
    what it receives from the moment it connects, and PUBACKs only what it has shown."""
    signer = Signer.load(site.keydir, gateway_kid(GATEWAY_ID))
    alarm_topic = f"campusguard/{SITE}/alarm/shop-a"
    with open_broker(tmp_path / "broker") as broker:
        url = f"mqtt://desk2@127.0.0.1:{broker.port}"
        # the desk's persistent session, subscribed, away while three alarms come
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username="desk2", identifier="desk2", clean_session=False
        ) as desk:
            await desk.subscribe(f"campusguard/{SITE}/alarm/+", qos=1)
        async with aiomqtt.Client("127.0.0.1", broker.port) as gw:
            for n in range(3):
                body = {"incident": f"{GATEWAY_ID}-shop-a-1-{n}", "update": "new", "update_no": 1}
                body |= {"gateway": GATEWAY_ID, "site": SITE, "unit": "shop-a", "kind": "panic"}
                await gw.publish(alarm_topic, signer.seal_obj(alarm_topic, body), qos=1)
        proxy = DropFirstSubacks(broker.port)
        async with proxy as port:
            url = f"mqtt://desk2@127.0.0.1:{port}"
            parser = argparse.ArgumentParser()
            console_cli.add_arguments(parser)
            args = parser.parse_args(
                ["--broker", url, "--broker", url, "--keydir", str(site.dutyroom_dir), "--json"]
            )
            console = console_module.Console(console_cli.options(args))
            shown: list[dict[str, Any]] = []
            console._emit = shown.append  # type: ignore[method-assign]
            task = asyncio.create_task(console.run())
            try:
                await until(
                    lambda: (
                        len({x["payload"]["incident"] for x in shown if x["kind"] == "alarm"}) == 3
                    ),
                    20,
                    what="the three alarms queued for the desk shown",
                )
                on_first = proxy.connections  # shown as they came, before any SUBACK
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert on_first == 1
