#!/usr/bin/env bash
# Boots the device-lab VM once: `boot.sh IMAGE_DIR SHARE_DIR [TIMEOUT_S]`. The guest
# runs SHARE_DIR/guest.sh (as root, under systemd, with the share mounted at /lab) and
# powers off; its serial console goes to SHARE_DIR/console.log. Exits with QEMU's status
# (124 on timeout). Software emulation (TCG): these machines have no KVM. The VM has no
# network device at all, so nothing in it can reach outside.
set -euo pipefail
image="$1"; share="$2"; limit="${3:-600}"
# /dev/kvm exists on these machines but QEMU aborts on it (nested MSRs); opt in.
accel="${EDGECAM_LAB_ACCEL:-tcg}"
exec timeout --kill-after=10 "$limit" qemu-system-x86_64 \
  -machine q35,accel="$accel" -cpu max -smp 2 -m 2048 \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 panic=-1" \
  -drive file="$image/disk.img",if=virtio,format=raw,snapshot=on \
  -virtfs local,path="$share",mount_tag=lab,security_model=none,id=lab \
  -nic none -display none -no-reboot \
  -serial file:"$share/console.log" -monitor none
