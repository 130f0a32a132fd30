#!/usr/bin/env bash
# Chaos soak (issue 19): rpcloop against a hostile in-process server for SECONDS, every call
# checked (examples/soak.rs says what the server does and what is checked).
#
#   scripts/soak.sh SECONDS SEED
#
# Builds the example in release and runs it. It prints the seed, progress every 10 s, each
# violation as it happens, and a one-line summary; its exit status is this script's: 0 when
# no check failed, 1 on any violation (or RSS over the warm-up peak plus 16 MiB), 134 when its
# watchdog aborted it (still running SECONDS + 15 s after it started). `timeout` is only a
# backstop behind that watchdog. Replaying SEED replays the server's choices, not the timing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ] || ! [[ $1 =~ ^[0-9]+$ ]] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/soak.sh SECONDS SEED" >&2
  exit 2
fi
seconds=$1 seed=$2

cargo build --release --locked --example soak >&2
exec timeout --signal=KILL $((seconds + 30)) \
  "${CARGO_TARGET_DIR:-target}/release/examples/soak" "$seconds" "$seed"
