"""Refusing cross-origin writes from browsers (cross-site request forgery).

A web page on any other origin can make the visitor's browser send a POST to the API without
a CORS preflight: a JSON body sent as `text/plain`, a `Blob`, or no body at all (`/pause`,
`/cancel`). It cannot read the answer, but the write is done; against `kumofire-jobs dev`
without a token (`127.0.0.1`, where the browser runs) any site could create, cancel, delete
runs or pause jobs. The API serves no CORS headers, so no legitimate browser caller is
cross-origin: the dashboard calls from its own origin.

The check is the one Go's `net/http.CrossOriginProtection` makes: a browser says where a
request comes from in `Sec-Fetch-Site` (every current browser) or, older ones, in `Origin`;
a request with neither comes from a program (curl, httpx, another Worker) and passes.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FROM_ITSELF = frozenset({"same-origin", "none"})  # "none": typed in, a bookmark


def cross_origin(request: Request) -> bool:
    """Whether a browser sent this state-changing request from another origin."""
    if request.method in SAFE_METHODS:
        return False
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in _FROM_ITSELF
    origin = request.headers.get("origin")
    if origin is None:
        return False
    # An older browser: its Origin must name the host it sent the request to. "null" (an
    # opaque origin: a sandboxed frame, a file) names none.
    return urlsplit(origin.strip()).netloc.lower() != request.headers.get("host", "").lower()


def is_loopback(host: str) -> bool:
    """Whether a server listening on `host` (`--host`) is reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def named_elsewhere(request: Request) -> bool:
    """Whether a request to a server on a loopback address names a host that is not loopback.

    A page can rebind its own DNS name to 127.0.0.1 (DNS rebinding): the browser then calls
    `kumofire-jobs dev` as the page's own origin (`Sec-Fetch-Site: same-origin`), reading
    answers too, with that name in `Host`. Loopback is reached as an address (127.0.0.1, [::1])
    or as `localhost` (`*.localhost`), which browsers resolve themselves, never through DNS."""
    host = request.headers.get("host", "").strip().lower()
    name = host[1 : host.find("]")] if host.startswith("[") else host.rpartition(":")[0] or host
    name = name.rstrip(".")
    if not name or name == "localhost" or name.endswith(".localhost"):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False
