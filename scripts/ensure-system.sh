#!/usr/bin/env bash
# Installs the system binaries connbench drives, when they are missing and we may.
set -u
need=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
if [ "${CONNBENCH_NO_CHROMIUM:-0}" != 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "connbench: missing ${need[*]}; not root, so not installing." >&2
  echo "  PgBouncer cells will be skipped (install with: sudo apt-get install pgbouncer)." >&2
  exit 0
fi
echo "connbench: installing ${need[*]} from Debian's packages..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || { echo "connbench: apt-get install ${need[*]} failed; PgBouncer cells will be skipped." >&2; exit 0; }
# Debian starts a system pgbouncer on 6432; connbench runs its own per cell, so stop that one.
if [[ " ${need[*]} " == *" pgbouncer "* ]]; then
  (service pgbouncer stop || systemctl stop pgbouncer) >/dev/null 2>&1 || true
fi
