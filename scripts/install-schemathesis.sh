#!/usr/bin/env bash
# Installs schemathesis (a property-based fuzzer of OpenAPI documents, PyPI) into a
# virtualenv for the api crate's schema fuzzing test (bins/api/tests/it/schemathesis.rs).
#
# Idempotent: an existing, working venv is left alone. Prints the path of the
# `schemathesis` binary on stdout; export it as FOLIO_SCHEMATHESIS for `cargo test` (the
# test also finds it at the default venv location; under CI it needs the variable).
#
#   FOLIO_SCHEMATHESIS="$(scripts/install-schemathesis.sh)" cargo test -p api --test it schemathesis
#
# The version is pinned exactly: a new release may add or change checks, and the test must
# give the same verdict on every run. Raise the pin on purpose, and rerun the test.
#
# Env: FOLIO_SCHEMATHESIS_VENV overrides the venv location
# (default ~/.cache/folio/schemathesis-4.32.5-venv: the version is in the name, so a new pin
# gets a fresh venv instead of reusing an old one).
set -euo pipefail

version="4.32.5"
venv="${FOLIO_SCHEMATHESIS_VENV:-${HOME:-/root}/.cache/folio/schemathesis-$version-venv}"
exec bash "$(dirname "$0")/install-python-tool.sh" "$venv" "schemathesis==$version" "schemathesis" schemathesis
