#!/usr/bin/env bash
# Installs moto's S3-compatible server into a virtualenv for the blob-store S3 tests.
#
# Idempotent: an existing, working venv is left alone. Prints the path of the
# `moto_server` binary on stdout; export it as FOLIO_MOTO_SERVER for `cargo test`.
#
#   FOLIO_MOTO_SERVER="$(scripts/install-moto.sh)" cargo test -p blob-store
#
# Env: FOLIO_MOTO_VENV overrides the venv location (default ~/.cache/folio/moto-venv).
set -euo pipefail

venv="${FOLIO_MOTO_VENV:-${HOME:-/root}/.cache/folio/moto-venv}"
server="$venv/bin/moto_server"

if [[ -x "$server" ]] && "$venv/bin/python" -c 'import moto.server, flask' >/dev/null 2>&1; then
    echo "$server"
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-moto.sh: $python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5,<6" >&2
"$venv/bin/python" -c 'import moto.server, flask' >&2
echo "$server"
