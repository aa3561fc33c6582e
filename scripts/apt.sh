# Sourced, not run, by every script that installs Debian packages (scripts/setup.sh,
# cross/build.sh): one way to call apt-get.
# shellcheck shell=bash

# How long apt-get waits for another apt or dpkg (unattended-upgrades after boot, a
# second set-up) to release the dpkg lock, in seconds, before it gives up.
APT_LOCK_WAIT="${APT_LOCK_WAIT:-600}"

# apt_get <apt-get arguments>: apt-get as root (sudo when needed), non-interactive,
# waiting for the dpkg lock instead of failing with "Could not get lock".
apt_get() {
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o "DPkg::Lock::Timeout=$APT_LOCK_WAIT" "$@"
}

# apt_install_missing <package>...: installs those of the packages that are not
# installed yet (nothing, and no index update, when all are); progress on stderr.
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "installing ${missing[*]}" >&2
  apt_get update -q >&2
  apt_get install -y -q --no-install-recommends "${missing[@]}" >&2
}
