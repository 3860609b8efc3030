#!/bin/bash
# make deb: the Debian package, built with the standard tooling (dpkg-buildpackage and
# debhelper's meson support, debian/) from the files git knows of (committed or not, never the
# build directories), in a scratch directory; the .deb lands in OUT (default build-deb/).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-deb}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - | tar xf - -C "$tmp/src"
(cd "$tmp/src" && DEB_BUILD_OPTIONS="parallel=$(nproc) nocheck" dpkg-buildpackage -us -uc -b) \
    >"$tmp/build.log" 2>&1 || { tail -50 "$tmp/build.log" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/*.deb
cp "$tmp"/*.deb "$out"/
ls "$out"/*.deb
