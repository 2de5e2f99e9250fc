"""The web duty room's pages, rendered on the server as HTML (no front-end build).

Each live part of a page is a *section* (``<section data-section=NAME
data-fragment=URL>``) that :func:`fragment` renders alone; the page's script fetches it
again when the server says it changed. Everything from the broker or an operator is
escaped. Labels are in English and Chinese: the register's places are Chinese addresses.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, tzinfo
from html import escape
from typing import Any
from urllib.parse import quote

from gateway.dutyroom.board import IncidentRow, event_text
from gateway.dutyroom.web.auth import Who, may
from gateway.dutyroom.web.plans import plan_for
from gateway.dutyroom.web.room import Room

DISPOSITION_LABELS = {
    "genuine": "genuine 真实警情",
    "false_alarm": "false alarm 误报",
    "test": "test 测试",
}
NAV = (
    ("/", "Alarms 警情"),
    ("/duty", "Guard duty 值守"),
    ("/health", "Health 设备状态"),
    ("/plan", "Site plan 平面图"),
    ("/history", "History 历史"),
    ("/reports", "Reports 报表"),
)
SUPERVISOR_NAV = (("/audit", "Audit 审计"), ("/accounts", "Accounts 账户"))


def e(value: Any) -> str:
    """Text from anywhere, safe in HTML."""
    return escape("" if value is None else str(value), quote=True)


def ts(text: Any) -> float | None:
    """An ISO 8601 time (or seconds) as seconds since the epoch."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def clock(t: float | None, tz: tzinfo | None, *, date: bool = False) -> str:
    """A time of day in the duty room's zone (``-`` if unknown)."""
    if t is None or not math.isfinite(t):
        return "-"
    try:
        d = datetime.fromtimestamp(t, tz).astimezone(tz)
    except (OverflowError, OSError, ValueError):
        return "?"
    return f"{d:%Y-%m-%d %H:%M:%S}" if date else f"{d:%H:%M:%S}"


def age(seconds: float) -> str:
    """A duration, short."""
    if not 0 <= seconds < 1e9:
        return "0s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def csrf_field(who: Who) -> str:
    """The hidden field every form carries."""
    return f'<input type="hidden" name="csrf" value="{e(who.csrf)}">'


def page(who: Who | None, title: str, body: str, *, path: str = "/") -> str:
    """A whole page around ``body``."""
    head = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)} · CampusGuard duty room</title>"
        "<link rel='stylesheet' href='/static/dutyroom.css'>"
    )
    if who is None:
        return f"{head}</head><body class='login'>{body}</body></html>"
    head += (
        f"<meta name='csrf' content='{e(who.csrf)}'>"
        "<script src='/static/dutyroom.js' defer></script></head>"
    )
    nav = NAV + (SUPERVISOR_NAV if may(who.role, "manage") else ())
    links = "".join(
        f"<a href='{href}'{' class=here' if href == path else ''}>{e(text)}</a>"
        for href, text in nav
    )
    bar = (
        "<header><strong>CampusGuard 校园护卫 · duty room 值班室</strong>"
        f"<nav>{links}</nav>"
        "<section data-section='status' data-fragment='/fragment/status' id='status'></section>"
        "<span class='live' id='live'>connecting…</span>"
        "<button type='button' id='sound'>Enable sound 开启声音</button>"
        f"<span class='who'>{e(who.display)} ({e(who.role)})</span>"
        f"<form method='post' action='/logout'>{csrf_field(who)}"
        "<button>Log out 退出</button></form></header>"
        "<div id='notices' aria-live='assertive'></div>"
    )
    return f"{head}<body class='role-{e(who.role)}'>{bar}<main>{body}</main></body></html>"


def section(name: str, url: str, inner: str) -> str:
    """A live part of a page."""
    return f"<section data-section='{e(name)}' data-fragment='{e(url)}'>{inner}</section>"


def login_page(token: str, message: str = "") -> str:
    """The login form (``token`` is the login form's own CSRF value)."""
    msg = f"<p class='error' role='alert'>{e(message)}</p>" if message else ""
    body = (
        "<form method='post' action='/login' class='login'>"
        "<h1>CampusGuard duty room 值班室</h1>"
        f"{msg}<input type='hidden' name='csrf' value='{e(token)}'>"
        "<label>Account 账户 <input name='name' autocomplete='username' required></label>"
        "<label>Password 密码 <input name='password' type='password'"
        " autocomplete='current-password' required></label>"
        "<button>Log in 登录</button></form>"
    )
    return page(None, "Log in", body)


