#!/usr/bin/env bash
# Side-by-side benchmark: rpcloop (examples/bench.rs) against the floor (examples/bench_floor.rs,
# a blocking tungstenite client), both talking to `rpcloop echo-server` (cli/src/echo.rs) over
# loopback; and rpcloop over wss:// (a second echo server with --tls, its CA trusted with --ca)
# beside its own ws:// runs, for the cost of TLS per call.
#
#   scripts/bench.sh                 the full run: 3 runs of each client per row, medians, ratios
#   scripts/bench.sh --quick         a smoke run for CI: 1 run per row, 2,000 calls
#   scripts/bench.sh --baseline REV  the full run, plus REV's examples/bench (built from a
#                                    checkout of that commit under target/bench/) in every
#                                    row beside this tree's, with a table of the ratios
#                                    this tree / REV: a change measured against its parent in
#                                    one run
#
# The echo server is pinned to CPU 0 and the clients to CPU 1 (when the machine has two CPUs
# and taskset is present); floor and rpcloop runs alternate, so drift hits both alike. Prints a
# markdown table of the medians and the ratios rpcloop/floor, with the machine's facts. Raw
# JSON lines go to target/bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 baseline=
case "${1:-}" in
  --quick) quick=1 ;;
  --baseline) baseline=${2:?usage: scripts/bench.sh --baseline REV} ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--quick | --baseline REV]" >&2; exit 2 ;;
esac

cargo build --release --locked --examples --bins >&2
bin=target/release/examples
base_bin=
if [ -n "$baseline" ]; then
  # The baseline's sources, exported as they were at REV, built with the same toolchain.
  base_src=target/bench/baseline-src
  rev=$(git rev-parse --verify "$baseline^{commit}")
  rm -rf "$base_src" && mkdir -p "$base_src"
  git archive "$rev" | tar -x -C "$base_src"
  (cd "$base_src" && CARGO_TARGET_DIR="$PWD/../baseline-target" \
    cargo build --release --locked --example bench >&2)
  base_bin=target/bench/baseline-target/release/examples/bench
  echo "baseline: $(git log -1 --format='%h %s' "$rev")" >&2
fi
echo_server=(target/release/rpcloop echo-server)
out=target/bench
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

server_cpu=() client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
fi

"${server_cpu[@]}" "${echo_server[@]}" --port 0 >"$out/echo.out" 2>"$out/echo.err" &
server=$!
"${server_cpu[@]}" "${echo_server[@]}" --port 0 --tls --ca-out "$out/ca.pem" \
  >"$out/echo-tls.out" 2>"$out/echo-tls.err" &
tls_server=$!
trap 'kill $server $tls_server 2>/dev/null || true' EXIT
url= wss_url=
for _ in $(seq 100); do
  url=$(sed -n 's/^echo server listening on \(ws:[^ ]*\)$/\1/p' "$out/echo.out")
  wss_url=$(sed -n 's/^echo server listening on \(wss:[^ ]*\)$/\1/p' "$out/echo-tls.out")
  [ -n "$url" ] && [ -n "$wss_url" ] && grep -q '^CA certificate in ' "$out/echo-tls.out" && break
  sleep 0.1
done
[ -n "$url" ] || { echo "echo server did not start" >&2; cat "$out/echo.err" >&2; exit 1; }
[ -n "$wss_url" ] || { echo "TLS echo server did not start" >&2; cat "$out/echo-tls.err" >&2; exit 1; }

# Rows: inflight requests payload, and the rpcloop modes measured beside the floor.
if [ $quick = 1 ]; then
  runs=1 warmup=200
  rows=("1 2000 64" "16 2000 64" "256 2000 64" "64 2000 4096")
else
  runs=3 warmup=2000
  rows=("1 20000 64" "16 200000 64" "256 200000 64" "64 50000 4096")
fi

run() { # label, command...
  local label=$1; shift
  local line
  line=$("${client_cpu[@]}" "$@") || { echo "FAILED: $*" >&2; exit 1; }
  echo "{\"label\":\"$label\",${line#\{}" >>"$results"
}

