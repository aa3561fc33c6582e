#!/usr/bin/env bash
# Builds (once) a WHEP client nobody here wrote: GStreamer's `whepsrc`, from the
# gst-plugins-rs crate gst-plugin-webrtchttp on crates.io (checksum pinned, built with
# the crate's own Cargo.lock), and prints the directory holding libgstwebrtchttp.so, for
# GST_PLUGIN_PATH or a registry scan. tests/integrations.rs plays edgecam's WHEP
# endpoint with it. Needs libgstreamer-plugins-bad1.0-dev (gstreamer-webrtc-1.0) to
# build and gstreamer1.0-nice (webrtcbin's ICE) to run: scripts/setup.sh --test.
#
# Built without the crate's default features: `v1_24` would need GStreamer 1.24
# (Debian 12 has 1.22), and `rustls-ring` replaces aws-lc (no cmake/NASM needed).
# Cached under $EDGECAM_WHEP_CACHE (default /var/cache/edgecam-whep), keyed by the
# hash of this script.
set -euo pipefail

VERSION=0.15.4
SHA256=180a9daf918387be9e9ee46acaf555bdf8df9e427c1397f4008295f00e57dad5

here="$(cd "$(dirname "$0")" && pwd)"
key="$(sha256sum <"$here/whep-client.sh" | cut -c1-12)"
cache="${EDGECAM_WHEP_CACHE:-/var/cache/edgecam-whep}"
out="$cache/webrtchttp-$VERSION-$key"
# shellcheck source=scripts/cache.sh
source "$here/cache.sh"
reuse_or_lock "$cache" "$out" "$out.done"
started=$SECONDS
work="$cache/build"
rm -rf "$work" "$out"
mkdir -p "$work"
curl -fsSL --retry 3 -o "$work/crate.tar.gz" \
  "https://static.crates.io/crates/gst-plugin-webrtchttp/gst-plugin-webrtchttp-$VERSION.crate"
echo "$SHA256  $work/crate.tar.gz" | sha256sum -c --quiet
tar -xzf "$work/crate.tar.gz" -C "$work"
# From the repository, so that rustup picks rust-toolchain.toml's toolchain.
(cd "$here/.." && cargo build --release --locked --no-default-features --features rustls-ring \
  --manifest-path "$work/gst-plugin-webrtchttp-$VERSION/Cargo.toml" \
  --target-dir "$work/target" >&2)
mkdir -p "$out"
cp "$work/target/release/libgstwebrtchttp.so" "$out/"
rm -rf "$work"
touch "$out.done"
echo "whep-client: built $out in $((SECONDS - started)) s" >&2
echo "$out"