# -- sections --------------------------------------------------------------------------------


def status_html(room: Room, now: float, tz: tzinfo | None = None) -> str:
    """Broker connection and its last gap, gateways, dropped messages."""
    st = room.status()
    if st["connected"]:
        parts = ["<span class='ok'>broker connected</span>"]
    elif st["down_since"] is not None:
        since = st["down_since"]
        parts = [
            "<span class='bad'>BROKER NOT CONNECTED 未连接 since"
            f" {clock(since, tz)} ({age(now - since)})</span>"
        ]
    else:
        parts = ["<span class='bad'>BROKER NOT CONNECTED 未连接</span>"]
    gap = st["last_gap"]
    if gap is not None:
        cls = "ok" if gap.kept else "bad"
        parts.append(
            f"<span class='{cls} gap'>connection gap 中断 {clock(gap.since, tz)}–"
            f"{clock(gap.back, tz)}: {e(gap.text())}</span>"
        )
    for gid in sorted(room.board.gateways):
        state = room.board.gateway_state(gid, now)
        cls = "ok" if state == "online" else "bad"
        parts.append(f"<span class='{cls}'>gateway {e(gid)}: {e(state)}</span>")
    if st["dropped"]:
        parts.append(f"<span class='bad'>dropped (not signed): {st['dropped']}</span>")
    return " · ".join(parts)


def _row_state(room: Room, iid: str, row: IncidentRow) -> tuple[str, str]:
    d = row.data
    state = str(d.get("state", "?"))
    if d.get("police_ack_at") and not row.realert:
        label = f"police acknowledged 已确认 ({d.get('police_ack_by') or '?'})"
    elif room.db.note(iid) is not None and row.waiting:
        label = "ack sent, waiting for the gateway 确认已发送"
    elif row.waiting:
        label = "WAITING 待确认"
    else:
        label = state
    if state == "closed":
        label = "closed 已关闭"
    return state, label


