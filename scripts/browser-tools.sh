#!/usr/bin/env bash
# The browser the dashboard's tests (tests/browser/) drive: Debian's `chromium` package, driven
# by Playwright for Python (a dev dependency; `playwright install` is never run: nothing is
# downloaded at test time). Installed with apt-get when missing (CI runs as root); fails loudly
# when it cannot be installed. KUMOFIRE_CHROMIUM names another Chromium binary instead.
set -euo pipefail
if [ -n "${KUMOFIRE_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "scripts/browser-tools.sh: installing chromium with apt-get" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null; then
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
command -v chromium >/dev/null 2>&1 || {
  echo "scripts/browser-tools.sh: chromium is still missing after installing it" >&2
  exit 1
}
