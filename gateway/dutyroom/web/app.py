"""The web duty room's HTTP side (aiohttp): pages, forms, the live feed (SSE).

Every page needs a live session (:mod:`.auth`); every POST needs its session's CSRF
token and, when the browser names one, an ``Origin`` that is this server. Operators'
actions go to :class:`~.room.Room`; what changes is told to every browser over
server-sent events (``/events``), numbered from the database's feed so that a browser
that reconnects (``Last-Event-ID``) catches up on what it missed, then fetches the
sections it shows again. Cookies are ``Secure; HttpOnly; SameSite=Strict``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import tzinfo
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.core.errors import LoginRefused, RoomError
from gateway.dutyroom.web import views
from gateway.dutyroom.web.auth import Auth, Who, may
from gateway.dutyroom.web.room import Room

log = logging.getLogger(__name__)

SESSION_COOKIE = "cg_session"
LOGIN_COOKIE = "cg_login"
KEEPALIVE_S = 15.0
RECONNECT_MS = 1000  # how soon a browser tries again after losing the feed
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Origin null
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC = {"dutyroom.js": "text/javascript", "dutyroom.css": "text/css"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hub:
    """The browsers listening on ``/events``; each change goes to all, numbered."""

    def __init__(self, room: Room) -> None:
        """Take the room's changes."""
        self.room = room
        self.queues: set[asyncio.Queue[tuple[int, str]]] = set()
        room.on_change = self.changed

    def close(self) -> None:
        """End every browser's feed (the server stops; browsers reconnect later)."""
        for q in list(self.queues):
            q.put_nowait((-1, ""))

    def changed(self, sections: set[str], notice: dict[str, Any] | None) -> None:
        """Record the change in the feed and push it to every browser."""
        body = {"sections": sorted(sections)}
        if notice:
            body["notice"] = notice  # type: ignore[assignment]
        seq = self.room.db.feed_add(self.room.now(), "change", body)
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        for q in list(self.queues):
            q.put_nowait((seq, text))


