#!/usr/bin/env bash
# The tools the real-runtime suite (tests/workerd/) needs beyond wrangler: the `capnp` compiler
# (Debian's `capnproto`) to pack workerd's Python runtime bundle. Installed with apt-get when
# missing (CI runs as root); fails loudly when it cannot be installed.
set -euo pipefail
if command -v capnp >/dev/null 2>&1; then
  exit 0
fi
echo "scripts/workerd-tools.sh: installing capnproto (the capnp tool) with apt-get" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends capnproto >/dev/null; then
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends capnproto >/dev/null
fi
command -v capnp >/dev/null 2>&1 || {
  echo "scripts/workerd-tools.sh: capnp is still missing after installing capnproto" >&2
  exit 1
}
