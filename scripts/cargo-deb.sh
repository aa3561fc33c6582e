#!/usr/bin/env bash
# Runs `cargo deb` with the given arguments, installing the pinned cargo-deb first when
# it is missing. Used by cross/package.sh (the Pi packages) and tests/lab.rs (the
# amd64 package the device lab installs).
set -euo pipefail
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
exec cargo deb "$@"
