"""The web duty room's screens as PNG files in docs/ (run by hand; not part of the tests).

python docs/screenshots.py

A virtual school (as the browser tests build it) with a few alarms: a panic that is
taken, worked and acknowledged, a duress hold, one left waiting; the guard misses
check-ins. Debian's chromium takes each screen as an operator and a supervisor see it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.async_api import Page, expect  # noqa: E402

from tests.dutyroom.webroom import chromium, login, web_school  # noqa: E402

OUT = ROOT / "docs"


async def shot(page: Page, name: str) -> None:
    await page.wait_for_selector("#live.ok")
    await page.screenshot(path=str(OUT / f"dutyroom-{name}.png"), full_page=True)
    print(f"docs/dutyroom-{name}.png")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cg-shots-") as tmp:
        async with web_school(Path(tmp), units=6) as school:
            async with chromium(school) as browser:
                ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await ctx.new_page()
                await page.goto(school.url + "login")
                await page.screenshot(path=str(OUT / "dutyroom-login.png"))
                await ctx.close()
                context, page = await login(browser, school, "chen")
                await page.set_viewport_size({"width": 1280, "height": 800})
                units = school.fleet.units
                await units["shop-02"].press()
                row = page.locator("tr.incident", has_text="shop-02")
                await expect(row).to_be_visible(timeout=30_000)
                await row.locator("a").click()
                await page.click("form[action$='/take'] button")
                await page.click("form[action$='/tick/0'] button")
                await page.click("form[action$='/tick/1'] button")
                await page.fill("form.ack textarea[name=note]", "patrol car 3 on site 已到场")
                await page.click("form.ack button")
                await expect(page.locator("dd[data-field='police']")).to_contain_text(
                    "Supervisor Chen", timeout=30_000
                )
                await shot(page, "incident")
                await units["home-03"].hold(units["home-03"].spec.long_press_ms / 1000 + 0.5)
                await units["campus-04"].press()
                await page.goto(school.url)
                await expect(page.locator("tr.incident.kind-duress")).to_be_visible(
                    timeout=30_000
                )
                await expect(page.locator("tr.incident", has_text="campus-04")).to_be_visible(
                    timeout=30_000
                )
                await shot(page, "queue")
                await page.goto(school.url + "duty")
                await expect(page.locator("tr.post.missed")).to_be_visible(timeout=30_000)
                await shot(page, "duty")
                for name in ("health", "plan", "history", "audit", "accounts", "reports"):
                    await page.goto(school.url + name)
                    await shot(page, name)
                await context.close()


if __name__ == "__main__":
    asyncio.run(main())
