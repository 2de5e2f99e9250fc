"""The web duty room in a real browser (Debian's chromium via Playwright), end to end.

One virtual school (real firmware, gateway, locked-down Mosquitto) and one duty room for
the module; each test drives the browser as an operator, a viewer or a forger would.
Waits are on events (DOM changes through Playwright's waiting, the unit's own outputs),
never sleeps, and carry no upper time bound beyond a generous failure timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.dutyroom.webroom import School, chromium, login, password, web_school

pytestmark = pytest.mark.asyncio(loop_scope="module")
WAIT_MS = 30_000  # a failure's timeout on a loaded machine, not a bound on speed


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def school(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[School]:
    async with web_school(Path(tmp_path_factory.mktemp("webroom"))) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(school: School) -> AsyncIterator[Browser]:
    async with chromium(school) as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(browser: Browser, school: School) -> AsyncIterator[Page]:
    context, page = await login(browser, school, "li")
    yield page
    await context.close()


def row_of(page: Page, unit: str) -> object:
    return page.locator("section[data-section=queue] tr.incident", has_text=unit).first


async def test_login_sets_strict_cookies_and_refuses_a_wrong_password(
    browser: Browser, school: School
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(school.url)
    await expect(page).to_have_url(school.url + "login")  # nothing without a session
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", "not the password")
    await page.click("form.login button")
    await expect(page.locator("p.error")).to_contain_text("Wrong account or password")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", password("li"))
    await page.click("form.login button")
    await page.wait_for_url(school.url)
    await expect(page.locator("header .who")).to_contain_text("Officer Li")
    cookie = next(c for c in await context.cookies() if c["name"] == "cg_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    audit = school.server.db.audit_rows()
    assert any(a[1:3] == ("li", "login_failed") for a in audit)
    assert any(a[1:3] == ("li", "login") for a in audit)
    await context.close()


async def test_alarm_appears_live_and_its_ack_reaches_the_unit(
    operator: Page, browser: Browser, school: School
) -> None:
    unit = school.fleet.units["shop-02"]
    await operator.goto(school.url)
    await operator.wait_for_selector("#live.ok")
    await operator.evaluate("window.__same_page = true")
    # a second operator's browser watches the queue too
    context2, other = await login(browser, school, "wu")
    unit.mark()
    await unit.press()
    row = operator.locator("tr.incident.waiting", has_text="shop-02")
    await expect(row).to_be_visible(timeout=WAIT_MS)
    assert await operator.evaluate("window.__same_page === true")  # no reload
    await expect(row.locator("td.state")).to_contain_text("WAITING")
    await row.locator("a").click()
    await operator.locator("form.ack select[name=disposition]").select_option("genuine")
    await operator.fill("form.ack textarea[name=note]", "patrol car 3 sent 已派车")
    await operator.click("form.ack button")
    await unit.expect_led("police_ack", within=WAIT_MS / 1000)
    ack = operator.locator("dd[data-field='police']")
    await expect(ack).to_contain_text("Officer Li 李警官", timeout=WAIT_MS)
    # the other operator saw it without reloading
    other_row = other.locator("tr.incident", has_text="shop-02")
    await expect(other_row.locator("td.state")).to_contain_text(
        "police acknowledged", timeout=WAIT_MS
    )
    await context2.close()


async def test_duress_hold_is_marked_while_the_unit_stays_silent(
    operator: Page, school: School
) -> None:
    unit = school.fleet.units["home-03"]
    await operator.goto(school.url)
    await operator.wait_for_selector("#live.ok")
    unit.mark()
    await unit.hold(unit.spec.long_press_ms / 1000 + 0.5)
    row = operator.locator("tr.incident.kind-duress", has_text="home-03")
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await expect(row.locator(".mark.duress")).to_have_text("DURESS 胁迫")
    leds, buzzer = unit.shown_since_mark()
    assert not {"sending", "received", "police_ack", "cancelled"} & set(leds), leds
    assert set(buzzer) <= {"off"}, buzzer


async def test_missed_checkin_climbs_on_the_duty_board_and_is_acknowledged(
    operator: Page, school: School
) -> None:
    await operator.goto(school.url + "duty")
    await operator.wait_for_selector("#live.ok")
    row = operator.locator("tr.post#post-north-gate")
    # the guard never checks in: the ladder climbs to its police rung
    await expect(row).to_have_attribute("data-rung", "3", timeout=WAIT_MS)
    await expect(row.locator("td.state")).to_contain_text("MISSED")
    await row.locator("button").click()
    await expect(row).not_to_have_class("post missed", timeout=WAIT_MS)
    await expect(row).to_have_attribute("data-rung", "0")
    assert any(a[2] == "ack_post" for a in school.server.db.audit_rows())


async def _post(page: Page, path: str, body: str, csrf: bool) -> int:
    return int(
        await page.evaluate(
            """async ([path, body, csrf]) => {
                const headers = {"Content-Type": "application/x-www-form-urlencoded"};
                if (csrf) { headers["X-CSRF-Token"] = window.cgCsrf; }
                const r = await fetch(path, {method: "POST", headers, body});
                return r.status;
            }""",
            [path, body, csrf],
        )
    )


async def test_viewer_cannot_ack_and_a_post_without_csrf_is_refused(
    operator: Page, browser: Browser, school: School
) -> None:
    unit = school.fleet.units["campus-04"]
    await operator.goto(school.url)
    await operator.wait_for_selector("#live.ok")
    await unit.press()
    row = operator.locator("tr.incident.waiting", has_text="campus-04")
    await expect(row).to_be_visible(timeout=WAIT_MS)
    iid = await row.get_attribute("data-incident")
    assert iid
    context, viewer = await login(browser, school, "wang")
    await viewer.goto(f"{school.url}incident/{iid}")
    await expect(viewer.locator("form.ack")).to_have_count(0)  # hidden, and also:
    status = await _post(viewer, f"/incident/{iid}/ack", "disposition=genuine", csrf=True)
    assert status == 403  # refused by the server with a valid session and token
    # an operator's session, but a forged request without the token
    status = await _post(operator, f"/incident/{iid}/ack", "disposition=genuine", csrf=False)
    assert status == 403
    audit = [a[1:3] for a in school.server.db.audit_rows()]
    assert ("wang", "refused") in audit and ("li", "csrf_refused") in audit
    assert school.server.db.note(iid) is None  # nothing was sent
    await expect(row.locator("td.state")).to_contain_text("WAITING")
    await context.close()


async def test_restart_keeps_the_board(operator: Page, school: School) -> None:
    await operator.goto(school.url)
    await operator.wait_for_selector("#live.ok")
    first = operator.locator("tr.incident", has_text="campus-04")
    await first.locator("a").click()
    await operator.click("form[action$='/take'] button")
    await expect(operator.locator("dd[data-field='handler']")).to_contain_text("Officer Li")
    await operator.goto(school.url)
    await operator.wait_for_selector("#live.ok")
    before = await _board(operator)
    # closed incidents leave the board a minute after closing, restart or not
    assert len(before) >= 2 and ("Officer Li 李警官" in {b[2] for b in before})
    await school.restart()
    # the same browser, the same session: the page reconnects by itself
    await operator.wait_for_selector("#live.bad", timeout=WAIT_MS)
    await operator.wait_for_selector("#live.ok", timeout=WAIT_MS)
    await operator.reload()
    await operator.wait_for_selector("#live.ok")
    assert await _board(operator) == before


async def _board(page: Page) -> list[tuple[str | None, str, str]]:
    out = []
    shown = "section[data-section=queue] tr.incident:not([data-state=closed])"
    for r in await page.locator(shown).all():
        out.append(
            (
                await r.get_attribute("data-incident"),
                await r.locator("td.state").inner_text(),
                await r.locator("td.handler").inner_text(),
            )
        )
    return out
