"""The HTTP API: one ASGI app for the Worker's `fetch()` and for `kumofire-jobs dev`."""

from .app import create_app

__all__ = ["create_app"]
