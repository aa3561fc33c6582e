#!/usr/bin/env bash
# Cross-builds edgecam for a Raspberry Pi target without Docker, on a Debian 12 host:
# installs the Debian cross toolchain and the Rust target when missing, prepares the
# bookworm sysroot (cross/sysroot.sh), then runs `cargo build --locked --target <target>` with the
# rest of the arguments. Prints the path of the built binary last.
#
#   cross/build.sh aarch64-unknown-linux-gnu --release
#   cross/build.sh armv7-unknown-linux-gnueabihf --release
#
# Artifacts go to $CARGO_TARGET_DIR (default target/cross, kept apart from the host
# build so a cross build never waits on, or invalidates, the host's).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: cross/build.sh <rust target> [cargo build args]}"; shift
case "$target" in
  aarch64-unknown-linux-gnu) tool_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
  armv7-unknown-linux-gnueabihf) tool_pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
  *) echo "cross/build.sh: unsupported target $target" >&2; exit 2 ;;
esac
tool_pkgs+=(pkg-config libclang-dev clang debian-archive-keyring)

# shellcheck source=scripts/apt.sh
source scripts/apt.sh
apt_install_missing "${tool_pkgs[@]}"
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2

sysroot="$(cross/sysroot.sh "$target")"
# shellcheck source=cross/env.sh
source cross/env.sh "$target" "$sysroot"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross}"
started=$SECONDS
# Only the camera: the benchmark (edgecam-bench) runs on the build host, not on the Pi.
cargo build --locked --target "$target" --bin edgecam "$@" >&2
profile=debug
for a in "$@"; do [[ "$a" == --release ]] && profile=release; done
bin="$CARGO_TARGET_DIR/$target/$profile/edgecam"
echo "cross/build.sh: $target $profile built in $((SECONDS - started)) s, $(stat -c %s "$bin") bytes" >&2
echo "$bin"
