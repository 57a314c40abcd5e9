"""The dashboard's routes (API.md Part 2, "The dashboard"): the static page at `/ui/`.

The page is plain files in `web/ui/`, package data read with `importlib.resources`, which
works wherever the package is: a wheel on disk, or the Worker, where wrangler uploads them
as Text modules (the `[[rules]]` of wrangler.toml; vendored packages as Data) and workerd
shows them to Python as read-only files. No filesystem path is assumed.

The page holds no data: it calls the `/v1` API from the browser with the token its user
types in. So these routes need no token, and they answer the same files to everyone.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

PREFIX: Final = "/ui"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# Nothing from elsewhere: the page's scripts, styles and calls stay on this origin.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (304 while unchanged): an upgrade shows at once.
    "Cache-Control": "no-cache",
}

# One flat directory of lower-case names: no path reaches outside it.
_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.(html|js|css)$")


@cache
def read_file(name: str) -> tuple[bytes, str] | None:
    """A file of the page and its ETag; None when there is no such file."""
    if not _NAME.match(name):
        return None
    try:
        body = resources.files(__package__).joinpath("ui", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(request: Request, name: str) -> Response:
    found = read_file(name)
    if found is None:
        return Response(
            b'{"error": {"code": "not_found", "message": "no such file"}}',
            status_code=404,
            media_type="application/json",
        )
    body, etag = found
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    content_type = CONTENT_TYPES[name[name.rindex(".") :]]
    return Response(body, headers=headers, media_type=content_type)


async def _index(request: Request) -> Response:
    return _serve(request, "index.html")


async def _file(request: Request) -> Response:
    return _serve(request, request.path_params["name"])


async def _to_index(request: Request) -> Response:
    # A relative Location: never built from the Host header.
    return RedirectResponse(f"{PREFIX}/", status_code=308)


def dashboard_routes() -> list[Route]:
    return [
        Route(PREFIX, _to_index, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/", _index, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/{{name}}", _file, methods=["GET", "HEAD"]),
    ]
