"""Press on a virtual unit -> the incident's row visible in the web duty room's DOM.

python bench/dutyroom.py [--json] [--presses 100] [--units 10]

The whole path runs for real on this machine: the firmware on MicroPython, the serial
link relay, the gateway (journal, outbox, signed MQTT), a locked-down Mosquitto, the web
duty room (verifies, folds, keeps, tells the browser over server-sent events), and
Debian's chromium (headless, via Playwright), which fetches the queue again and shows
the row. In the page, a MutationObserver notes ``Date.now()`` when each incident's row
first appears; the harness notes ``time.time()`` just before it presses the button
(both the same wall clock). Units are pressed in turn, each one again only after its
incident window, so that every press opens a new incident: one row each.

Then ``ack_to_other_browser_ms``: operator A acknowledges 20 of them (a signed ack in
A's name to the gateway); the time until operator B's browser shows each acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from gateway.sim.fleet import latency_stats  # noqa: E402
from tests.dutyroom.webroom import chromium, login, web_school  # noqa: E402

WATCH = """() => {
    window.__rows = {};
    const note = () => {
        for (const tr of document.querySelectorAll("tr.incident[data-incident]")) {
            const id = tr.dataset.incident;
            if (!(id in window.__rows)) {
                window.__rows[id] = [tr.dataset.unit, Date.now()];
            }
        }
    };
    note();
    new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
}"""
GAP_S = 0.3  # between two presses (of different units)
WINDOW_S = 2.5  # a unit is pressed again only after its (accelerated) incident window


ACKS = 20
ACK = """async ([iid]) => {
    const r = await fetch("/incident/" + encodeURIComponent(iid) + "/ack", {
        method: "POST",
        headers: {"Content-Type": "application/x-www-form-urlencoded",
                  "X-CSRF-Token": window.cgCsrf, "X-Requested-With": "fetch"},
        body: "disposition=test&note=bench"});
    return r.status;
}"""


async def ack_round_trips(
    browser: Any, school: Any, page: Any, incidents: list[str]
) -> list[float]:
    """Operator A acknowledges; seconds until operator B's page shows it acknowledged.

    The signed ack goes to the gateway, its police_ack update comes back, and B's page
    fetches the queue again.
    """
    context, other = await login(browser, school, "wu")
    out = []
    for iid in incidents:
        t = time.time()
        status = await page.evaluate(ACK, [iid])
        if status != 200:
            continue
        shown = await other.wait_for_function(
            # acknowledged, or (quiet long enough) closed at once by the gateway
            """iid => { const r = document.getElementById("row-" + iid);
                        const done = r && (r.dataset.state === "closed" ||
                            r.querySelector("td.state").textContent
                             .includes("police acknowledged"));
                        return done && Date.now(); }""",
            arg=iid,
            timeout=30_000,
        )
        out.append(await shown.json_value() / 1000.0 - t)
    await context.close()
    return out


async def bench(presses: int, units: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cg-bench-web-") as tmp:
        async with web_school(Path(tmp), units=units + 1) as school:
            async with chromium(school) as browser:
                context, page = await login(browser, school, "li")
                await page.evaluate(WATCH)
                before = set(await page.evaluate("Object.keys(window.__rows)"))
                pool = [u for u in school.fleet.units.values() if not u.id.startswith("guard")]
                pressed: dict[str, list[float]] = {u.id: [] for u in pool}
                last: dict[str, float] = {}
                for n in range(presses):
                    unit = pool[n % len(pool)]
                    wait = last.get(unit.id, 0.0) + WINDOW_S - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    last[unit.id] = time.monotonic()
                    pressed[unit.id].append(time.time())
                    await unit.press()
                    await asyncio.sleep(GAP_S)
                # what arrives late still counts: wait (30 s at most) for every row
                want = len(before) + presses
                with contextlib.suppress(PlaywrightTimeout):
                    await page.wait_for_function(
                        "n => Object.keys(window.__rows).length >= n", arg=want, timeout=30_000
                    )
                rows = await page.evaluate("window.__rows")
                seen = {k: v for k, v in rows.items() if k not in before}
                acks = await ack_round_trips(browser, school, page, list(seen)[:ACKS])
                version = browser.version
                await context.close()
    latencies: list[float] = []
    for uid, times in pressed.items():
        shown = sorted(at / 1000.0 for unit, at in seen.values() if unit == uid)
        for t, s in zip(times, shown, strict=False):
            latencies.append(s - t)
    return {
        "presses": presses,
        "seen": len(seen),
        "lost": presses - len(latencies),
        "latency_ms": latency_stats(latencies),
        "ack_to_other_browser_ms": latency_stats(acks),
        "acks": len(acks),
        "browser": f"chromium {version} (Debian, headless)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args.presses, args.units))
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        print(
            f"{result['presses']} presses, {result['seen']} rows seen, {result['lost']} lost;"
            f" press to DOM p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
            f" ({result['browser']})"
        )
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
