#!/usr/bin/env bash
# The standalone demo: installs what is missing, builds edgecam, and runs it with the
# embedded broker and the test pattern (when no camera is attached), bound to loopback.
# Open http://127.0.0.1:8080 in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
echo "edgecam: open http://127.0.0.1:8080 (Ctrl-C to stop)"
exec target/release/edgecam --config examples/demo-loopback.toml "$@"
