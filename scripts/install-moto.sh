#!/usr/bin/env bash
# Installs moto's S3-compatible server into a virtualenv for the S3 tests, with a launcher
# that serializes its writes (scripts/moto-server-serialized.py says why).
#
# Idempotent: an existing, working venv is left alone. Prints the path of the launcher
# (`moto_server_serialized`, same arguments as `moto_server`) on stdout; export it as
# FOLIO_MOTO_SERVER for `cargo test`.
#
#   FOLIO_MOTO_SERVER="$(scripts/install-moto.sh)" cargo test -p blob-store
#
# Env: FOLIO_MOTO_VENV overrides the venv location (default ~/.cache/folio/moto-venv).
set -euo pipefail

venv="${FOLIO_MOTO_VENV:-${HOME:-/root}/.cache/folio/moto-venv}"
bash "$(dirname "$0")/install-python-tool.sh" "$venv" "moto[server]>=5,<6" "moto.server, flask" moto_server >/dev/null
launcher="$venv/bin/moto_server_serialized"
{
    echo "#!$venv/bin/python"
    cat "$(dirname "$0")/moto-server-serialized.py"
} >"$launcher.tmp"
chmod +x "$launcher.tmp"
mv "$launcher.tmp" "$launcher"
echo "$launcher"
