#!/usr/bin/env bash
# Builds (once) a minimal Debian bookworm arm64 root directory with the runtime packages
# the edgecam .deb depends on, and prints its path. tests/cross.rs copies it, installs the arm64 .deb with `dpkg -i` inside it (chroot, qemu-user through binfmt)
# and runs edgecam there: the same steps as `apt install ./edgecam_*_arm64.deb` on a Pi.
#
# Needs root, mmdebstrap and qemu-user-static. The qemu-aarch64 binfmt handler is
# registered when missing (what installing qemu-user-static does on a systemd host).
# Cached under $EDGECAM_CROSS_CACHE (default /var/cache/edgecam-cross), keyed by the
# hash of this script.
set -euo pipefail

PACKAGES=(libc6 libgcc-s1 libasound2 libglib2.0-0 libgstreamer1.0-0
  libgstreamer-plugins-base1.0-0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-alsa adduser systemd)
MIRROR="${EDGECAM_CROSS_MIRROR:-http://deb.debian.org/debian}"

here="$(cd "$(dirname "$0")" && pwd)"
key="$(sha256sum <"$here/arm64-root.sh" | cut -c1-12)"
cache="${EDGECAM_CROSS_CACHE:-/var/cache/edgecam-cross}"
out="$cache/arm64-root-$key"
# Needed to build the root and to chroot into it later, so also when it is cached.
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
fi
# shellcheck source=scripts/cache.sh
source "$here/../scripts/cache.sh"
reuse_or_lock "$cache" "$out" "$out.done"
rm -rf "$out.tmp"
started=$SECONDS
mmdebstrap --architectures=arm64 --variant=minbase \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  bookworm "$out.tmp" "$MIRROR" >&2
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out.done"
echo "arm64-root: built $out in $((SECONDS - started)) s ($(du -sm "$out" | cut -f1) MiB)" >&2
echo "$out"
