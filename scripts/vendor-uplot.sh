#!/usr/bin/env bash
# Vendor uPlot (the dashboard's charts) into the package from the npm registry, at a pinned version and
# checksum: the dashboard loads nothing from the network at run time. Run from the repo root; commit the result.
set -euo pipefail
VERSION=1.6.32
SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d  # of uplot-$VERSION.tgz
dest=src/ratchet/versions/dashboard/static/vendor/uplot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "uplot@$VERSION" --silent >/dev/null)
echo "$SHA256  $work/uplot-$VERSION.tgz" | sha256sum -c --quiet
tar -xzf "$work/uplot-$VERSION.tgz" -C "$work"
mkdir -p "$dest"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$dest/"
echo "uplot $VERSION" > "$dest/VERSION"
