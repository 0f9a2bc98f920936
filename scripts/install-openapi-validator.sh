#!/usr/bin/env bash
# Installs openapi-spec-validator (a real OpenAPI 3.0/3.1 validator, PyPI) into a
# virtualenv for the api crate's OpenAPI test.
#
# Idempotent: an existing, working venv is left alone. Prints the path of the
# `openapi-spec-validator` binary on stdout; export it as FOLIO_OPENAPI_VALIDATOR for
# `cargo test` (the test also finds it at the default venv location).
#
#   FOLIO_OPENAPI_VALIDATOR="$(scripts/install-openapi-validator.sh)" cargo test -p api
#
# Env: FOLIO_OPENAPI_VALIDATOR_VENV overrides the venv location
# (default ~/.cache/folio/openapi-validator-venv).
set -euo pipefail

venv="${FOLIO_OPENAPI_VALIDATOR_VENV:-${HOME:-/root}/.cache/folio/openapi-validator-venv}"
validator="$venv/bin/openapi-spec-validator"

if [[ -x "$validator" ]] && "$venv/bin/python" -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    echo "$validator"
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-openapi-validator.sh: $python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator>=0.7,<0.8" >&2
"$venv/bin/python" -c 'import openapi_spec_validator' >&2
echo "$validator"
