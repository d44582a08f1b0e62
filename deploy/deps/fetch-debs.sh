#!/usr/bin/env bash
# fetch-debs.sh DEST — fetch the Debian packages listed in debian.lock with
# `apt-get download`, verify each .deb's sha256 and extract it with
# `dpkg-deb -x` into DEST/<package>/. Packages already extracted are kept.
# apt-get needs package lists: as root, a failed download runs
# `apt-get update` and tries again.
set -euo pipefail
dest=${1:?usage: fetch-debs.sh DEST}
lock="$(dirname "$0")/debian.lock"
for c in apt-get dpkg-deb sha256sum; do
  command -v "$c" >/dev/null || { echo "fetch-debs.sh: $c is required (Debian or Ubuntu)" >&2; exit 1; }
done
mkdir -p "$dest/deb"
dest=$(cd "$dest" && pwd)
grep -vE '^\s*(#|$)' "$lock" | while read -r pkg ver sum; do
  [ -f "$dest/$pkg/.sha256" ] && [ "$(cat "$dest/$pkg/.sha256")" = "$sum" ] && continue
  deb="$dest/deb/${pkg}_${ver}_all.deb"
  if [ ! -s "$deb" ] || ! echo "$sum  $deb" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "fetching $pkg=$ver"
    tmp=$(mktemp -d)
    chmod 755 "$tmp" # apt's _apt user downloads into it when run as root
    get() { (cd "$tmp" && { apt-get download -qq "$pkg=$ver" 2>&1 >/dev/null | grep -v unsandboxed >&2 || true; } && ls ./*.deb >/dev/null 2>&1); }
    if ! get; then
      [ "$(id -u)" = 0 ] && apt-get update -qq || true
      if ! get; then
        rm -rf "$tmp"
        echo "fetch-debs.sh: apt-get download $pkg=$ver failed (as root, run apt-get update)" >&2
        exit 1
      fi
    fi
    mv "$tmp"/*.deb "$deb"
    rm -rf "$tmp"
  fi
  echo "$sum  $deb" | sha256sum -c --quiet - || { echo "fetch-debs.sh: sha256 mismatch for $pkg=$ver" >&2; exit 1; }
  rm -rf "$dest/$pkg.tmp"
  mkdir -p "$dest/$pkg.tmp"
  dpkg-deb -x "$deb" "$dest/$pkg.tmp"
  echo "$sum" > "$dest/$pkg.tmp/.sha256"
  rm -rf "$dest/$pkg"
  mv "$dest/$pkg.tmp" "$dest/$pkg"
  echo "  $pkg"
done
