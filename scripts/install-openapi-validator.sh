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
exec bash "$(dirname "$0")/install-python-tool.sh" "$venv" "openapi-spec-validator>=0.7,<0.8" "openapi_spec_validator" openapi-spec-validator
