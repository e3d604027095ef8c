#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks start for real:
# PostgreSQL and Redis servers. Idempotent and quiet when they are present.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package starts a cluster of its own; the tests start their own servers.
if command -v pg_lsclusters >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  service postgresql stop >/dev/null 2>&1 || true
fi
if [ "$(id -u)" -eq 0 ]; then service redis-server stop >/dev/null 2>&1 || true; fi
exit 0
