#!/usr/bin/env bash
# Build (once) and cache a Debian unstable chroot with Asterisk for the PBX tests.
#
#   tests/pbx/asterisk_chroot.sh            ensure the chroot exists; print its path
#   tests/pbx/asterisk_chroot.sh --refresh  try to rebuild from today's unstable
#
# Debian 12 has no Asterisk package, so the tests run unstable's in a chroot. Unstable changes
# daily and can be broken on any given day, so the downloaded .deb files are kept as a debootstrap
# tarball and a failed download or install falls back to the last tarball that worked.
# Everything lives outside the repository (SEABRIDGE_ASTERISK_CACHE); a second call with the
# chroot in place returns at once, so CI may call this on every run.
set -euo pipefail

CACHE="${SEABRIDGE_ASTERISK_CACHE:-/var/cache/seabridge-test/asterisk}"
MIRROR="${SEABRIDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="asterisk,asterisk-modules,asterisk-config"
ROOT="$CACHE/root"
GOOD_DEBS="$CACHE/debs/asterisk-sid.tgz"
READY="$ROOT/.seabridge-ready"

refresh=0
case "${1:-}" in
  "") ;;
  --refresh) refresh=1 ;;
  *) echo "usage: $0 [--refresh]" >&2; exit 2 ;;
esac

log() { echo "asterisk-chroot: $*" >&2; }

if [ -f "$READY" ] && [ "$refresh" = 0 ]; then
  echo "$ROOT"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "building the chroot needs root (debootstrap, chroot)"
  exit 1
fi
command -v debootstrap >/dev/null || { log "debootstrap is not installed (scripts/test installs it)"; exit 1; }

mkdir -p "$CACHE/debs"
# Several test runs (worktrees, CI) may start at once: one builds, the others wait for it.
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$READY" ] && [ "$refresh" = 0 ]; then
  echo "$ROOT"
  exit 0
fi

# Called from `if`, where bash ignores `set -e`: every step says `|| return 1` itself.
download() {  # $1: tarball to write
  local work="$CACHE/download.tmp"
  rm -rf "$work" "$1"
  debootstrap --variant=minbase --include="$PACKAGES" --make-tarball="$1" sid "$work" "$MIRROR" >&2 \
    || { rm -rf "$work"; return 1; }
  rm -rf "$work"
}

install_from() {  # $1: tarball, $2: target directory, $3: the mirror the tarball came from
  rm -rf "$2"
  # The tarball's package lists are named after the mirror: unpacking needs the same URL.
  debootstrap --variant=minbase --include="$PACKAGES" --unpack-tarball="$1" sid "$2" "$3" >&2 || return 1
  # The package hands these to the asterisk user; the tests run Asterisk as root inside the chroot.
  # /run/asterisk is made by systemd-tmpfiles on a real system, which a chroot does not run.
  mkdir -p "$2/run/asterisk" || return 1
  chroot "$2" chown -R root:root /var/lib/asterisk /var/log/asterisk /var/spool/asterisk /run/asterisk \
    || return 1
  chroot "$2" /usr/sbin/asterisk -V >/dev/null || return 1
  mkdir -p "$2/tmp" && chmod 1777 "$2/tmp" || return 1
}

record_version() {  # $1: root, $2: tarball it came from
  {
    echo "asterisk_version=$(chroot "$1" /usr/sbin/asterisk -V)"
    echo "package_version=$(chroot "$1" dpkg-query -W -f='${Version}' asterisk)"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "debs=$2"
  } >"$1/.seabridge-version"
  cp "$1/.seabridge-version" "$CACHE/VERSION"
}

fresh="$CACHE/debs/asterisk-sid.new.tgz"
new_root="$CACHE/root.new"
built=0
log "downloading Debian unstable's Asterisk (a few minutes, once)"
if download "$fresh" && install_from "$fresh" "$new_root" "$MIRROR"; then
  mv -f "$fresh" "$GOOD_DEBS"
  echo "$MIRROR" >"$GOOD_DEBS.mirror"
  record_version "$new_root" "$GOOD_DEBS"
  built=1
else
  log "building from today's unstable failed"
  rm -rf "$fresh" "$new_root"
  if [ -f "$READY" ]; then
    log "keeping the chroot built before: $(cat "$CACHE/VERSION" 2>/dev/null | head -1)"
    echo "$ROOT"
    exit 0
  fi
  if [ -f "$GOOD_DEBS" ]; then
    log "falling back to the cached packages in $GOOD_DEBS"
    install_from "$GOOD_DEBS" "$new_root" "$(cat "$GOOD_DEBS.mirror")" || { log "installing the cached packages failed too"; exit 1; }
    record_version "$new_root" "$GOOD_DEBS"
    built=1
  fi
fi
[ "$built" = 1 ] || { log "no Asterisk chroot and no cached packages to build one"; exit 1; }

touch "$new_root/.seabridge-ready"
rm -rf "$CACHE/root.old"
[ -d "$ROOT" ] && mv "$ROOT" "$CACHE/root.old"
mv "$new_root" "$ROOT"
rm -rf "$CACHE/root.old"
log "ready: $(head -1 "$CACHE/VERSION")"
echo "$ROOT"
