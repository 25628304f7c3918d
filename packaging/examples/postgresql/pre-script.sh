#!/bin/sh
# quiesce sample pre-script for PostgreSQL: runs CHECKPOINT before the
# filesystems are frozen.
#
# PostgreSQL needs no lock held across the freeze: every committed
# transaction is in the WAL, a frozen filesystem is a consistent image of the
# disk, and a server started on the snapshot replays the WAL like after a
# power cut. The CHECKPOINT writes the dirty buffers first, so that replay is
# short and the snapshot holds clean data files.
#
# Install (as root): this file and post-script.sh as
# /etc/quiesce/postgresql/{pre,post}-script.sh, owner root, mode 0700;
# pg.env next to them, owner root, mode 0600; VMSnapshotScriptPluginConfig.json
# as /etc/azure/VMSnapshotScriptPluginConfig.json, owner root, mode 0600.
#
# Settings: pg.env in this script's directory (found through $0), or the file
# given as the first argument (preScriptParams ["/path/pg.env"]; needed when
# the script is pinned with preScriptSha256, because $0 is then /dev/fd/N).
# pg.env is sourced by /bin/sh as root: it must be owned by root and not
# group/world-writable, or the script refuses it.
#
# quiesce runs this as root in its sandbox (no_new_privs; runuser needs no
# new privileges to switch from root to the database's OS user) with only
# PATH, LANG, HOME and QUIESCE_* in the environment, cwd /, stdin /dev/null.
# Exit 0: checkpoint done. Non-zero: it was not; quiesce then decides by
# continueBackupOnFailure. Safe to run any number of times.
set -u
me="pre-script (PostgreSQL)"

say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

# --- settings -----------------------------------------------------------------
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

# Runs psql as the database's OS user (peer authentication on the socket).
as_db_user() {
    if [ "$(id -un)" = "$PG_OS_USER" ]; then
        "$@"
    else
        runuser -u "$PG_OS_USER" -- "$@"
    fi
}
psql_do() {
    as_db_user env PGCONNECT_TIMEOUT="$PG_CONNECT_TIMEOUT" PGAPPNAME="quiesce-${QUIESCE_PHASE:-pre}" \
        psql -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$PGDATABASE" "$@"
}

# --- CHECKPOINT ---------------------------------------------------------------
# Leave time for quiesce to see the result: the statement may use the phase's
# remaining time less 2 s (at least 1 s).
left=${QUIESCE_DEADLINE_SECONDS:-30}
case $left in '' | *[!0-9]*) left=30 ;; esac
budget=$((left > 3 ? left - 2 : 1))

where="$PGHOST:$PGPORT (database $PGDATABASE, role $PGUSER)"
say "CHECKPOINT on $where, at most ${budget}s"
start=$(date +%s%N)
if ! out=$(psql_do -c "SET statement_timeout = '${budget}s'" -c 'CHECKPOINT' 2>&1); then
    die "CHECKPOINT on $where failed: $out"
fi
end=$(date +%s%N)
say "CHECKPOINT done in $(((end - start) / 1000000)) ms; ready for the freeze"
exit 0
