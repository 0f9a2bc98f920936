#!/usr/bin/env bash
# Installs the system tools of the deployment and many-host tests when they are missing:
# systemd-analyze (Debian's systemd package: the test of deploy/systemd's units), ip
# (iproute2: scripts/hosts.sh makes the test hosts) and runuser (util-linux: it runs the
# test hosts' Postgres as the postgres user). Idempotent. Needs root (or sudo) and apt-get.
set -euo pipefail

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "host tools present: $(systemd-analyze --version | head -n 1); $(ip -V)"
