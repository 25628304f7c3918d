#!/bin/sh
# quiesce sample post-script for PostgreSQL: the pre-script paused nothing
# (it only ran CHECKPOINT), so there is nothing to resume; this checks that
# the server accepts connections and queries after the snapshot, and reports
# it. quiesce runs it whenever the pre-check passed, even after a failed
# pre-script or freeze, so it is safe to run at any time.
#
# Settings: as pre-script.sh (pg.env next to this script, or the file given
# as the first argument, postScriptParams ["/path/pg.env"]).
# Exit 0: the server answers. Non-zero: it does not (quiesce reports
# Post-ScriptExecutionFailed, the snapshot stands).
set -u
me="post-script (PostgreSQL)"

say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

# --- settings (same as pre-script.sh) -------------------------------------------
load_env() {
    envfile=${1:-}
    explicit=1
    if [ -z "$envfile" ]; then
        explicit=0
        envfile=$(dirname -- "$0")/pg.env
    fi
    if [ ! -e "$envfile" ]; then
        [ "$explicit" = 1 ] && die "settings file $envfile does not exist"
        say "no $envfile: using the defaults (Debian's socket directory and port)"
        return 0
    fi
    [ -L "$envfile" ] && die "settings file $envfile is a symbolic link; refusing to source it as root"
    [ -f "$envfile" ] || die "settings file $envfile is not a regular file"
    owner=$(stat -c %u -- "$envfile") || die "cannot stat $envfile"
    mode=$(stat -c %a -- "$envfile") || die "cannot stat $envfile"
    [ "$owner" = 0 ] || die "settings file $envfile is owned by uid $owner, not root; chown root:root it"
    [ $((0$mode & 022)) -eq 0 ] || die "settings file $envfile has mode $mode (group/world-writable); chmod 600 it"
    # shellcheck disable=SC1090
    . "$envfile" || die "cannot read $envfile"
}
load_env "${1:-}"
PGHOST=${PGHOST:-/var/run/postgresql}
PGPORT=${PGPORT:-5432}
PGDATABASE=${PGDATABASE:-postgres}
PGUSER=${PGUSER:-postgres}
PG_OS_USER=${PG_OS_USER:-postgres}
PG_CONNECT_TIMEOUT=${PG_CONNECT_TIMEOUT:-5}

command -v psql >/dev/null 2>&1 || die "psql not found in PATH ($PATH); install postgresql-client"

as_db_user() {
    if [ "$(id -un)" = "$PG_OS_USER" ]; then
        "$@"
    else
        runuser -u "$PG_OS_USER" -- "$@"
    fi
}
psql_do() {
    as_db_user env PGCONNECT_TIMEOUT="$PG_CONNECT_TIMEOUT" PGAPPNAME="quiesce-${QUIESCE_PHASE:-post}" \
        psql -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$PGDATABASE" "$@"
}

where="$PGHOST:$PGPORT (database $PGDATABASE, role $PGUSER)"
if ! out=$(psql_do -c "SET statement_timeout = '5s'" \
    -c "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END" 2>&1); then
    die "PostgreSQL at $where does not answer: $out"
fi
say "PostgreSQL at $where accepts connections ($out); nothing to resume"
exit 0
