#!/usr/bin/env bash
# Installs the PDF tools page ingestion runs (Debian's poppler-utils: pdfinfo, pdftoppm,
# pdftotext) and qpdf (the PDF tests encrypt their PDFs with it) when they are missing.
# Idempotent: does nothing when all of them already run. Needs root (or sudo) and apt-get.
set -euo pipefail

present() {
  command -v pdfinfo >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1 &&
    command -v pdftotext >/dev/null 2>&1 && command -v qpdf >/dev/null 2>&1 &&
    pdftoppm -v >/dev/null 2>&1
}

version() {
  echo "poppler $(pdftoppm -v 2>&1 | head -n 1 | awk '{print $NF}'), $(qpdf --version | head -n 1)"
}

if present; then
  echo "poppler-utils present: $(version)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends poppler-utils qpdf >/dev/null
echo "poppler-utils installed: $(version)"
