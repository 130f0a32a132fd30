#!/usr/bin/env bash
# Public-API check: cargo semver-checks on the library against a baseline commit (by default
# c98b6db, the 0.1.0 API), so that a break is a decision listed in CHANGELOG.md, never an
# accident.
#
#   scripts/semver.sh [BASELINE_REV]
#
# Installs cargo-semver-checks with cargo if it is missing (a 7-minute build on a 2-core
# machine, which is why .ci/run does not run this yet). Exits non-zero on any break; the
# breaks CHANGELOG.md lists under 0.2.0 are expected until the version is bumped.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:-c98b6db}
command -v cargo-semver-checks >/dev/null || cargo install cargo-semver-checks --locked
cargo semver-checks check-release -p rpcloop --baseline-rev "$baseline"
