#!/usr/bin/env bash
# Claims $CARGO_TARGET_DIR for this checkout before a build. Cargo judges a
# workspace crate fresh by its sources' mtimes, and names its artifacts by
# paths relative to the workspace root, so a target dir shared by two
# checkouts (a CI clone and a working copy, say) hands one checkout the
# other's binaries whenever its files are older than them: test binaries
# that read `env!("CARGO_MANIFEST_DIR")` then look for files in the other
# checkout, and an edit older than the other's build is silently not in the
# binary. When the target dir was last built from another checkout, this
# touches the workspace crates' files so that cargo rebuilds them here (the
# dependencies stay built), then records this checkout as the owner.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:?own-target: CARGO_TARGET_DIR should be set}"
stamp="$target/.streamfit-checkout"
mkdir -p "$target"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$root" ]; then
  if [ -f "$stamp" ]; then
    echo "own-target: $target was last built from $(cat "$stamp"); rebuilding this checkout's crates ($root)" >&2
  fi
  find "$root/Cargo.toml" "$root/features" "$root/models" "$root/service" "$root/load-test" \
    -type f -not -path '*/target/*' -exec touch {} +
  echo "$root" > "$stamp"
fi
