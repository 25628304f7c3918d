#!/usr/bin/env bash
# Installs what tests/databases.rs needs: PostgreSQL (server, client, contrib
# for amcheck) and MariaDB (server, client) from Debian's packages. Run as
# root; idempotent, and fast when everything is already there.
#
# The tests never use the distro's own clusters or services: they run their
# own server instances (initdb/pg_ctl, mariadb-install-db/mariadbd) on scratch
# loop-mounted filesystems, with their own ports and sockets. So the packages'
# install scripts are kept from starting the default services (policy-rc.d),
# and nothing here starts or needs them. A default service that an operator
# runs already is left alone.
#
# Prints, as its last line, `QUIESCE_DB_TESTS=1` when both databases are
# usable; callers (scripts/test.sh) export that so the tests fail, instead of
# skipping, when a database is missing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/databases.sh: run as root" >&2
    exit 2
fi

packages=(postgresql postgresql-contrib postgresql-client mariadb-server mariadb-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/databases.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting the default
    # services (exit 101: "action forbidden by policy"). Only when no policy
    # is in place already, and removed again on every path.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/databases.sh: no service starts during the install\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
    trap cleanup EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    cleanup
    own_policy=0
fi

# What the tests call, checked so that a broken install fails here, clearly.
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
problems=()
for t in initdb pg_ctl postgres; do
    [ -n "$pgbin" ] && [ -x "$pgbin/$t" ] || problems+=("PostgreSQL $t (in /usr/lib/postgresql/*/bin)")
done
command -v psql >/dev/null || problems+=("psql")
[ -n "$pgbin" ] && ls "$(dirname "$pgbin")"/lib/amcheck.so >/dev/null 2>&1 || problems+=("PostgreSQL amcheck extension (postgresql-contrib)")
for t in mariadbd mariadb-install-db mariadb mariadb-admin; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || problems+=("MariaDB $t")
done
for t in runuser setpriv; do
    command -v "$t" >/dev/null || problems+=("$t (util-linux)")
done
id postgres >/dev/null 2>&1 || problems+=("the postgres user")
if [ ${#problems[@]} -gt 0 ]; then
    echo "scripts/databases.sh: missing after install: ${problems[*]}" >&2
    exit 1
fi
echo "scripts/databases.sh: PostgreSQL $("$pgbin/postgres" --version | sed -n 's/^postgres (PostgreSQL) \([^ ]*\).*/\1/p'), MariaDB $(mariadbd --version 2>/dev/null | sed -n 's/.*Ver \([^ ]*\).*/\1/p') ready (the tests run their own instances)" >&2
echo "QUIESCE_DB_TESTS=1"
