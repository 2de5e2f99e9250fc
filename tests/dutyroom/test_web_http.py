"""The web duty room over HTTPS without a browser: throttling, expiry, roles, the feed.

The server runs for real (aiohttp, TLS from a private CA) on a clock the test moves; no
broker: signed messages are handed to the room as the intake would.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.dutyroom.web.auth import FREE_FAILURES, IDLE_S
from gateway.dutyroom.web.server import DutyRoomServer
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid, write_pair
from tests.support.dutyroom import PASSWORD, Client, Clock, room_options, trusting

GW, SITE, P = "gw1", "s1", "campusguard"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[DutyRoomServer, ssl.SSLContext, Clock]]:
    write_pair(tmp_path / "keys", gateway_kid(GW))
    clock = Clock()
    server = DutyRoomServer(room_options(tmp_path, [], tmp_path / "keys", now=clock))
    for name, role in (("li", "operator"), ("wang", "viewer"), ("chen", "supervisor")):
        server.add_account(name, name.title(), role, PASSWORD)
    ctx = trusting(tmp_path)
    async with server:
        yield server, ctx, clock


def alarm(n: int) -> tuple[str, dict[str, Any]]:
    return f"{P}/{SITE}/alarm/u1", {
        "incident": f"{GW}-u1-1-{n}",
        "update": "new",
        "update_no": 1,
        "gateway": GW,
        "site": SITE,
        "unit": "u1",
        "place": "Gate 门口",
        "kind": "panic",
        "state": "open",
        "presses": 1,
    }


def feed(server: DutyRoomServer, tmp: Path, n: int) -> None:
    topic, body = alarm(n)
    signer = Signer.load(tmp / "keys", gateway_kid(GW))
    server.room.take(topic, signer.seal_obj(topic, body).encode())


async def test_logins_are_throttled_over_http(served: Any) -> None:
    server, ctx, clock = served
    c = Client(server, ctx)
    for _ in range(FREE_FAILURES):
        assert await c.login("li", "wrong password!") == 401
    assert await c.login("li") == 429  # the right password, but too soon
    clock.t += 3
    assert await c.login("li") == 303
    await c.http.close()


async def test_sessions_expire_and_logout_ends_them(served: Any) -> None:
    server, ctx, clock = served
    c = Client(server, ctx)
    assert await c.login("li") == 303
    assert (await c.get("/duty", allow_redirects=False))[0] == 200
    clock.t += IDLE_S + 1
    status, _ = await c.get("/duty", allow_redirects=False)
    assert status == 303  # back to the login page
    assert await c.login("li") == 303
    assert (await c.post("/logout", {"csrf": c.csrf}))[0] == 303
    assert (await c.get("/duty", allow_redirects=False))[0] == 303
    await c.http.close()


async def test_roles_are_enforced_by_the_server(served: Any, tmp_path: Path) -> None:
    server, ctx, _ = served
    viewer, operator, supervisor = (Client(server, ctx) for _ in range(3))
    for c, name in ((viewer, "wang"), (operator, "li"), (supervisor, "chen")):
        assert await c.login(name) == 303
    feed(server, tmp_path, 1)
    iid = f"{GW}-u1-1-1"
    assert (await viewer.post(f"/incident/{iid}/take", {"csrf": viewer.csrf}))[0] == 403
    assert (await operator.post(f"/incident/{iid}/take", {"csrf": operator.csrf}))[0] == 303
    assert (await operator.get("/audit", allow_redirects=False))[0] == 403
    new = {"csrf": operator.csrf, "name": "x", "display": "X", "role": "supervisor"}
    assert (await operator.post("/accounts", {**new, "password": PASSWORD}))[0] == 403
    new["csrf"] = supervisor.csrf
    assert (await supervisor.post("/accounts", {**new, "password": PASSWORD}))[0] == 303
    assert server.db.account("x") is not None
    status, page = await supervisor.get("/audit")
    assert status == 200 and "refused" in page and "take" in page
    # a request from another origin is refused even with the token
    status, _ = await operator.post(
        f"/incident/{iid}/tick/0", {"csrf": operator.csrf}, headers={"Origin": "https://evil"}
    )
    assert status == 403
    for c in (viewer, operator, supervisor):
        await c.http.close()


async def test_the_feed_catches_up_after_last_event_id(served: Any, tmp_path: Path) -> None:
    server, ctx, _ = served
    c = Client(server, ctx)
    assert await c.login("li") == 303
    feed(server, tmp_path, 1)
    last = server.db.feed_last()
    feed(server, tmp_path, 2)  # while this browser was away
    feed(server, tmp_path, 3)
    async with c.http.get(c.url + "/events", ssl=ctx, headers={"Last-Event-ID": str(last)}) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        ids: list[int] = []
        notices: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while len(notices) < 2:
                line = (await r.content.readline()).decode().strip()
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                elif line.startswith("data: "):
                    notices.append(json.loads(line[6:]))
        assert ids == [last + 1, last + 2]
        assert [n["notice"]["incident"] for n in notices] == [f"{GW}-u1-1-2", f"{GW}-u1-1-3"]
        feed(server, tmp_path, 4)  # and then live
        async with asyncio.timeout(30):
            while True:
                line = (await r.content.readline()).decode().strip()
                if line.startswith("id: "):
                    assert int(line[4:]) == last + 3
                    break
    await c.http.close()
