#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn TestSuite's cases, served by `kosoku` (PyPI: the original
# Autobahn case files driven by a native runner, no Python 2) in fuzzingserver mode, against
# rpcloop's echo agent (examples/autobahn_client.rs).
#
#   scripts/autobahn.sh
#
# Installs kosoku into a virtualenv under target/autobahn/ (nothing global; reused on later
# runs), starts the fuzzing server on 127.0.0.1 (a free port), runs the agent over every case,
# and summarises target/autobahn/reports/index.json (the usual Autobahn report; index.html
# beside it). Exit status: non-zero unless every case outside 12.* and 13.* is OK, NON-STRICT
# or INFORMATIONAL with a clean close, and every compression case (12.*, 13.*: rpcloop does
# not offer permessage-deflate) is cleanly declined (UNIMPLEMENTED, closed OK).
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
out=target/autobahn
venv=$out/venv
mkdir -p "$out"

if ! "$venv/bin/python" -c "import kosoku" 2>/dev/null ||
   [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kosoku"))')" != "$KOSOKU_VERSION" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  timeout 300 "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

cargo build --release --locked --example autobahn_client >&2

rm -rf "$out/reports"
timeout 600 "$venv/bin/kosoku" --mode fuzzingserver --outdir "$out/reports" 127.0.0.1:0 \
  >"$out/kosoku.out" 2>"$out/kosoku.err" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
url=
for _ in $(seq 300); do
  url=$(sed -n 's/^fuzzingserver listening on \(ws:[^ ]*\)$/\1/p' "$out/kosoku.err")
  [ -n "$url" ] && break
  kill -0 $server 2>/dev/null || break
  sleep 0.1
done
[ -n "$url" ] || { echo "the fuzzing server did not start:" >&2; cat "$out/kosoku.err" >&2; exit 1; }
echo "fuzzing server at $url" >&2

started=$(date +%s)
timeout 600 "${CARGO_TARGET_DIR:-target}/release/examples/autobahn_client" "$url" rpcloop
# The server writes its reports once the agent has asked for them, then exits (non-zero when
# any case did not pass, which the declined compression cases never do: judged below).
for _ in $(seq 600); do
  kill -0 $server 2>/dev/null || break
  sleep 0.1
done
wait $server || true
trap - EXIT
echo "ran in $(( $(date +%s) - started )) s" >&2

python3 scripts/autobahn_summary.py "$out/reports"
