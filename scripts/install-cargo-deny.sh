#!/usr/bin/env bash
# Installs cargo-deny (licenses, bans, sources and advisories of the dependency graph, as
# deny.toml says) from crates.io, pinned, when missing. `cargo xtask ci` runs it.
#
# Idempotent: an installed binary of the pinned version is left alone. Prints the path of the
# `cargo-deny` binary on stdout (the build's output goes to stderr).
#
#   "$(scripts/install-cargo-deny.sh)" deny check bans licenses sources
#
# The first install compiles for a minute or two. It builds in its own target directory
# (removed afterwards), not the workspace's, so it does not hold the workspace's build lock.
#
# Env: FOLIO_CARGO_DENY_ROOT overrides the install root (default ~/.cache/folio/cargo-deny).
set -euo pipefail

# 0.20.2 needs Rust 1.88 or newer.
version="0.20.2"
root="${FOLIO_CARGO_DENY_ROOT:-${HOME:-/root}/.cache/folio/cargo-deny}"
binary="$root/bin/cargo-deny"

if [[ -x "$binary" ]] && [[ "$("$binary" --version 2>/dev/null)" == "cargo-deny $version" ]]; then
    echo "$binary"
    exit 0
fi

mkdir -p "$root"
build="$(mktemp -d "${TMPDIR:-/tmp}/cargo-deny-build.XXXXXX")"
trap 'rm -rf "$build"' EXIT
# cargo-deny's own release profile is fat LTO with one codegen unit: over 3 minutes of both
# cores on a fresh CI machine, for a tool that checks a lock file in a second. These settings
# (configuration overrides the package's profile) build it in a fraction of that; unoptimized,
# its check of this workspace still takes about a second.
CARGO_TARGET_DIR="$build" \
    CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install cargo-deny --locked --version "$version" --root "$root" --force >&2
"$binary" --version >&2
echo "$binary"
