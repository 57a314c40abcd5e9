"""The per-run coordinator actor of Kumofire Jobs."""
