"""Kumofire Jobs: durable jobs for Cloudflare Python Workers."""

__version__ = "0.1.0"
