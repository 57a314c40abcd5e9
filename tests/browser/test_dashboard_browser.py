"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright, against
a real `kumofire-jobs dev` process (the demo runtime), once without a token and once with one.

Each view is saved as a screenshot under `.artifacts/screenshots/` (ignored by git), at desktop
and at phone width (375 px), to look at. The browser console must stay free of errors.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.support.dev_server import DevServer

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".artifacts" / "screenshots"
TOKEN = "browser-suite-token"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 860}


def chromium_path() -> str:
    found = os.environ.get("KUMOFIRE_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "Chromium is missing: `bash scripts/browser-tools.sh` installs Debian's chromium "
            "(or set KUMOFIRE_CHROMIUM); `-m 'not browser'` skips these tests"
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


class Console:
    """Every console message and uncaught error of a page."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        self.messages.append(f"{message.type}: {message.text}")

    def errors(self, *, allowed: str | None = None) -> list[str]:
        return [
            m
            for m in self.messages
            if m.startswith(("error", "pageerror")) and not (allowed and allowed in m)
        ]


def new_page(browser: Browser, viewport: dict[str, int], scheme: str = "light") -> Page:
    context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert page.viewport_size is not None and width <= page.viewport_size["width"], width


@pytest.fixture
def servers() -> Iterator[list[DevServer]]:
    started: list[DevServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


def start(tmp_path: Path, servers: list[DevServer], token: str | None) -> DevServer:
    saved = os.environ.pop("KUMOFIRE_API_TOKEN", None)
    if token:
        os.environ["KUMOFIRE_API_TOKEN"] = token
    try:
        server = DevServer(tmp_path / "data")
    finally:
        os.environ.pop("KUMOFIRE_API_TOKEN", None)
        if saved is not None:
            os.environ["KUMOFIRE_API_TOKEN"] = saved
    servers.append(server)
    if token:
        server.http.headers["Authorization"] = f"Bearer {token}"
    return server


def create(server: DevServer, name: str, **body: Any) -> str:
    response = server.http.post("/v1/runs", json={"name": name, **body})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["kumofire_job_run_id"]
    return run_id


def status(server: DevServer, run_id: str) -> str:
    value: str = server.http.get(f"/v1/runs/{run_id}").json()["status"]
    return value


def test_the_dashboard_shows_and_controls_runs_without_a_token(
    tmp_path: Path, servers: list[DevServer], browser: Browser
) -> None:
    server = start(tmp_path, servers, token=None)
    hellos = [create(server, "hello", payload={"to": f"user{i}@example.com"}) for i in range(3)]
    failing = create(server, "fail", payload={"why": "demo"})
    later = create(server, "slow", delay=3600)  # stays scheduled: the page cancels it
    stepped = create(server, "slow")  # reports its progress in four steps
    schedule = server.http.post(
        "/v1/schedules", json={"name": "flaky", "cron": "0 3 * * *", "key": "nightly"}
    )
    assert schedule.status_code == 201
    server.wait_for(lambda: all(status(server, r) == "succeeded" for r in hellos))
    server.wait_for(lambda: status(server, failing) == "failed", timeout=20)
    server.wait_for(lambda: status(server, stepped) == "succeeded", timeout=20)

    page = new_page(browser, DESKTOP)
    console = Console(page)
    page.goto(f"{server.url}/ui/")
    # No token configured: data at once, no dialog.
    expect(page.locator(".tile.s-succeeded .tile-n")).to_have_text("4")  # 3 hello, 1 slow
    expect(page.locator(".tile.s-failed .tile-n")).to_have_text("1")
    expect(page.locator("#token-dialog")).not_to_be_visible()
    expect(page.locator("svg.chart rect.bar").first).to_be_visible()
    live = page.locator("#live")
    expect(live).to_have_attribute("aria-pressed", "false")  # off until switched on
    page.keyboard.press("l")
    expect(live).to_have_attribute("aria-pressed", "true")
    live.click()
    expect(live).to_have_attribute("aria-pressed", "false")
    shot(page, "overview")

    # g r: the runs, every created one listed, linked to its page.
    page.keyboard.press("g")
    page.keyboard.press("r")
    expect(page).to_have_url(f"{server.url}/ui/#/runs")
    for run_id in [*hellos, failing, later, stepped]:
        expect(page.locator(f'tr[data-href="#/runs/{run_id}"]')).to_have_count(1)
    expect(page.locator(f'tr[data-href="#/runs/{failing}"] .badge')).to_have_text("failed")
    shot(page, "runs")

    # "/" focuses the filter; Enter applies it.
    page.keyboard.press("/")
    expect(page.locator("input[data-filter]")).to_be_focused()
    page.keyboard.type("hello")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/ui/#/runs?name=hello")
    expect(page.locator("main tbody tr")).to_have_count(len(hellos))

    # j selects the first row, Enter opens it: its attempts and its logs.
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    opened = hellos[-1]  # newest first
    expect(page).to_have_url(f"{server.url}/ui/#/runs/{opened}")
    expect(page.locator("h1.run-id")).to_have_text(opened)
    attempts = page.locator("section.card", has=page.locator("h2", has_text="Attempts"))
    expect(attempts.locator("tbody tr")).to_have_count(1)
    expect(attempts.locator("tbody tr .badge")).to_have_text("succeeded")
    logs = page.locator("section.card", has=page.locator("h2", has_text="Logs"))
    expect(logs.locator("tbody tr").filter(has_text="hello")).to_have_count(1)
    expect(page.locator("pre.json").first).to_contain_text("user2@example.com")
    result = page.locator("section.card", has=page.locator("h2", has_text="Result"))
    expect(result.locator("pre.json")).to_contain_text('"greeted"')
    shot(page, "run")

    # A run's progress ({"current": 4, "total": 4}) as a bar.
    page.goto(f"{server.url}/ui/#/runs/{stepped}")
    expect(page.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")

    # The failed run: its error and its three attempts.
    page.goto(f"{server.url}/ui/#/runs/{failing}")
    expect(page.locator("pre.error").first).to_contain_text("this job always fails")
    expect(attempts.locator("tbody tr")).to_have_count(3)
    shot(page, "run-failed")

    # A flow: the parent's page lists its children, a child's page links its parent.
    flow = server.http.post(
        "/v1/flows",
        json={"parent": {"name": "hello"}, "children": [{"name": "hello"}, {"name": "flaky"}]},
    )
    assert flow.status_code == 202, flow.text
    parent, children = flow.json()["parent_id"], flow.json()["children"]
    server.wait_for(lambda: status(server, parent) == "succeeded", timeout=30)
    page.goto(f"{server.url}/ui/#/runs/{parent}")
    kids = page.locator("section.card", has=page.locator("h2", has_text="Children"))
    for child in children:
        expect(kids.locator(f'tr[data-href="#/runs/{child}"]')).to_have_count(1)
    shot(page, "run-parent")
    kids.locator(f'a[href="#/runs/{children[0]}"]').click()
    expect(page.locator("h1.run-id")).to_have_text(children[0])
    expect(page.locator(f'dl.fields a[href="#/runs/{parent}"]')).to_have_count(1)
    shot(page, "run-child")

    # Cancel the scheduled run through its page.
    page.goto(f"{server.url}/ui/#/runs/{later}")
    expect(page.locator(".page-head .badge")).to_have_text("scheduled")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".page-head .badge")).to_have_text("canceled")
    assert status(server, later) == "canceled"

    # g j, then pause the slow job.
    page.keyboard.press("g")
    page.keyboard.press("j")
    expect(page).to_have_url(f"{server.url}/ui/#/jobs")
    page.locator('button[data-job="slow"]').click()
    expect(page.locator('button[data-job="slow"]')).to_have_text("Resume")
    assert server.http.get("/v1/jobs/slow").json()["paused"] is True
    shot(page, "jobs")

    # g s: the schedule.
    page.keyboard.press("g")
    page.keyboard.press("s")
    expect(page.locator("main tbody tr", has_text="nightly")).to_have_count(1)
    shot(page, "schedules")

    # The status tabs, then a bulk retry of what the filter matches, confirmed in a dialog.
    page.goto(f"{server.url}/ui/#/runs")
    page.locator("nav.tabs a", has_text="failed").click()
    expect(page).to_have_url(f"{server.url}/ui/#/runs?status=failed")
    expect(page.locator("main tbody tr")).to_have_count(1)
    page.locator("details.bulk summary").click()
    page.get_by_role("button", name="Retry matching").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.locator("#confirm-ok").click()
    expect(page.locator(".toast", has_text="Retry: 1 run")).to_have_count(1)
    assert server.http.get(f"/v1/runs/{failing}").json()["max_attempts"] == 4
    assert console.errors() == []

    # A phone's width: every view fits without sideways scrolling; and the dark scheme.
    phone = new_page(browser, PHONE)
    phone_console = Console(phone)
    for view, ready in [
        ("", ".tile"),
        ("/runs", "tbody tr"),
        (f"/runs/{opened}", "h1.run-id"),
        ("/jobs", "tbody tr"),
        ("/schedules", "tbody tr"),
    ]:
        phone.goto(f"{server.url}/ui/#{view}")
        expect(phone.locator("main " + ready).first).to_be_visible()
        no_sideways_scroll(phone)
        shot(phone, "phone-" + (view.strip("/").replace("runs/" + opened, "run") or "overview"))
    assert phone_console.errors() == []
    dark = new_page(browser, DESKTOP, scheme="dark")
    dark.goto(f"{server.url}/ui/#/runs")
    expect(dark.locator("main tbody tr").first).to_be_visible()
    shot(dark, "runs-dark")


def test_a_flow_s_children_view_offers_no_bulk_action_that_would_reach_other_runs(
    tmp_path: Path, servers: list[DevServer], browser: Browser
) -> None:
    # A bulk filter has no parent_id: "Cancel matching" on a flow's children filtered by
    # status canceled every scheduled run, the flow's and any other's.
    server = start(tmp_path, servers, token=None)
    other = create(server, "hello", delay=3600)
    flow = server.http.post(
        "/v1/flows",
        json={"parent": {"name": "hello"}, "children": [{"name": "hello", "delay": 3600}]},
    ).json()
    page = new_page(browser, DESKTOP)
    console = Console(page)
    page.goto(f"{server.url}/ui/#/runs?parent_id={flow['parent_id']}&status=scheduled")
    expect(page.locator("main tbody tr")).to_have_count(1)
    page.locator("details.bulk summary").click()
    expect(page.locator("details.bulk")).to_contain_text("not by parent")
    for verb in ("Cancel", "Retry", "Delete"):
        expect(page.get_by_role("button", name=f"{verb} matching")).to_be_disabled()
    assert status(server, other) == "scheduled"
    assert console.errors() == []


def test_a_run_deleted_behind_the_page_s_back_is_shown_gone_after_an_action(
    tmp_path: Path, servers: list[DevServer], browser: Browser
) -> None:
    # The refresh after the action answered 404: the page kept showing the run, its buttons
    # enabled, as if it still existed.
    server = start(tmp_path, servers, token=None)
    run_id = create(server, "hello", delay=3600)
    page = new_page(browser, DESKTOP)
    page.goto(f"{server.url}/ui/#/runs/{run_id}")
    expect(page.locator("h1.run-id")).to_be_visible()
    server.http.post(f"/v1/runs/{run_id}/cancel")
    assert server.http.delete(f"/v1/runs/{run_id}").status_code == 204
    page.get_by_role("button", name="Promote").click()
    expect(page.locator(".toast", has_text="run not found").first).to_be_visible()
    expect(page.locator(".error-panel")).to_contain_text("run not found")
    expect(page.locator("h1.run-id")).to_have_count(0)


def test_the_dashboard_asks_for_the_token_only_when_the_api_answers_401(
    tmp_path: Path, servers: list[DevServer], browser: Browser
) -> None:
    server = start(tmp_path, servers, token=TOKEN)
    run_id = create(server, "hello")
    batch = server.http.post("/v1/runs:batch", json={"runs": [{"name": "hello"}] * 55})
    assert batch.status_code == 202  # 56 runs: two pages of the list

    page = new_page(browser, DESKTOP)
    console = Console(page)
    page.goto(f"{server.url}/ui/#/runs/{run_id}")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#token-input")).to_be_focused()
    shot(page, "token")

    page.locator("#token-input").fill("wrong")
    page.keyboard.press("Enter")
    expect(page.locator("#token-why")).to_contain_text("refused")
    expect(dialog).to_be_visible()
    page.locator("#token-input").fill(TOKEN)
    page.keyboard.press("Enter")
    expect(dialog).not_to_be_visible()
    expect(page.locator("h1.run-id")).to_have_text(run_id)
    assert page.evaluate("sessionStorage.getItem('kumofire-jobs-token')") == TOKEN

    # Kept for the tab: a reload shows data without asking again.
    page.reload()
    expect(page.locator("h1.run-id")).to_have_text(run_id)
    expect(dialog).not_to_be_visible()

    # Paging by the API's cursor: the newest 50, then the oldest 6 (`run_id` among them).
    page.goto(f"{server.url}/ui/#/runs")
    rows = page.locator("main tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator(f'tr[data-href="#/runs/{run_id}"]')).to_have_count(0)
    page.keyboard.press("n")
    expect(page).to_have_url(re.compile(r"#/runs\?cursor="))
    expect(rows).to_have_count(6)
    expect(page.locator(f'tr[data-href="#/runs/{run_id}"]')).to_have_count(1)
    page.keyboard.press("p")
    expect(page).to_have_url(f"{server.url}/ui/#/runs")
    expect(rows).to_have_count(50)
    # The only errors are the browser's own lines for the two refused requests.
    refused = [m for m in console.errors() if "401 (Unauthorized)" in m]
    assert refused and console.errors(allowed="401 (Unauthorized)") == []
