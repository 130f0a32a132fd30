#!/usr/bin/env bash
# Runs a fuzz target (fuzz/fuzz_targets/TARGET.rs), or each in turn, for SECONDS each, from its
# corpus (fuzz/corpus/TARGET) with its dictionary (fuzz/dict/TARGET.dict).
#
#   scripts/fuzz.sh TARGET SECONDS      # codec_decode, handshake, timer_wheel or engine
#   scripts/fuzz.sh all SECONDS         # each of them, one after another
#
# Builds with `cargo fuzz build -O -a -s none`: optimized, with the library's debug_assert!s
# live, without a sanitizer (which needs a nightly toolchain). Installs cargo-fuzz if missing.
# New inputs go to fuzz/target/corpus/TARGET (kept between runs, not committed); the
# committed corpus is only read. On a crash, prints the input (hex) and its artifact's path
# under fuzz/artifacts/TARGET, and exits non-zero. Each run's log: fuzz/target/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(codec_decode handshake timer_wheel engine)
if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 {${TARGETS[*]// /|}|all} SECONDS" >&2
  exit 2
fi
if [ "$1" = all ]; then
  run=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $1 "* ]]; then
  run=("$1")
else
  echo "no fuzz target $1 (there are: ${TARGETS[*]})" >&2
  exit 2
fi
seconds=$2

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
(cd fuzz && cargo fuzz build -O -a -s none)
host=$(rustc -vV | sed -n 's/^host: //p')
bin=fuzz/target/$host/release

status=0
for target in "${run[@]}"; do
  scratch=fuzz/target/corpus/$target
  artifacts=fuzz/artifacts/$target
  log=fuzz/target/$target.log
  mkdir -p "$scratch" "$artifacts"
  echo "== fuzz $target for ${seconds}s"
  set +e
  "$bin/$target" "$scratch" "fuzz/corpus/$target" \
    -dict="fuzz/dict/$target.dict" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -artifact_prefix="$artifacts/" \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # The last status line (#runs, cov:, ft:, corpus) and the totals.
  grep -E '^#[0-9]+' "$log" | tail -n 1 || true
  grep -E '^Done [0-9]+ runs|^stat::number_of_executed_units' "$log" || true
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz $target FAILED (libFuzzer exit $rc); the end of $log:" >&2
    grep -vE '^#[0-9]+' "$log" | tail -n 40 >&2
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [ -n "$artifact" ] && [ -f "$artifact" ]; then
      echo "input ($(wc -c <"$artifact") bytes), written to $artifact:" >&2
      od -An -tx1 -v "$artifact" | tr -d ' \n' | fold -w 64 >&2
      echo >&2
      echo "reproduce: $bin/$target $artifact" >&2
    fi
  fi
done
exit $status
