# Sourced, not run, by the scripts that build an artifact once and cache it
# (cross/sysroot.sh, cross/arm64-root.sh, tests/lab/build-image.sh).
# shellcheck shell=bash

# reuse_or_lock <cache dir> <artifact> <done marker>
# When <done marker> exists, prints <artifact> and exits the calling script. Otherwise
# takes the cache's lock on fd 9 and returns: one builder at a time, and a second caller
# waits (up to 15 minutes), then finds the marker and reuses the artifact.
reuse_or_lock() {
  local cache="$1" artifact="$2" marker="$3"
  if [[ -f "$marker" ]]; then echo "$artifact"; exit 0; fi
  mkdir -p "$cache"
  exec 9>"$cache/lock"
  flock -w 900 9
  if [[ -f "$marker" ]]; then echo "$artifact"; exit 0; fi
}
