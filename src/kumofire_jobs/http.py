"""The jobs API over HTTP, for Python code outside Workers: `HttpJobsClient`.

```python
from kumofire_jobs.http import HttpJobsClient

token = os.environ["KUMOFIRE_API_TOKEN"]
async with HttpJobsClient("https://jobs.example.com", token) as jobs:
    created = await jobs.create("email", {"to": "a@example.com"}, delay=60)
    run = await jobs.get(created.kumofire_job_run_id)
```

The methods, arguments, results and exceptions are `JobsClient`'s (the service binding
client): this class is that client with its one transport call, `_call(operation, *args)`,
sent as the operation's HTTP request instead of a Workers RPC call. The request is built from
the operation's row in `api/operations.py` (its method, its path with the id or key, its body
or query), so an operation added to the table and to `JobsClient` is here with nothing more.

Errors come back as the jobs API raises them: 404 `not_found` is None (or False) where the
jobs API answers a missing run, schedule or job so, 409 `ConflictError`, 422
`ValidationError` / `UnknownJobError`, 413 `PayloadTooLargeError`, each with the server's
message. Any other error answer (401 `unauthorized`, 403 `api_disabled`, a route the server
does not have, a 5xx, a body that is not the API's) raises `HttpJobsError` with the status,
the code and the message. A failure to reach the server raises httpx's exception
(`httpx.ConnectError`, `httpx.TimeoutException`, both `httpx.TransportError`).

Needs httpx (`pip install 'kumofire-jobs[http]'`); never part of the Worker bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx

from .api.operations import BY_NAME, Operation
from .cloudflare.client import ERRORS, JobsClient, JobsServiceError

__all__ = ["DEFAULT_URL", "HttpJobsClient", "HttpJobsError"]

DEFAULT_URL: Final = "http://127.0.0.1:8787"
"""Where `kumofire-jobs dev` listens by default."""
DEFAULT_TIMEOUT: Final = 30.0
_NO_ROUTE = "no such route"  # the server's 404 message for a path it does not serve


class HttpJobsError(JobsServiceError):
    """An error answer the jobs API has no exception for: `status` is the HTTP status, `code`
    the API's error code (`unauthorized`, `api_disabled`, `internal_error`, ...; `http_<status>`
    when the body is not the API's error) and `message` its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def _error(response: httpx.Response) -> Exception:
    """The exception for an error answer, by the API's error body."""
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
        if not isinstance(code, str) or not isinstance(message, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return HttpJobsError(response.status_code, f"http_{response.status_code}", text)
    error_type = ERRORS.get(code)
    if error_type is None or (response.status_code == 404 and message == _NO_ROUTE):
        # A route the server lacks is not a missing run: never read it as None.
        return HttpJobsError(response.status_code, code, message)
    return error_type(message)


def _query(values: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in values.items()
        if value is not None
    }


def bearer_token(token: str) -> bytes:
    """`token` as an `Authorization` header carries it (UTF-8, as the server compares it,
    surrounding whitespace dropped as HTTP drops it); ValueError for one no header can carry
    (a control character such as a newline, or nothing but whitespace)."""
    stripped = token.strip()
    if not stripped or any(ord(c) < 0x20 or ord(c) == 0x7F for c in stripped):
        raise ValueError(
            "the token must be a non-blank string without control characters "
            "(it is sent in the Authorization header)"
        )
    return stripped.encode()


class HttpJobsClient(JobsClient):
    """The jobs API (`JobsApi`) of a Kumofire Jobs service over its HTTP API: the Worker's
    URL, or `kumofire-jobs dev`'s (`http://127.0.0.1:8787`). `token` is the bearer token
    (`KUMOFIRE_API_TOKEN` of the service; `ValueError` for one no header can carry). Close it
    with `aclose()`, or use `async with`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(None)
        headers = {b"accept": b"application/json"}
        if token:
            headers[b"authorization"] = b"Bearer " + bearer_token(token)
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> HttpJobsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, *args: Any) -> Any:
        op = BY_NAME[method]
        path, options = _request(op, args)
        response = await self._http.request(op.method, path, **options)
        if response.status_code not in op.ok:
            raise _error(response)
        if op.result is None:
            return {"deleted": True}  # what the RPC method answers where HTTP answers 204
        try:
            return response.json()
        except ValueError:
            raise HttpJobsError(
                response.status_code, "invalid_response", "the answer is not JSON"
            ) from None


def _request(op: Operation, args: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """The operation's RPC arguments (the id or key, then one body or query dict) as its HTTP
    path and the request's `json` or `params`."""
    count = len(op.path_parameters)
    given = zip(op.path_parameters, args[:count], strict=True)
    path = op.path.format(**{name: quote(str(value), safe="") for name, value in given})
    rest = args[count:]
    if not rest:
        return path, {}
    (value,) = rest
    if op.query:
        return path, {"params": _query(value)}
    if isinstance(value, list) and op.body is not None:  # create_many: {"runs": [...]}
        (field,) = op.body.required
        value = {field: value}
    return path, {"json": value}