for row in "${rows[@]}"; do
  read -r k n b <<<"$row"
  common=(--url "$url" --requests "$n" --inflight "$k" --payload "$b" --warmup "$warmup")
  tls=(--url "$wss_url" --ca "$out/ca.pem" --requests "$n" --inflight "$k" --payload "$b"
       --warmup "$warmup")
  for r in $(seq $runs); do
    echo "K=$k N=$n B=$b run $r/$runs" >&2
    run floor "$bin/bench_floor" "${common[@]}"
    run callback "$bin/bench" "${common[@]}"
    [ -z "$base_bin" ] || run "baseline callback" "$base_bin" "${common[@]}"
    run "wss callback" "$bin/bench" "${tls[@]}"
    if [ "$k" = 1 ] || [ "$k" = 16 ]; then
      run "callback busy-poll" "$bin/bench" "${common[@]}" --busy-poll
      run "wss callback busy-poll" "$bin/bench" "${tls[@]}" --busy-poll
    fi
    run handle "$bin/bench" "${common[@]}" --mode handle
    [ -z "$base_bin" ] || run "baseline handle" "$base_bin" "${common[@]}" --mode handle
    run future "$bin/bench" "${common[@]}" --mode future
  done
done

python3 - "$results" "$quick" "$baseline" <<'PY'
import json, statistics, sys, subprocess, platform
rows = [json.loads(l) for l in open(sys.argv[1])]
quick = sys.argv[2] == "1"
baseline = sys.argv[3]
def model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"Machine: {nproc} CPUs, {model()}, Linux {platform.release()}; "
      f"{'1 run' if quick else 'medians of 3 runs'} per cell.\n")
print("| K | calls | payload | client | p50 us | p99 us | rps | cpu ns/call | allocs/call "
      "| p50 x | p99 x | rps x | cpu x |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
groups = {}
for r in rows:
    groups.setdefault((r["inflight"], r["requests"], r["payload"]), {}).setdefault(r["label"], []).append(r)
for (k, n, b), by_label in groups.items():
    med = {label: {f: statistics.median(x[f] for x in runs)
                   for f in ("p50_us", "p99_us", "rps", "cpu_ns_per_req", "allocs_per_req")}
           for label, runs in by_label.items()}
    floor = med["floor"]
    for label, m in med.items():
        ratio = lambda f: "" if label == "floor" else f"{m[f] / floor[f]:.2f}"
        print(f"| {k} | {n} | {b} | {label} | {m['p50_us']:.1f} | {m['p99_us']:.1f} | "
              f"{m['rps']:,.0f} | {m['cpu_ns_per_req']:,.0f} | {m['allocs_per_req']:.2f} | "
              f"{ratio('p50_us')} | {ratio('p99_us')} | {ratio('rps')} | {ratio('cpu_ns_per_req')} |")
print("\nTLS cost per call: each wss:// run beside the same mode over ws:// (same run, medians).\n")
print("| K | calls | payload | mode | p50 us ws | p50 us wss | +us | cpu ns ws | cpu ns wss "
      "| +ns/call | allocs ws | allocs wss | +allocs/call |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (k, n, b), by_label in groups.items():
    med = {label: {f: statistics.median(x[f] for x in runs)
                   for f in ("p50_us", "cpu_ns_per_req", "allocs_per_req")}
           for label, runs in by_label.items()}
    for mode in ("callback", "callback busy-poll"):
        if mode not in med or "wss " + mode not in med:
            continue
        ws, wss = med[mode], med["wss " + mode]
        print(f"| {k} | {n} | {b} | {mode} | {ws['p50_us']:.1f} | {wss['p50_us']:.1f} | "
              f"{wss['p50_us'] - ws['p50_us']:+.1f} | {ws['cpu_ns_per_req']:,.0f} | "
              f"{wss['cpu_ns_per_req']:,.0f} | {wss['cpu_ns_per_req'] - ws['cpu_ns_per_req']:+,.0f} | "
              f"{ws['allocs_per_req']:.2f} | {wss['allocs_per_req']:.2f} | "
              f"{wss['allocs_per_req'] - ws['allocs_per_req']:+.2f} |")
if baseline:
    print(f"\nThis tree against the baseline {baseline}, each mode beside the same mode built "
          "from the baseline (same run, medians; below 1 is better for p50, p99 and cpu).\n")
    print("| K | calls | payload | mode | p50 x | p99 x | rps x | cpu x | allocs/call | allocs/call base |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (k, n, b), by_label in groups.items():
        med = {label: {f: statistics.median(x[f] for x in runs)
                       for f in ("p50_us", "p99_us", "rps", "cpu_ns_per_req", "allocs_per_req")}
               for label, runs in by_label.items()}
        for mode in ("callback", "handle"):
            if mode not in med or "baseline " + mode not in med:
                continue
            new, old = med[mode], med["baseline " + mode]
            r = lambda f: f"{new[f] / old[f]:.2f}"
            print(f"| {k} | {n} | {b} | {mode} | {r('p50_us')} | {r('p99_us')} | {r('rps')} | "
                  f"{r('cpu_ns_per_req')} | {new['allocs_per_req']:.2f} | {old['allocs_per_req']:.2f} |")
PY
