#!/usr/bin/env bash
# Installs the tesseract CLI (Debian's tesseract-ocr, with English data) when it is missing,
# and the language packs named as arguments (tesseract codes: `deu`, `fra`, `chi_sim`; each
# is Debian's tesseract-ocr-CODE, with `_` written `-`) when their traineddata is missing.
#
#   scripts/install-tesseract.sh            # tesseract with eng
#   scripts/install-tesseract.sh deu fra    # and German and French
#
# Idempotent: installs nothing that `tesseract --list-langs` already lists. Needs root (or
# sudo) and apt-get for what is missing.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
updated=""
apt_install() {
  if [ -z "$updated" ]; then
    $sudo apt-get update -qq
    updated=1
  fi
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! { command -v tesseract >/dev/null 2>&1 && tesseract --version >/dev/null 2>&1; }; then
  apt_install tesseract-ocr tesseract-ocr-eng
fi

missing=()
for language in "$@"; do
  case "$language" in
    *[!a-z0-9_]* | "") echo "not a tesseract language code: $language" >&2; exit 2 ;;
  esac
  if ! tesseract --list-langs 2>/dev/null | tail -n +2 | grep -qx "$language"; then
    missing+=("tesseract-ocr-${language//_/-}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

echo "tesseract present: $(tesseract --version 2>&1 | head -n 1); languages: $(tesseract --list-langs 2>/dev/null | tail -n +2 | tr '\n' ' ')"