def queue_html(room: Room, who: Who, now: float, tz: tzinfo | None) -> str:
    """The alarm queue: waiting first, newest first; duress and silent marked."""
    takes = room.db.takes()
    realerts = room.db.realerts()
    rows = room.board.ordered()
    if not rows:
        return "<p class='empty'>No incidents. 当前无警情。</p>"
    out = [
        "<table class='queue'><thead><tr><th>#</th><th>state 状态</th><th>kind 类型</th>"
        "<th>place 地点</th><th>unit 设备</th><th>presses</th><th>first press 首次按下</th>"
        "<th>age</th><th>handler 处理人</th></tr></thead><tbody>"
    ]
    for row in rows:
        d = row.data
        iid = str(d.get("incident"))
        state, label = _row_state(room, iid, row)
        kind = str(d.get("kind", "?"))
        classes = ["incident", f"kind-{kind}"]
        if row.waiting:
            classes.append("waiting")
        if iid in realerts and row.waiting:
            classes.append("realert")
            label = f"RE-ALERT 再次告警 · {label}"
        if row.realert:
            classes.append("realert")
        if d.get("test"):
            classes.append("test")
        mark = ""
        if kind == "duress":
            mark = " <b class='mark duress'>DURESS 胁迫</b>"
        elif kind == "silent":
            mark = " <b class='mark silent'>SILENT 静默</b>"
        first = ts(d.get("first_press_at")) or ts(d.get("received_at"))
        taken = takes.get(iid)
        handler = f"{e(taken[0])}" if taken else "-"
        out.append(
            f"<tr class='{' '.join(classes)}' id='row-{e(iid)}' data-incident='{e(iid)}'"
            f" data-state='{e(state)}' data-unit='{e(d.get('unit'))}'>"
            f"<td>{row.number}</td><td class='state'>{e(label)}</td>"
            f"<td class='kind'>{e(kind)}{mark}</td>"
            f"<td><a href='/incident/{quote(iid, safe='')}'>{e(d.get('place'))}</a></td>"
            f"<td>{e(d.get('unit'))}</td><td>{e(d.get('presses'))}</td>"
            f"<td>{clock(first, tz)}</td><td>{age(now - (first or now))}</td>"
            f"<td class='handler'>{handler}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def incident_html(room: Room, who: Who, iid: str, now: float, tz: tzinfo | None) -> str:
    """One incident: facts, timeline, handler, action plan, acknowledgement."""
    d = room.db.incident(iid)
    if d is None:
        return "<p>No such incident.</p>"
    row = room.board.incidents.get(iid)
    waiting = row.waiting if row is not None else False
    kind = str(d.get("kind", "?"))
    unit = room.register.units.get(str(d.get("unit")), {})
    taken = room.db.takes().get(iid)
    note = room.db.note(iid)
    act = may(who.role, "act")
    facts = [
        ("incident", iid),
        ("state 状态", d.get("state")),
        ("kind 类型", kind + (" (test)" if d.get("test") else "")),
        ("place 地点", d.get("place")),
        ("unit 设备", d.get("unit")),
        ("owner 持有人", d.get("owner") or unit.get("owner")),
        ("presses 按键次数", d.get("presses")),
        ("first press 首次按下", clock(ts(d.get("first_press_at")), tz, date=True)),
        ("received 收到", clock(ts(d.get("received_at")), tz, date=True)),
        (
            "police ack 警方确认",
            f"{clock(ts(d.get('police_ack_at')), tz)} by {d.get('police_ack_by')}"
            if d.get("police_ack_at")
            else "-",
        ),
        ("disposition 处置", DISPOSITION_LABELS.get(str(d.get("disposition")), "-")),
        ("handler 处理人", f"{taken[0]} since {clock(taken[1], tz)}" if taken else "-"),
    ]
    if note is not None:
        facts.append(("note 备注", f"{note[2]} ({note[0]}, {clock(note[3], tz)})"))
    cameras = unit.get("cameras")
    if isinstance(cameras, list) and cameras:
        facts.append(("cameras 摄像头", ", ".join(_camera_text(c) for c in cameras)))
    out = [f"<h2 class='kind-{e(kind)}'>{e(d.get('place'))}</h2><dl class='facts'>"]
    out += [f"<dt>{e(k)}</dt><dd data-field='{e(k.split()[0])}'>{e(v)}</dd>" for k, v in facts]
    out.append("</dl>")
    base = f"/incident/{quote(iid, safe='')}"
    if act and d.get("state") != "closed":
        mine = taken is not None and taken[0] == who.display
        out.append(
            f"<form method='post' action='{base}/take' class='inline'>{csrf_field(who)}"
            f"<button {'disabled' if mine else ''}>"
            f"{'Taken by you 由你处理' if mine else 'Take 接手'}</button></form>"
        )
    ticks = room.db.ticks(iid)
    out.append("<h3>Action plan 处置预案</h3><ol class='plan'>")
    for i, step in enumerate(plan_for(kind)):
        if i in ticks:
            out.append(
                f"<li class='done'>{e(step)} <small>✔ {e(ticks[i][0])} "
                f"{clock(ticks[i][1], tz)}</small></li>"
            )
        elif act:
            out.append(
                f"<li>{e(step)} <form method='post' action='{base}/tick/{i}' class='inline'>"
                f"{csrf_field(who)}<button>Done 完成</button></form></li>"
            )
        else:
            out.append(f"<li>{e(step)}</li>")
    out.append("</ol>")
    if act and (waiting or (row is not None and row.realert)) and d.get("state") != "closed":
        options = "".join(
            f"<option value='{k}'>{e(v)}</option>" for k, v in DISPOSITION_LABELS.items()
        )
        out.append(
            f"<form method='post' action='{base}/ack' class='ack'>{csrf_field(who)}"
            "<h3>Acknowledge 确认</h3>"
            f"<label>Disposition 处置 <select name='disposition'>{options}</select></label>"
            "<label>Note 备注 <textarea name='note' rows='2' maxlength='2000'></textarea></label>"
            "<button class='ack'>Acknowledge 确认警情</button></form>"
        )
    out.append("<h3>Timeline 时间线</h3><ol class='timeline'>")
    for at, what, by, detail in room.db.timeline(iid):
        who_txt = f" · {e(by)}" if by else ""
        det = f" · {e(detail)}" if detail else ""
        out.append(f"<li>{clock(at, tz)} <b>{e(what)}</b>{who_txt}{det}</li>")
    out.append("</ol>")
    return "".join(out)


def duty_html(room: Room, who: Who, now: float, tz: tzinfo | None) -> str:
    """Guard posts: shift, last check-in, next due, missed, rung, acknowledge."""
    posts = dict(room.board.posts)
    for a in room.board.post_alerts.values():
        posts.setdefault(a.post, {"post": a.post, "site": a.site})
    if not posts:
        return "<p class='empty'>No guard posts. 无值守岗位。</p>"
    out = [
        "<table class='duty'><thead><tr><th>post 岗位</th><th>place</th><th>shift 班次</th>"
        "<th>last check-in 上次签到</th><th>next due 下次</th><th>state</th>"
        "<th>rung 升级</th><th></th></tr></thead><tbody>"
    ]
    for pid in sorted(posts):
        p = posts[pid]
        alert = room.board.post_alerts.get(pid)
        missed = bool(p.get("escalating")) or alert is not None
        shift = p.get("shift")
        if isinstance(shift, dict) and (shift.get("start") or shift.get("end")):
            start, end = ts(shift.get("start")), ts(shift.get("end"))
            shift_txt = f"{clock(start, tz)} - {clock(end, tz)}"
        elif isinstance(shift, dict):
            shift_txt = "around the clock 全天"  # an unbounded duty period
        else:
            shift_txt = "off duty 不在岗" if p.get("on_duty") is False else "-"
        rung = alert.rung if alert is not None and alert.rung else p.get("rung") or 0
        of = alert.of if alert is not None and alert.of else p.get("of") or 0
        step = (alert.step if alert is not None else None) or p.get("step") or ""
        state = "MISSED 漏签" if missed else ("on duty 在岗" if p.get("on_duty") else "-")
        button = ""
        if missed and may(who.role, "act"):
            button = (
                f"<form method='post' action='/post/{quote(pid, safe='')}/ack' class='inline'>"
                f"{csrf_field(who)}<button>Acknowledge 确认</button></form>"
            )
        out.append(
            f"<tr class='post{' missed' if missed else ''}' id='post-{e(pid)}'"
            f" data-rung='{e(rung)}'>"
            f"<td>{e(pid)}</td><td>{e(p.get('place') or (alert.place if alert else ''))}</td>"
            f"<td>{e(shift_txt)}</td><td>{clock(ts(p.get('last_checkin')), tz)}</td>"
            f"<td>{clock(ts(p.get('next_due')), tz)}</td><td class='state'>{e(state)}</td>"
            f"<td class='rung'>{f'{rung}/{of} {e(step)}' if rung else '-'}</td>"
            f"<td>{button}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _month_start(now: float, tz: tzinfo | None) -> float:
    d = datetime.fromtimestamp(now, tz).astimezone(tz)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def health_html(room: Room, who: Who, now: float, tz: tzinfo | None) -> str:
    """Units (state, battery, tamper, mains, last heard, availability) and gateways."""
    out = ["<h3>Gateways 网关</h3><table class='gateways'><tbody>"]
    for gid in sorted(room.board.gateways):
        state = room.board.gateway_state(gid, now)
        at = room.board.status_at.get(gid, (0.0, 0.0))[0]
        problems = room.gateway_problems.get(gid, {})
        said = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())) or "clock, links ok"
        ok = state == "online" and not problems
        out.append(
            f"<tr class='{'ok' if ok else 'bad'}' id='gateway-{e(gid)}'><td>{e(gid)}</td>"
            f"<td>{e(state)}</td><td>status {clock(at or None, tz)}</td>"
            f"<td class='problems'>{e(said)}</td></tr>"
        )
    out.append("</tbody></table><h3>Units 设备</h3>")
    units = room.board.units
    if not units:
        out.append("<p class='empty'>No unit state yet.</p>")
        return "".join(out)
    month = _month_start(now, tz)
    out.append(
        "<table class='units'><thead><tr><th>unit</th><th>place</th><th>state</th>"
        "<th>battery</th><th>tamper</th><th>mains</th><th>last heard</th>"
        "<th>availability (month)</th></tr></thead><tbody>"
    )
    for uid in sorted(units):
        u = units[uid]
        state = str(u.get("state"))
        avail = room.db.availability(uid, month, now)
        trouble = state == "offline" or u.get("tamper") or u.get("mains_lost")
        bat = u.get("battery_mv")
        out.append(
            f"<tr class='unit state-{e(state)}{' trouble' if trouble else ''}' id='unit-{e(uid)}'>"
            f"<td>{e(uid)}</td><td>{e(u.get('place'))}</td><td>{e(state.replace('_', ' '))}</td>"
            f"<td>{e(f'{bat} mV' if bat else '-')}{' LOW' if u.get('low_battery') else ''}</td>"
            f"<td>{'OPEN 打开' if u.get('tamper') else 'closed'}</td>"
            f"<td>{'LOST 断电' if u.get('mains_lost') else 'ok'}</td>"
            f"<td>{clock(ts(u.get('last_heard')), tz)}</td>"
            f"<td>{'-' if avail is None else f'{avail * 100:.2f} %'}</td></tr>"
        )
    out.append("</tbody></table><h3>Recent events 最近事件</h3><ul class='events'>")
    for ev in reversed(room.board.events):
        who_txt = ev.get("unit") or ev.get("post") or ""
        out.append(f"<li>{clock(ts(ev.get('at')), tz)} {e(event_text(ev))} {e(who_txt)}</li>")
    out.append("</ul>")
    return "".join(out)


