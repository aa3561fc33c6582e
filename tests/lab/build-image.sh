#!/usr/bin/env bash
# Builds (once) the device-lab VM image: Debian bookworm with systemd, journald, udev,
# the kernel's vivid/snd-aloop test drivers, v4l2loopback (built here by DKMS for the
# image's kernel, on the host, not under TCG) and the GStreamer runtime edgecam links
# against, plus what edgecam's .deb depends on (adduser), so `dpkg -i` works in a VM
# that has no network, and what it recommends (gstreamer1.0-x: the test pattern's clock
# overlay, and with it Fontconfig under the hardened unit). Prints the directory holding
# vmlinuz, initrd.img and disk.img.
#
# The image is cached under $EDGECAM_LAB_CACHE (default /var/cache/edgecam-lab), keyed
# by the hash of this script, so changing the package list rebuilds it. Needs root,
# mmdebstrap and e2fsprogs (scripts/setup.sh --test installs them). Nothing of the
# project goes into the image: the .deb and the viewer come in over 9p at boot.
set -euo pipefail

PACKAGES=(systemd systemd-sysv udev kmod dbus procps iproute2
  linux-image-amd64 initramfs-tools zstd
  alsa-utils v4l-utils libasound2
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-alsa
  adduser linux-headers-amd64 v4l2loopback-dkms gstreamer1.0-x)
MIRROR="${EDGECAM_LAB_MIRROR:-http://deb.debian.org/debian}"

here="$(cd "$(dirname "$0")" && pwd)"
key="$(cat "$here/build-image.sh" | sha256sum | cut -c1-16)"
cache="${EDGECAM_LAB_CACHE:-/var/cache/edgecam-lab}"
out="$cache/$key"
# shellcheck source=scripts/cache.sh
source "$here/../../scripts/cache.sh"
reuse_or_lock "$cache" "$out" "$out/done"

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
started=$SECONDS

# The guest mounts the 9p share at /lab and runs /lab/guest.sh (supplied per run by the
# test), whose output comes back through the same share; then it powers off.
read -r -d '' LAB_UNIT <<'UNIT' || true
[Unit]
Description=edgecam device lab runner
After=multi-user.target systemd-udev-settle.service
Wants=systemd-udev-settle.service

[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStartPre=/sbin/modprobe -a 9pnet_virtio 9p
ExecStartPre=/bin/mkdir -p /lab
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 lab /lab
ExecStart=/bin/sh /lab/guest.sh
ExecStopPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
UNIT

mmdebstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook='echo edgecam-lab > "$1/etc/hostname"' \
  --customize-hook='echo "/dev/vda / ext4 rw,relatime 0 1" > "$1/etc/fstab"' \
  --customize-hook='chroot "$1" passwd -d root' \
  --customize-hook="printf '%s\n' \"$LAB_UNIT\" > \"\$1/etc/systemd/system/lab.service\"" \
  --customize-hook='chroot "$1" systemctl enable lab.service' \
  --customize-hook='k="$(ls "$1/lib/modules" | head -1)"; chroot "$1" dkms autoinstall -k "$k" >&2; ls "$1/lib/modules/$k/updates/dkms/" | grep -q "^v4l2loopback\.ko"' \
  --customize-hook='chroot "$1" systemctl mask getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer' \
  bookworm "$root" "$MIRROR" >&2

kver="$(ls "$root/lib/modules" | head -1)"
mkdir -p "$work/out"
cp "$root/boot/vmlinuz-$kver" "$work/out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/out/initrd.img"
size_mb=$(( $(du -sm "$root" | cut -f1) + 768 ))
mkfs.ext4 -q -L lab -d "$root" "$work/out/disk.img" "${size_mb}M" >&2
echo "kernel $kver, image ${size_mb} MB, built in $((SECONDS - started)) s" > "$work/out/done"
rm -rf "$out"
mv "$work/out" "$out"
echo "lab image built: $(cat "$out/done")" >&2
echo "$out"
