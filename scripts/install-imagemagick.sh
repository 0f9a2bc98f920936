#!/usr/bin/env bash
# Installs ImageMagick and the DejaVu fonts, which the extraction quality test and
# `cargo xtask bench extraction-quality` render their generated pages with (`convert`),
# when they are missing. Idempotent: does nothing when both are there. Needs root (or
# sudo) and apt-get.
set -euo pipefail

font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf

present() {
  dpkg-query -W -f='${Status}' imagemagick 2>/dev/null | grep -q "install ok installed" &&
    [ -f "$font" ] && /usr/bin/convert -version >/dev/null 2>&1
}

version() {
  /usr/bin/convert -version | head -n 1
}

if present; then
  echo "imagemagick present: $(version)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends imagemagick fonts-dejavu-core >/dev/null
present || { echo "imagemagick or the DejaVu fonts are still missing" >&2; exit 1; }
echo "imagemagick installed: $(version)"
