#!/usr/bin/env bash
# Renders an SVG figure to PNG with headless Chromium, to check what a browser shows:
#   scripts/render-svg.sh FIGURE.svg OUT.png
# Needs Debian's chromium (`apt-get install -y chromium`).
set -euo pipefail
svg="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
out="$2"
size="$(sed -n 's/.*<svg width="\([0-9]*\)" height="\([0-9]*\)".*/\1,\2/p' "$svg" | head -1)"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size="${size:-800,600}" --screenshot="$out" "file://$svg" 2>/dev/null
echo "rendered $out"
