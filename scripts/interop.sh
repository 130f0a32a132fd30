#!/usr/bin/env bash
# Interop: rpcloop against servers it did not write, on Node's `ws` and Python's `websockets`,
# and Node's `rpc-websockets` JSON-RPC server (tests/interop/), through the ignored tests of
# tests/interop.rs.
#
#   scripts/interop.sh
#
# Installs the packages locally, never globally: `ws` and `rpc-websockets` (pinned in
# tests/interop/node/package.json) into tests/interop/node/node_modules, `websockets` (pinned
# in tests/interop/python/requirements.txt) into a virtualenv under target/interop/. They are
# reused on later runs while their versions match the pins. Needs node, npm and python3 (with
# venv) on PATH; .ci/run installs them on a machine without. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "interop needs $tool on PATH" >&2; exit 1; }
done

node_dir=tests/interop/node
# "name@version" of every pinned package, as package.json pins them and as installed.
node_pinned=$(node -p "Object.entries(require('./$node_dir/package.json').dependencies).map(([n, v]) => n + '@' + v).join(' ')")
node_installed=$(node -p "Object.keys(require('./$node_dir/package.json').dependencies).map((n) => {
  try { return n + '@' + require('./$node_dir/node_modules/' + n + '/package.json').version } catch (e) { return n + '@' }
}).join(' ')")
if [ "$node_installed" != "$node_pinned" ]; then
  timeout 300 npm install --prefix "$node_dir" --no-package-lock --no-audit --no-fund --loglevel=error
fi

venv=target/interop/venv
requirements=tests/interop/python/requirements.txt
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qxF "$(cat "$requirements")"; then
  rm -rf "$venv"
  mkdir -p target/interop
  python3 -m venv "$venv"
  timeout 300 "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi

echo "node $(node --version), $node_pinned; $("$venv/bin/python" --version), $(cat "$requirements")" >&2
RPCLOOP_INTEROP_PYTHON="$PWD/$venv/bin/python" \
  timeout 900 cargo test --locked --test interop -- --ignored
