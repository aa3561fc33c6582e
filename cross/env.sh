# Sourced, not run: sets the variables cargo, the cc crate, pkg-config and bindgen read
# to build for <target> against <sysroot> (from cross/sysroot.sh). Everything is keyed
# by target, so host builds in the same shell are untouched.
#
#   source cross/env.sh aarch64-unknown-linux-gnu /var/cache/edgecam-cross/arm64-…
#
# cross/Dockerfile.* set the same variables as ENV lines (without a sysroot); keep the
# two in step.
# shellcheck shell=bash
edgecam_cross_env() {
  local target="$1" sysroot="$2" triple
  case "$target" in
    aarch64-unknown-linux-gnu) triple=aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) triple=arm-linux-gnueabihf ;;
    *) echo "cross/env.sh: unsupported target $target" >&2; return 2 ;;
  esac
  local t="${target//-/_}" T
  T="$(echo "$t" | tr '[:lower:]' '[:upper:]')"
  export "CARGO_TARGET_${T}_LINKER=${triple}-gcc"
  # The Debian cross gcc brings its own libc in /usr/<triple>; --sysroot makes it link
  # against the sysroot's glibc 2.36 and GStreamer instead, exactly what the Pi has.
  export "CARGO_TARGET_${T}_RUSTFLAGS=-C link-arg=--sysroot=${sysroot}"
  export "CC_${t}=${triple}-gcc" "AR_${t}=${triple}-ar"
  export "CFLAGS_${t}=--sysroot=${sysroot}"
  # PKG_CONFIG_LIBDIR (not _PATH) replaces the default search path, so no host .pc
  # file can leak into a target build; SYSROOT_DIR prefixes the -I/-L paths found.
  export "PKG_CONFIG_SYSROOT_DIR_${t}=${sysroot}"
  export "PKG_CONFIG_LIBDIR_${t}=${sysroot}/usr/lib/${triple}/pkgconfig:${sysroot}/usr/share/pkgconfig"
  export "PKG_CONFIG_ALLOW_CROSS_${t}=1"
  export "BINDGEN_EXTRA_CLANG_ARGS_${t}=--sysroot=${sysroot} --target=${triple} -I${sysroot}/usr/include/${triple}"
}
edgecam_cross_env "$@"
