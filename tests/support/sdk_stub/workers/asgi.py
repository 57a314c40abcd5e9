"""A stand-in for `workers.asgi.fetch`: drives an ASGI app for one request, putting `env` in
the scope as the SDK's bridge does (`scope["env"]`)."""

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def fetch(app: Any, req: Request, env: Any, ctx: Any = None) -> Response:
    url = urlsplit(req.url)
    scope = {
        "type": "http",
        "asgi": {"spec_version": "2.0", "version": "3.0"},
        "http_version": "1.1",
        "method": req.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in req.headers.items()],
        "server": (url.hostname, 443),
        "client": None,
        "env": env,
    }
    received = False
    status = 0
    headers: list[tuple[bytes, bytes]] = []
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": req.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return Response(status, headers, b"".join(body))
