#!/usr/bin/env bash
# Installs everything edgecam needs to build, run and test on Debian 12 (bookworm).
# Idempotent: installs only what is missing. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_PKGS=(build-essential pkg-config libclang-dev clang libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev libasound2-dev)
RUN_PKGS=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-alsa gstreamer1.0-libcamera gstreamer1.0-tools
  gstreamer1.0-x)
TEST_PKGS=(mosquitto mosquitto-clients chromium firefox-esr iproute2 procps nodejs npm coturn nftables openssl faketime curl
  systemd qemu-system-x86 mmdebstrap e2fsprogs qemu-user-static arch-test python3
  libgstreamer-plugins-bad1.0-dev gstreamer1.0-nice pulseaudio pulseaudio-utils libasound2-plugins)

want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${TEST_PKGS[@]}"); fi

# shellcheck source=scripts/apt.sh
source scripts/apt.sh
# node and npm may come from outside Debian (e.g. NodeSource); accept any working install.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${want[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done
  want=("${tmp[@]}")
fi
apt_install_missing "${want[@]}"

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust with rustup (rust-toolchain.toml pins the version)" >&2
  exit 1
fi
# rust-toolchain.toml pins the toolchain; make sure it and its components are present.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [[ "${1:-}" == "--test" ]]; then
  # The supply-chain gate (deny.toml), pinned; built from crates.io once per machine.
  CARGO_DENY_VERSION=0.20.2
  if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" >&2
  fi
  # cargo-deb (pinned in scripts/cargo-deb.sh) before the suite starts: the background
  # cross packaging and tests/lab.rs both call it, and two first-time installs at once
  # would race for ~/.cargo/bin.
  scripts/cargo-deb.sh --version >/dev/null
  # The browser tests drive Debian's chromium with playwright-core and Debian's
  # firefox-esr with puppeteer-core (neither downloads a browser).
  if [[ ! -d tests/e2e/node_modules/playwright-core || ! -d tests/e2e/node_modules/puppeteer-core ]]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
