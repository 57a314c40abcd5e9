# Sourced by the scripts: makes `uv` available. When it is missing it is installed with pip;
# where pip refuses (a Debian or Ubuntu system Python is "externally managed", PEP 668) or is
# missing, into a private virtual environment, ~/.cache/kumofire-jobs/uv, put first on PATH.
_kumofire_uv_venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kumofire-jobs/uv"

# uv installed into python3 (`python3 -m uv` runs): its binary's directory first on PATH, so
# `uv` is an executable (`exec uv ...` works, as a shell function would not).
_kumofire_uv_from_python3() {
  local bin
  bin=$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null) || return 1
  [ -x "$bin" ] || return 1
  PATH="$(dirname "$bin"):$PATH"
  export PATH
}

_kumofire_ensure_uv() {
  local out
  if command -v uv >/dev/null 2>&1; then
    return 0
  fi
  if [ -x "$_kumofire_uv_venv/bin/uv" ]; then
    PATH="$_kumofire_uv_venv/bin:$PATH"
    export PATH
    return 0
  fi
  if _kumofire_uv_from_python3; then
    return 0
  fi
  if out=$(python3 -m pip install --quiet --disable-pip-version-check uv 2>&1) \
    && _kumofire_uv_from_python3; then
    return 0
  fi
  case "$out" in
    *externally-managed-environment* | *"No module named pip"*) ;;
    *)
      printf '%s\n' "$out" >&2
      echo "scripts/uv.sh: could not install uv with pip (above)." >&2
      return 1
      ;;
  esac
  echo "Installing uv into $_kumofire_uv_venv (pip may not install into this Python)." >&2
  if ! python3 -m venv "$_kumofire_uv_venv" >/dev/null 2>&1; then
    rm -rf "$_kumofire_uv_venv"
    echo "scripts/uv.sh: \`python3 -m venv\` is missing, so uv cannot be installed beside this" \
      "Python: install it (Debian or Ubuntu: sudo apt install python3-venv), or install uv" \
      "yourself (pipx install uv; https://docs.astral.sh/uv/), then run this again." >&2
    return 1
  fi
  if ! "$_kumofire_uv_venv/bin/python" -m pip install --quiet --disable-pip-version-check uv; then
    rm -rf "$_kumofire_uv_venv"
    echo "scripts/uv.sh: could not install uv into $_kumofire_uv_venv (above)." >&2
    return 1
  fi
  PATH="$_kumofire_uv_venv/bin:$PATH"
  export PATH
}

_kumofire_ensure_uv
