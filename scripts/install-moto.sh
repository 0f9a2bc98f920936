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
exec bash "$(dirname "$0")/install-python-tool.sh" "$venv" "moto[server]>=5,<6" "moto.server, flask" moto_server
