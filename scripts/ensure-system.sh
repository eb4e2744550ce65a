#!/usr/bin/env bash
# Installs the system binaries connbench drives, when they are missing and we may.
# One apt-get per need: a package missing from this distribution never costs the others.
set -u
install() {  # install <what it enables, for the message> <package...>
  local why=$1; shift
  if [ "$(id -u)" -ne 0 ]; then
    echo "connbench: missing $*; not root, so not installing: $why (install with: sudo apt-get install $*)." >&2
    return 1
  fi
  echo "connbench: installing $* from Debian's packages..."
  [ -n "${updated:-}" ] || { apt-get update -qq >/dev/null; updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { echo "connbench: apt-get install $* failed: $why" >&2; return 1; }
}

if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if install "PgBouncer cells will be skipped" pgbouncer; then
    # Debian starts a system pgbouncer on 6432; connbench runs its own per cell, so stop that one.
    (service pgbouncer stop || systemctl stop pgbouncer) >/dev/null 2>&1 || true
  fi
fi

# server = "system": the distribution's PostgreSQL, built with OpenSSL (the embedded wheel's is not).
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  if install 'server = "system" cells (tls = true) will be skipped' postgresql; then
    # Debian creates and starts a cluster on 5432; connbench runs its own per server setting.
    for v in /usr/lib/postgresql/*; do
      pg_ctlcluster "$(basename "$v")" main stop >/dev/null 2>&1 || true
    done
  fi
fi

if [ "${CONNBENCH_NO_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  install "the report's browser test will be skipped" chromium || true
fi
exit 0
