#!/usr/bin/env bash
# Installs the tesseract CLI (Debian's tesseract-ocr, with English data) when it is missing.
# Idempotent: does nothing when `tesseract` already runs. Needs root (or sudo) and apt-get.
set -euo pipefail

if command -v tesseract >/dev/null 2>&1 && tesseract --version >/dev/null 2>&1; then
  echo "tesseract present: $(tesseract --version 2>&1 | head -n 1)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng >/dev/null
echo "tesseract installed: $(tesseract --version 2>&1 | head -n 1)"