class DutyRoomApp:
    """The aiohttp application of one duty room."""

    def __init__(self, room: Room, auth: Auth, *, tz: tzinfo | None = None) -> None:
        """``room`` and ``auth`` share the duty room's database."""
        self.room = room
        self.auth = auth
        self.tz = tz
        self.hub = Hub(room)
        self.app = web.Application(middlewares=[self._headers], client_max_size=MAX_BODY)
        r = self.app.router
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/static/{name}", self.static)
        r.add_get("/", self.alarms)
        r.add_get("/duty", self.simple("duty", "Guard duty 值守"))
        r.add_get("/health", self.simple("health", "Health 设备状态"))
        r.add_get("/plan", self.simple("plan", "Site plan 平面图"))
        r.add_get("/reports", self.simple("reports", "Reports 报表"))
        r.add_get("/history", self.history)
        r.add_get("/report", self.report)
        r.add_get("/audit", self.audit)
        r.add_get("/accounts", self.accounts)
        r.add_post("/accounts", self.add_account)
        r.add_get("/incident/{iid}", self.incident)
        r.add_post("/incident/{iid}/take", self.take)
        r.add_post("/incident/{iid}/tick/{step}", self.tick)
        r.add_post("/incident/{iid}/ack", self.ack)
        r.add_post("/post/{post}/ack", self.ack_post)
        r.add_get("/fragment/{name}", self.fragment)
        r.add_get("/events", self.events)

    # -- plumbing ------------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    def who(self, request: web.Request) -> Who | None:
        """The session behind the request."""
        return self.auth.session(request.cookies.get(SESSION_COOKIE))

    def need(self, request: web.Request, action: str = "read") -> Who:
        """The session, allowed to ``action``; else a redirect to log in, or 403."""
        who = self.who(request)
        if who is None:
            if request.method == "GET" and request.path != "/events":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="log in first\n")
        if not may(who.role, action):
            self.room.db.audit(self.room.now(), who.name, "refused", request.path, who.role)
            raise web.HTTPForbidden(text=f"a {who.role} may not do this\n")
        return who

    async def need_post(self, request: web.Request, action: str) -> tuple[Who, dict[str, str]]:
        """A POST's session, role, origin and CSRF token checked; its form fields."""
        who = self.need(request, "read")
        self._same_origin(request)
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        sent = fields.get("csrf") or request.headers.get("X-CSRF-Token")
        if not Auth.csrf_ok(who, sent):
            self.room.db.audit(self.room.now(), who.name, "csrf_refused", request.path)
            raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
        if not may(who.role, action):
            self.room.db.audit(self.room.now(), who.name, "refused", request.path, who.role)
            raise web.HTTPForbidden(text=f"a {who.role} may not do this\n")
        return who, fields

    @staticmethod
    def _same_origin(request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin request refused\n")

    def html(self, text: str, status: int = 200) -> web.Response:
        """An HTML response."""
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    # -- login ---------------------------------------------------------------------------------

    async def login_form(self, request: web.Request, message: str = "") -> web.Response:
        """The login page, with its own CSRF value in a cookie and the form."""
        token = secrets.token_urlsafe(24)
        resp = self.html(views.login_page(token, message), 200 if not message else 401)
        resp.set_cookie(
            LOGIN_COOKIE, token, secure=True, httponly=True, samesite="Strict", max_age=3600
        )
        return resp

    async def login(self, request: web.Request) -> web.Response:
        """Check the password (throttled); start a session."""
        self._same_origin(request)
        form = await request.post()
        sent, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE)
        if not isinstance(sent, str) or not cookie or not secrets.compare_digest(sent, cookie):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the login page\n")
        name, password = str(form.get("name") or "")[:64], str(form.get("password") or "")
        addr = request.remote or "?"
        now = self.room.now()
        try:
            token, who = self.auth.login(name, password[:1024], addr)
        except LoginRefused as exc:
            self.room.db.audit(now, name, "login_failed", addr, exc.reason)
            if exc.reason == "throttled":
                resp = await self.login_form(
                    request, f"Too many failed attempts: wait {exc.retry_after:.0f} s."
                )
                resp.set_status(429)
                resp.headers["Retry-After"] = str(int(exc.retry_after) + 1)
                return resp
            return await self.login_form(request, "Wrong account or password. 账户或密码错误。")
        self.room.db.audit(now, who.name, "login", addr, who.role)
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(SESSION_COOKIE, token, secure=True, httponly=True, samesite="Strict")
        resp.del_cookie(LOGIN_COOKIE)
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        """End the session."""
        who, _ = await self.need_post(request, "read")
        self.auth.logout(who)
        self.room.db.audit(self.room.now(), who.name, "logout")
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(SESSION_COOKIE)
        raise resp

    async def static(self, request: web.Request) -> web.Response:
        """The page's script and style (package data)."""
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        text = resources.files("gateway.dutyroom.web").joinpath("static", name).read_text()
        return web.Response(text=text, content_type=STATIC[name], charset="utf-8")

    # -- pages ---------------------------------------------------------------------------------

    def _section(self, who: Who, name: str, arg: str = "") -> str:
        url = f"/fragment/{name}" + (f"?id={quote(arg, safe='')}" if arg else "")
        key = f"{name}:{arg}" if arg else name
        inner = views.fragment(name, self.room, who, self.tz, arg, self.room.now()) or ""
        return views.section(key, url, inner)

    async def alarms(self, request: web.Request) -> web.Response:
        """The alarm queue."""
        who = self.need(request)
        body = "<h1>Alarm queue 警情队列</h1>" + self._section(who, "queue")
        return self.html(views.page(who, "Alarms", body, path="/"))

    def simple(self, name: str, title: str) -> Handler:
        """A page of one section."""

        async def handler(request: web.Request) -> web.Response:
            who = self.need(request)
            body = f"<h1>{views.e(title)}</h1>" + self._section(who, name)
            return self.html(views.page(who, title, body, path=request.path))

        return handler

    async def incident(self, request: web.Request) -> web.Response:
        """One incident's detail."""
        who = self.need(request)
        iid = request.match_info["iid"]
        if self.room.db.incident(iid) is None:
            raise web.HTTPNotFound(text="no such incident\n")
        body = self._section(who, "incident", iid)
        return self.html(views.page(who, f"Incident {iid}", body, path="/"))

    async def history(self, request: web.Request) -> web.Response:
        """Every incident kept."""
        who = self.need(request)
        body = "<h1>History 历史</h1>" + views.history_html(self.room, self.tz)
        return self.html(views.page(who, "History", body, path="/history"))

    async def audit(self, request: web.Request) -> web.Response:
        """The audit log (supervisors)."""
        who = self.need(request, "manage")
        body = "<h1>Audit 审计</h1>" + views.audit_html(self.room, self.tz)
        return self.html(views.page(who, "Audit", body, path="/audit"))

    async def accounts(self, request: web.Request, message: str = "") -> web.Response:
        """Accounts (supervisors)."""
        who = self.need(request, "manage")
        body = "<h1>Accounts 账户</h1>" + views.accounts_html(self.room, who, message)
        return self.html(views.page(who, "Accounts", body, path="/accounts"))

    async def add_account(self, request: web.Request) -> web.Response:
        """Create or reset an account (supervisors)."""
        who, f = await self.need_post(request, "manage")
        try:
            self.auth.add_account(
                f.get("name", ""), f.get("display", ""), f.get("role", ""), f.get("password", "")
            )
        except ValueError as exc:
            return await self.accounts(request, str(exc))
        self.room.db.audit(
            self.room.now(), who.name, "account", f.get("name", ""), f.get("role", "")
        )
        raise web.HTTPSeeOther("/accounts")

    async def report(self, request: web.Request) -> web.Response:
        """A report to read, or to download."""
        self.need(request)
        topic = request.query.get("topic", "")
        text = self.room.db.report(topic)
        if text is None:
            raise web.HTTPNotFound(text="no such report\n")
        is_json = text.startswith("{")
        kind = "application/json" if is_json else "text/plain"
        resp = web.Response(text=text, content_type=kind, charset="utf-8")
        if request.query.get("download"):
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in topic)
            ext = "json" if is_json else "md"
            resp.headers["Content-Disposition"] = f'attachment; filename="{name}.{ext}"'
        return resp

    async def fragment(self, request: web.Request) -> web.Response:
        """One section, for the page's script."""
        who = self.need(request)
        name = request.match_info["name"]
        text = views.fragment(
            name, self.room, who, self.tz, request.query.get("id", ""), self.room.now()
        )
        if text is None:
            raise web.HTTPNotFound()
        return self.html(text)

    # -- actions -------------------------------------------------------------------------------

    async def _act(
        self, request: web.Request, back: str, fn: Callable[[], Awaitable[None]]
    ) -> web.Response:
        try:
            await fn()
        except RoomError as exc:
            raise _status(exc) from None
        if request.headers.get("X-Requested-With") == "fetch":
            return web.Response(text="ok\n")
        raise web.HTTPSeeOther(back)

    async def take(self, request: web.Request) -> web.Response:
        """Take an incident."""
        who, _ = await self.need_post(request, "act")
        iid = request.match_info["iid"]

        async def do() -> None:
            self.room.take_incident(who, iid)

        return await self._act(request, f"/incident/{quote(iid, safe='')}", do)

    async def tick(self, request: web.Request) -> web.Response:
        """Tick a step of the action plan."""
        who, _ = await self.need_post(request, "act")
        iid = request.match_info["iid"]
        try:
            step = int(request.match_info["step"])
        except ValueError:
            raise web.HTTPBadRequest(text="step: a number\n") from None

        async def do() -> None:
            self.room.tick(who, iid, step)

        return await self._act(request, f"/incident/{quote(iid, safe='')}", do)

    async def ack(self, request: web.Request) -> web.Response:
        """Acknowledge an incident (signed, in the operator's name)."""
        who, f = await self.need_post(request, "act")
        iid = request.match_info["iid"]

        async def do() -> None:
            await self.room.ack(who, iid, f.get("disposition", "genuine"), f.get("note", ""))

        return await self._act(request, f"/incident/{quote(iid, safe='')}", do)

    async def ack_post(self, request: web.Request) -> web.Response:
        """Answer a missed check-in."""
        who, _ = await self.need_post(request, "act")
        post = request.match_info["post"]

        async def do() -> None:
            await self.room.ack_post(who, post)

        return await self._act(request, "/duty", do)

    # -- the live feed -------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: what changed, numbered; catch-up after ``Last-Event-ID``."""
        who = self.need(request)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await resp.prepare(request)
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.hub.queues.add(queue)
        try:
            await resp.write(f"retry: {RECONNECT_MS}\n\n".encode())
            last = request.headers.get("Last-Event-ID", "")
            if last.isdigit():
                for seq, _kind, body in self.room.db.feed_after(int(last)):
                    await resp.write(_event(seq, json.dumps(body, ensure_ascii=False)))
            else:
                await resp.write(_event(self.room.db.feed_last(), '{"sections":[]}'))
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        seq, text = await queue.get()
                except TimeoutError:
                    if self.auth.session(request.cookies.get(SESSION_COOKIE)) is None:
                        break  # the session ended: the browser must log in again
                    await resp.write(b": keepalive\n\n")
                    continue
                if seq < 0:
                    break  # the server stops
                await resp.write(_event(seq, text))
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self.hub.queues.discard(queue)
            del who
        return resp


def _event(seq: int, text: str) -> bytes:
    return f"id: {seq}\nevent: change\ndata: {text}\n\n".encode()


def _status(exc: RoomError) -> web.HTTPException:
    cls: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,
    }
    return cls.get(exc.status, web.HTTPConflict)(text=f"{exc}\n")
