#!/usr/bin/env bash
# Prepares (once) a Debian bookworm sysroot for a Raspberry Pi target on a Debian 12 host,
# without Docker and without touching the host's dpkg database, and prints its path.
#
#   cross/sysroot.sh aarch64-unknown-linux-gnu      # arm64 (Pi OS 64-bit)
#   cross/sysroot.sh armv7-unknown-linux-gnueabihf  # armhf (Pi OS 32-bit)
#   cross/sysroot.sh --build-only <target>          # only what linking needs
#
# How: apt resolves the target architecture's packages with a private state, cache and
# source list (`-o APT::Architecture=arm64`), downloads them (`--download-only`), and each
# .deb is unpacked with `dpkg-deb -x`. Absolute .so symlinks are rewritten as relative
# ones so they resolve inside the sysroot. A system-wide `dpkg --add-architecture` does
# not work on bookworm: libgstreamer-plugins-base1.0-dev:arm64 conflicts with its amd64
# twin. Bookworm is what Pi OS bookworm is built on: glibc 2.36, GStreamer 1.22.
#
# Besides the -dev packages the sysroot holds the GStreamer runtime plugins, so the
# cross-built binary can run under qemu-user with `-L <sysroot>` (cross/qemu.sh).
#
# Cached under $EDGECAM_CROSS_CACHE (default /var/cache/edgecam-cross), keyed by the hash
# of this script and the package set. Needs apt-get, dpkg-deb and
# debian-archive-keyring (all on any Debian 12).
set -euo pipefail

build_only=false
if [[ "${1:-}" == "--build-only" ]]; then build_only=true; shift; fi
target="${1:?usage: cross/sysroot.sh [--build-only] <rust target>}"
case "$target" in
  aarch64-unknown-linux-gnu) arch=arm64 ;;
  armv7-unknown-linux-gnueabihf) arch=armhf ;;
  *) echo "sysroot: unsupported target $target" >&2; exit 2 ;;
esac

# What linking edgecam needs (gstreamer-rs, gstreamer-app/-video, alsa-sys; libc6-dev
# brings linux-libc-dev, whose videodev2.h the v4l crate's bindgen reads).
BUILD_PKGS=(libc6-dev libgcc-12-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  libasound2-dev)
# What `edgecam selftest` loads at run time: test sources, x264enc (ugly), h264parse
# (bad), opusenc and the app elements (base), v4l2 elements (good).
RUN_PKGS=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-alsa)
pkgs=("${BUILD_PKGS[@]}")
$build_only || pkgs+=("${RUN_PKGS[@]}")
MIRROR="${EDGECAM_CROSS_MIRROR:-http://deb.debian.org/debian}"

here="$(cd "$(dirname "$0")" && pwd)"
key="$( (cat "$here/sysroot.sh"; echo "${pkgs[*]} $MIRROR") | sha256sum | cut -c1-12)"
cache="${EDGECAM_CROSS_CACHE:-/var/cache/edgecam-cross}"
kind=full; $build_only && kind=build
out="$cache/$arch-$kind-$key"
# shellcheck source=scripts/cache.sh
source "$here/../scripts/cache.sh"
reuse_or_lock "$cache" "$out" "$out/.done"

started=$SECONDS
work="$(mktemp -d "$cache/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/root"
touch "$work/state/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# bookworm and its point-release updates. Security updates do not change a library's ABI
# (what linking needs), and leaving their suite out keeps one flaky index fewer.
cat >"$work/sources.list" <<EOF
deb [arch=$arch signed-by=$keyring] $MIRROR bookworm main
deb [arch=$arch signed-by=$keyring] $MIRROR bookworm-updates main
EOF
apt_opts=(-o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
  -o "Dir::State=$work/state" -o "Dir::State::status=$work/state/status"
  -o "Dir::Cache=$work/cache" -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=$work/parts" -o "Dir::Etc::PreferencesParts=$work/parts"
  -o "Debug::NoLocking=1" -o "APT::Install-Recommends=false" -o "APT::Sandbox::User=root"
  -o "Acquire::Retries=3" -o "Acquire::By-Hash=force" -q)
# Index files by hash (immutable URLs): a mirror mid-sync, or a caching proxy holding a
# stale Packages file, otherwise fails the hash check again and again. And should an
# update still fail, try the whole update again a little later.
for attempt in 1 2 3; do
  if apt-get "${apt_opts[@]}" update >&2; then break; fi
  ((attempt < 3)) || { echo "sysroot: apt-get update failed 3 times" >&2; exit 1; }
  sleep $((attempt * 15))
done
apt-get "${apt_opts[@]}" install -y --download-only "${pkgs[@]}" >&2

debs=("$work"/cache/archives/*.deb)
bytes=$(du -cb "${debs[@]}" | tail -1 | cut -f1)
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$work/root"; done

# Debian's absolute symlinks (libfoo.so -> /usr/lib/…/libfoo.so.1) would point into the
# host; make every absolute link relative to its place in the sysroot.
while IFS= read -r -d '' link; do
  dest="$(readlink "$link")"
  [[ "$dest" == /* ]] || continue
  ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$work/root$dest")" "$link"
done < <(find "$work/root" -type l -print0)

printf '%s\n' "${debs[@]##*/}" | sort >"$work/root/.packages"
rm -rf "$out"
mv "$work/root" "$out"
touch "$out/.done"
echo "sysroot: $arch ($kind) ready in $out: ${#debs[@]} packages, $((bytes / 1048576)) MiB downloaded, $((SECONDS - started)) s" >&2
echo "$out"