def plan_html(room: Room, who: Who, now: float, tz: tzinfo | None) -> str:
    """The site plan as SVG: each campus, its units around it, alarms lit."""
    placed = {
        uid: u for uid, u in room.register.units.items() if isinstance(u.get("position"), list)
    }
    sites = {
        sid: s for sid, s in room.register.sites.items() if isinstance(s.get("position"), list)
    }
    if not placed and not sites:
        return "<p class='empty'>No positions in the register yet (position: [east, north]).</p>"
    xs = [float(u["position"][0]) for u in placed.values()] + [
        float(s["position"][0]) for s in sites.values()
    ]
    ys = [float(u["position"][1]) for u in placed.values()] + [
        float(s["position"][1]) for s in sites.values()
    ]
    pad = 60.0
    x0, x1, y0, y1 = min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad
    lit = {
        str(r.data.get("unit")): str(r.data.get("kind"))
        for r in room.board.incidents.values()
        if r.waiting
    }
    out = [
        f"<svg class='siteplan' viewBox='{x0:g} {-y1:g} {x1 - x0:g} {y1 - y0:g}'"
        " xmlns='http://www.w3.org/2000/svg' role='img' aria-label='site plan'>"
    ]
    for sid, s in sites.items():
        x, y = float(s["position"][0]), float(s["position"][1])
        out.append(
            f"<rect x='{x - 50:g}' y='{-y - 35:g}' width='100' height='70' fill='#e8f0e0'"
            f" stroke='#4a6' stroke-width='1.5'><title>{e(s.get('name'))}</title></rect>"
            f"<text x='{x:g}' y='{-y:g}' text-anchor='middle' font-size='9'>"
            f"{e(s.get('name') or sid)}</text>"
        )
    for uid, u in sorted(placed.items()):
        x, y = float(u["position"][0]), float(u["position"][1])
        state = str(room.board.units.get(uid, {}).get("state", ""))
        fill = "#888" if state in ("offline", "not_installed") else "#27a"
        cls = "unit"
        if uid in lit:
            fill = "#d00" if lit[uid] != "duress" else "#a0a"
            cls = "unit lit"
        out.append(
            f"<g class='{cls}' id='plan-{e(uid)}'><circle cx='{x:g}' cy='{-y:g}' r='6'"
            f" fill='{fill}' stroke='#000'><title>{e(uid)}: {e(u.get('place'))}</title></circle>"
            f"<text x='{x + 8:g}' y='{-y + 3:g}' font-size='7'>{e(uid)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def history_html(room: Room, tz: tzinfo | None) -> str:
    """Every incident kept, newest first."""
    out = [
        "<table class='history'><thead><tr><th>first seen</th><th>incident</th><th>kind</th>"
        "<th>place</th><th>state</th><th>police ack</th><th>disposition</th></tr></thead><tbody>"
    ]
    for d in room.db.history(500):
        iid = str(d.get("incident"))
        out.append(
            f"<tr><td>{clock(ts(d.get('received_at')), tz, date=True)}</td>"
            f"<td><a href='/incident/{quote(iid, safe='')}'>{e(iid)}</a></td>"
            f"<td>{e(d.get('kind'))}</td><td>{e(d.get('place'))}</td><td>{e(d.get('state'))}</td>"
            f"<td>{e(d.get('police_ack_by') or '-')}</td>"
            f"<td>{e(DISPOSITION_LABELS.get(str(d.get('disposition')), '-'))}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def reports_html(room: Room, tz: tzinfo | None) -> str:
    """Reports the gateways published, to view and download."""
    rows = room.db.reports()
    if not rows:
        return "<p class='empty'>No reports published yet. 暂无报表。</p>"
    out = ["<ul class='reports'>"]
    for topic, site, name, at in rows:
        q = quote(topic, safe="")
        out.append(
            f"<li>{e(site)} · <a href='/report?topic={q}'>{e(name)}</a> "
            f"({clock(at, tz, date=True)}) · <a href='/report?topic={q}&download=1'>"
            "download 下载</a></li>"
        )
    out.append("</ul>")
    return "".join(out)


def audit_html(room: Room, tz: tzinfo | None) -> str:
    """The audit log, newest first."""
    out = [
        "<table class='audit'><thead><tr><th>time</th><th>who</th><th>action</th>"
        "<th>subject</th><th>detail</th></tr></thead><tbody>"
    ]
    for at, who, action, subject, detail in room.db.audit_rows(500):
        out.append(
            f"<tr><td>{clock(at, tz, date=True)}</td><td>{e(who)}</td><td>{e(action)}</td>"
            f"<td>{e(subject)}</td><td>{e(detail)}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def accounts_html(room: Room, who: Who, message: str = "") -> str:
    """Accounts and the form to add one (supervisors)."""
    out = [f"<p class='note'>{e(message)}</p>" if message else ""]
    out.append("<table class='accounts'><thead><tr><th>account</th><th>name</th><th>role</th>")
    out.append("</tr></thead><tbody>")
    for a in room.db.accounts():
        out.append(f"<tr><td>{e(a.name)}</td><td>{e(a.display)}</td><td>{e(a.role)}</td></tr>")
    out.append(
        "</tbody></table><form method='post' action='/accounts' class='account'>"
        f"{csrf_field(who)}<h3>Add or reset an account 新增账户</h3>"
        "<label>Account <input name='name' required></label>"
        "<label>Name on acks <input name='display' required></label>"
        "<label>Role <select name='role'><option>operator</option><option>viewer</option>"
        "<option>supervisor</option></select></label>"
        "<label>Password (10+) <input name='password' type='password' minlength='10'"
        " required></label><button>Save 保存</button></form>"
    )
    return "".join(out)


def fragment(
    name: str, room: Room, who: Who, tz: tzinfo | None, arg: str = "", now: float | None = None
) -> str | None:
    """The HTML of section ``name`` (None if there is no such section)."""
    now = time.time() if now is None else now
    if name == "status":
        return status_html(room, now, tz)
    if name == "queue":
        return queue_html(room, who, now, tz)
    if name == "incident":
        return incident_html(room, who, arg, now, tz)
    if name == "duty":
        return duty_html(room, who, now, tz)
    if name == "health":
        return health_html(room, who, now, tz)
    if name == "plan":
        return plan_html(room, who, now, tz)
    if name == "reports":
        return reports_html(room, tz)
    return None


def _camera_text(camera: object) -> str:
    """A register camera (id, name, stream references) as one line for the detail page."""
    if not isinstance(camera, dict):
        return str(camera)
    name = str(camera.get("name") or camera.get("id") or "?")
    streams = [str(camera[k]) for k in ("rtsp", "gb28181") if camera.get(k)]
    return f"{name} ({', '.join(streams)})" if streams else name
