#!/usr/bin/env bash
# Builds the Debian package for a Raspberry Pi target: the release binary through
# cross/build.sh (no Docker), then `cargo deb` with the metadata in Cargo.toml. Prints the
# binary's path, then the .deb's path.
#
#   cross/package.sh aarch64-unknown-linux-gnu      # edgecam_<version>-1_arm64.deb
#   cross/package.sh armv7-unknown-linux-gnueabihf  # edgecam_<version>-1_armhf.deb
#
# scripts/cargo-deb.sh installs cargo-deb (pinned) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: cross/package.sh <rust target>}"
# One packaging at a time per target directory: scripts/test.sh builds the packages in
# the background while tests/cross.rs may ask for them, and two cargo-deb runs writing
# the same .deb would race. cargo's own lock covers only the build.
lock_dir="${CARGO_TARGET_DIR:-$PWD/target/cross}"
mkdir -p "$lock_dir"
exec 9>"$lock_dir/.package.lock"
flock 9
bin="$(cross/build.sh "$target" --release)"
# cargo-deb must look where build.sh built: take the target directory from its output
# rather than repeating build.sh's default here.
export CARGO_TARGET_DIR="${bin%/"$target"/release/edgecam}"
out="$CARGO_TARGET_DIR/debian"
mkdir -p "$out"
# The binary is already stripped (profile.release.strip); cargo-deb only packs it.
deb="$(scripts/cargo-deb.sh --target "$target" --no-build --no-strip --no-dbgsym --output "$out" | tail -1)"
echo "$bin"
echo "$deb"
