"""The job core: runs, consume, delivery, reconcile, schedules, the run and schedule SQL, time,
ids, validation, and the runtime that assembles them (the composition root).

It reaches the platform only through the binding protocols (`bindings`, `coordination` over
`kumofire_coordinator`) and imports nothing from the Cloudflare edge, the local bindings, the
web layer, the deploy tools or the CLI (import-linter's contracts in pyproject.toml).
"""
