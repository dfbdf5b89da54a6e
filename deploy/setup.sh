#!/usr/bin/env bash
# Installs what building and testing streamfit needs on a fresh Debian
# machine: the C toolchain librdkafka builds with, its headers, a JDK and
# Maven for the local Kafka, Chromium and its WebDriver for the dashboard's
# browser test, and the Python packages of the test suite and the
# notebooks. Does nothing for what is already there.
set -euo pipefail
need=()
for pkg in build-essential cmake pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev libsasl2-dev maven openjdk-17-jre-headless curl openssl python3 python3-venv chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: error: cargo is not installed; install Rust with rustup" >&2; exit 1; }
rustup component add clippy rustfmt >/dev/null 2>&1 || true

# the Python tools of the test suite and the notebooks' packages, pinned, in
# a virtual environment of their own
venv="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}/venv"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reqs=("$root/deploy/requirements-test.txt" "$root/notebooks/requirements.txt")
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: making a Python virtual environment in $venv" >&2
  python3 -m venv "$venv"
fi
if ! cat "${reqs[@]}" | cmp -s - "$venv/.requirements"; then
  echo "setup: installing the test suite's and the notebooks' Python packages (${reqs[*]})" >&2
  "$venv/bin/pip" install -q -r "${reqs[0]}" -r "${reqs[1]}"
  cat "${reqs[@]}" > "$venv/.requirements"
fi
