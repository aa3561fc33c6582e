#!/usr/bin/env bash
# The standalone demo: installs what is missing, builds edgecam, and runs it with the
# embedded broker and the test pattern (when no camera is attached), bound to loopback,
# in invite mode: it prints the invitation link to open in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
# The access secret invitations derive from (examples/demo-loopback.toml names it).
mkdir -p target/demo
[[ -s target/demo/access-secret ]] || (umask 077 && head -c 32 /dev/urandom > target/demo/access-secret)
link="$(target/release/edgecam --config examples/demo-loopback.toml invite --name demo --ttl 7d \
  --page-url http://127.0.0.1:8080/ --no-qr)"
echo "edgecam: open $link (Ctrl-C to stop)"
exec target/release/edgecam --config examples/demo-loopback.toml "$@"
