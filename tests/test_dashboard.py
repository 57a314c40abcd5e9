"""The dashboard's files at /ui/ (API.md Part 2, "The dashboard"), through the HTTP app, and
their place in the wheel. The page itself is driven in a real browser by
tests/browser/test_dashboard_browser.py."""

from __future__ import annotations

import re
import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kumofire_jobs import JobContext
from kumofire_jobs.deploy.vendor import find_uv
from kumofire_jobs.local.environment import LocalEnvironment
from kumofire_jobs.web import create_app
from kumofire_jobs.web.dashboard import read_file
from tests.support.envs import EnvFactory

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / "src" / "kumofire_jobs" / "web" / "ui"
TOKEN = "s3cret-token"


async def ok(ctx: JobContext) -> None:
    return None


@pytest.fixture
async def env(make_env: EnvFactory) -> LocalEnvironment:
    return await make_env({"email": ok})


@pytest.fixture
async def client(env: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda request: env.jobs, api_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def shipped() -> list[str]:
    return sorted(p.name for p in UI.iterdir() if p.is_file())


async def test_the_page_is_served_without_a_token_while_the_api_needs_one(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (UI / "index.html").read_text(encoding="utf-8")
    assert (await client.get("/v1/runs")).status_code == 401  # the data stays behind the token
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"


async def test_a_worker_without_a_token_serves_the_page_but_not_the_api(
    env: LocalEnvironment,
) -> None:
    app = create_app(lambda request: env.jobs, require_token=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/ui/")).status_code == 200
        refused = await http.get("/v1/runs:counts")
        assert refused.status_code == 403  # the page shows this error and how to set a token
        assert refused.json()["error"]["code"] == "api_disabled"


async def test_every_file_the_page_loads_is_served_with_its_type(
    client: httpx.AsyncClient,
) -> None:
    types = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
    }
    for name in shipped():
        response = await client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == types[Path(name).suffix], name
        assert response.content == (UI / name).read_bytes()


async def test_the_page_names_only_its_own_files_and_loads_nothing_from_elsewhere() -> None:
    html = (UI / "index.html").read_text(encoding="utf-8")
    referenced = set(re.findall(r'(?:src|href)="([^"#][^"]*)"', html))
    assert referenced == {"app.css", "app.js"} | {r for r in referenced if r.startswith("data:")}
    imported: set[str] = set()
    for script in UI.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        imported |= set(re.findall(r'from "\./([a-z]+\.js)"', text))
        text = text.replace('"http://www.w3.org/2000/svg"', "")  # a namespace, never fetched
        assert "http://" not in text and "https://" not in text, script.name
        assert "innerHTML" not in text, script.name  # API data is set as text, never as HTML
    assert imported == {p.name for p in UI.glob("*.js")} - {"app.js"}


async def test_ui_redirects_to_the_page_and_unknown_files_are_404(
    client: httpx.AsyncClient,
) -> None:
    bare = await client.get("/ui")
    assert bare.status_code == 308 and bare.headers["location"] == "/ui/"
    for path in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/dashboard.py", "/ui/APP.JS", "/ui/a/b"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.post("/ui/")).status_code == 405


async def test_an_unchanged_file_is_answered_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/ui/app.js")
    etag = first.headers["etag"]
    again = await client.get("/ui/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    changed = await client.get("/ui/app.js", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200


def test_the_files_are_read_as_package_data() -> None:
    found = read_file("index.html")
    assert found is not None and found[0] == (UI / "index.html").read_bytes()
    assert read_file("missing.js") is None
    assert read_file("../app.py") is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_holds_the_dashboard(tmp_path: Path) -> None:
    subprocess.run(
        [*find_uv(), "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("kumofire_jobs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in shipped():
        assert f"kumofire_jobs/web/ui/{name}" in names
    assert "kumofire_jobs/web/dashboard.py" in names
