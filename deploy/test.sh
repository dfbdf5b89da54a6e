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
# the whole output goes by as it comes and is kept in $CARGO_TARGET_DIR/test.log;
# a failing test's own output is repeated at the end, where a CI log that
# keeps only its tail shows it
log="$CARGO_TARGET_DIR/test.log"
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo
    echo "==== test: what failed (the last 60 lines of each failing test's own output, repeated from above; all of it in $log) ===="
    awk 'function flush() { s = (n > 60) ? n - 59 : 1; for (i = s; i <= n; i++) print buf[i]; n = 0; on = 0 }
         /^---- .* stdout ----$/ { if (on) flush(); on = 1; print; next }
         /^failures:$/ { if (on) flush(); next }
         on { buf[++n] = $0 }
         END { if (on) flush() }' "$log"
    grep -E '^test .* FAILED$|^error: [0-9]+ targets? failed|^    `-p ' "$log" || true
fi
exit "$status"
