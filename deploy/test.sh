#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, property tests and the
# integration tests that drive the real binary against a real local Kafka.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
"$root/deploy/own-target.sh"
[ -d ../shared/data ] || { echo "test: error: ../shared/data is missing; the real data sets must sit beside the repo" >&2; exit 1; }
deploy/setup.sh
deploy/kafka.sh up
deploy/kafka.sh up --secure
# the secured broker serves only the suite: stopped when it ends, pass or
# fail, so that it does not share the cores with what is timed afterwards
# (`deploy/kafka.sh up --secure` starts it again for a single test)
trap 'deploy/kafka.sh down --secure >/dev/null 2>&1 || true' EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
