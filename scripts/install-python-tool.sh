#!/usr/bin/env bash
# Installs a Python tool into its own virtualenv, idempotently, and prints the path of its
# binary on stdout (everything else goes to stderr). Used by the install-*.sh scripts.
#
#   install-python-tool.sh VENV PIP_SPEC IMPORT_CHECK BINARY
#
# An existing venv whose IMPORT_CHECK imports is left alone.
set -euo pipefail

venv="$1" spec="$2" check="$3" binary="$1/bin/$4"

if [[ -x "$binary" ]] && "$venv/bin/python" -c "import $check" >/dev/null 2>&1; then
    echo "$binary"
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "$python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
"$venv/bin/python" -c "import $check" >&2
echo "$binary"
