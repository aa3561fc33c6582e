#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, then runs
# unit, integration (Mosquitto, GStreamer, webrtc-rs) and browser (Chromium) tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Integration tests start real processes and WebRTC stacks; two at a time suits 2 cores.
cargo test --all-targets -- --test-threads=2
