#!/usr/bin/env bash
# fetch.sh DEST [LOCK] — fetch the npm-registry files listed in LOCK (default
# npm.lock beside this script) into DEST, verifying each tarball's sha256.
# Files already present are kept.
set -euo pipefail
dest=${1:?usage: fetch.sh DEST [LOCK]}
lock=${2:-"$(dirname "$0")/npm.lock"}
command -v npm >/dev/null || { echo "fetch.sh: npm is required (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$dest/tgz"
grep -vE '^\s*(#|$)' "$lock" | while read -r spec sum member out; do
  [ -s "$dest/$out" ] && continue
  tgz="$dest/tgz/$(echo "$spec" | tr '@/' '__').tgz"
  if [ ! -s "$tgz" ] || ! echo "$sum  $tgz" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "fetching $spec"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --ignore-scripts --silent "$spec" >/dev/null)
    mv "$tmp"/*.tgz "$tgz"
    rm -rf "$tmp"
  fi
  echo "$sum  $tgz" | sha256sum -c --quiet - || { echo "fetch.sh: sha256 mismatch for $spec" >&2; exit 1; }
  mkdir -p "$(dirname "$dest/$out")"
  tar -xzf "$tgz" -O "$member" > "$dest/$out.tmp"
  mv "$dest/$out.tmp" "$dest/$out"
  echo "  $out"
done
