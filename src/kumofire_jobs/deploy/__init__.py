"""`kumofire-jobs cloudflare ...` and `init`: the deploy-side tools (host only, never in the
Worker).

- `wrangler`: locating and running the project's wrangler, non-interactively.
- `config`: reading `wrangler.toml` and naming what the runtime needs from it.
- `migrate`: D1 migrations through `wrangler d1 migrations apply`, which keeps wrangler's
  own record (`d1_migrations`), so `kumofire-jobs migrate` and wrangler can follow each other.
- `vendor`: the Worker's pure-Python dependencies, vendored into a `python_modules/`.
- `imports`: the static import graph of the Worker entry, over what would be uploaded.
- `check`: the pre-deploy proof that the bundle is complete.
- `scaffold`: `kumofire-jobs init DIR`, a new project from the files of `template/`.

Nothing here is imported by `src/entry.py`'s graph (the `check` command proves it).
"""
