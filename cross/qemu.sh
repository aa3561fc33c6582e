#!/usr/bin/env bash
# Runs a cross-built edgecam under qemu-user with the bookworm sysroot as its root for
# libraries (`-L`), so the target's own glibc, GStreamer and plugins are the ones used.
#
#   cross/qemu.sh aarch64-unknown-linux-gnu target/cross/…/edgecam selftest --test-source
#
# Needs qemu-user-static (cross/build.sh does not install it; scripts/setup.sh --test
# does). GStreamer cannot fork its plugin scanner helper under qemu-user (the helper is a
# target binary and no binfmt handler is assumed), so plugins are scanned in-process.
set -euo pipefail
target="${1:?usage: cross/qemu.sh <rust target> <binary> [args]}"
bin="${2:?usage: cross/qemu.sh <rust target> <binary> [args]}"; shift 2
case "$target" in
  aarch64-unknown-linux-gnu) qemu=qemu-aarch64-static triple=aarch64-linux-gnu ;;
  armv7-unknown-linux-gnueabihf) qemu=qemu-arm-static triple=arm-linux-gnueabihf ;;
  *) echo "cross/qemu.sh: unsupported target $target" >&2; exit 2 ;;
esac
sysroot="$("$(dirname "$0")/sysroot.sh" "$target")"
scratch="$(mktemp -d /dev/shm/edgecam-qemu.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
export GST_REGISTRY_FORK=no GST_REGISTRY="$scratch/registry.bin"
if [[ "$target" == armv7-* ]]; then
  # 32-bit qemu-user cannot list directories on this host's ext4 (64-bit inode cookies,
  # EOVERFLOW), so GStreamer would find no plugins; a tmpfs copy lists fine. A qemu
  # artefact: on a Pi the plugins load from their usual place.
  cp -r "$sysroot/usr/lib/$triple/gstreamer-1.0" "$scratch/plugins"
  export GST_PLUGIN_SYSTEM_PATH="$scratch/plugins"
fi
"$qemu" -L "$sysroot" "$bin" "$@"
