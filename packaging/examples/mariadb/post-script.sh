#!/bin/sh
# quiesce sample post-script for MariaDB (and MySQL): releases the
# FLUSH TABLES WITH READ LOCK that pre-script.sh's holder session keeps
# (UNLOCK TABLES through the holder's FIFO, KILL CONNECTION if the holder does
# not answer), then checks that the server accepts writes again. quiesce
# terminates the holder process itself once this script has finished.
#
# quiesce runs this whenever the pre-check passed, even after a failed
# pre-script or freeze: with no holder recorded it only checks the server.
#
# Settings: as pre-script.sh (mariadb.env next to this script, or the file
# given as the first argument, postScriptParams ["/path/mariadb.env"]).
# Exit 0: no lock left and writes work. Non-zero: writes do not work, or the
# lock was lost before this script ran (the server closed the holder's
# session, so the snapshot may not have been taken under the lock).
set -u
me="post-script (MariaDB)"

say() { printf '%s: %s\n' "$me" "$*"; }
warn() { printf '%s: warning: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

# --- settings (same as pre-script.sh) -------------------------------------------
load_env() {
    envfile=${1:-}
    explicit=1
    if [ -z "$envfile" ]; then
        explicit=0
        envfile=$(dirname -- "$0")/mariadb.env
    fi
    if [ ! -e "$envfile" ]; then
        [ "$explicit" = 1 ] && die "settings file $envfile does not exist"
        say "no $envfile: using the defaults (Debian's socket, root by unix_socket)"
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
MARIADB_SOCKET=${MARIADB_SOCKET:-/run/mysqld/mysqld.sock}
MARIADB_USER=${MARIADB_USER:-root}
MARIADB_DEFAULTS_FILE=${MARIADB_DEFAULTS_FILE:-}
MARIADB_CLIENT=${MARIADB_CLIENT:-}
MARIADB_STATE_DIR=${MARIADB_STATE_DIR:-/run/quiesce-mariadb}
MARIADB_PROBE_TABLE=${MARIADB_PROBE_TABLE-quiesce.heartbeat}
if [ -z "$MARIADB_CLIENT" ]; then
    MARIADB_CLIENT=$(command -v mariadb || command -v mysql) ||
        die "neither mariadb nor mysql found in PATH ($PATH); install mariadb-client"
fi
db() {
    "$MARIADB_CLIENT" ${MARIADB_DEFAULTS_FILE:+"--defaults-extra-file=$MARIADB_DEFAULTS_FILE"} \
        --socket="$MARIADB_SOCKET" --user="$MARIADB_USER" --connect-timeout=5 \
        --batch --skip-column-names "$@"
}

state=$MARIADB_STATE_DIR
fifo=$state/holder.fifo
out=$state/holder.out
err=$state/holder.err
pidfile=$state/holder.pid
idfile=$state/holder.id

holder_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
        case $(readlink "/proc/$1/fd/0" 2>/dev/null) in "$fifo" | "$fifo (deleted)") true ;; *) false ;; esac
}

# --- release the lock -----------------------------------------------------------
lost=0
if [ -L "$state" ]; then
    die "$state is a symbolic link; refusing it"
elif [ -e "$pidfile" ]; then
    holder=$(cat "$pidfile" 2>/dev/null)
    session=$(cat "$idfile" 2>/dev/null)
    case $session in '' | *[!0-9]*) session= ;; esac
    released=0
    if holder_alive "$holder"; then
        # The holder answers with its own session id: a different id (or
        # none) means the session that held the lock is gone.
        printf '%s\n' "UNLOCK TABLES;" "SELECT CONCAT('holder-unlocked ', CONNECTION_ID());" 1<>"$fifo"
        tries=100
        while [ "$tries" -gt 0 ]; do
            if grep -q '^holder-unlocked ' "$out" 2>/dev/null; then
                if grep -qx "holder-unlocked $session" "$out"; then
                    released=1
                    say "UNLOCK TABLES done in session $session (holder pid $holder)"
                else
                    lost=1
                fi
                break
            fi
            holder_alive "$holder" || break
            sleep 0.1
            tries=$((tries - 1))
        done
        if [ "$released" = 0 ] && [ -n "$session" ] && holder_alive "$holder"; then
            # Alive but not answering: end its session from outside.
            if db -e "KILL CONNECTION $session" 2>/dev/null; then
                released=1
                say "holder pid $holder did not answer; its session $session was killed (KILL CONNECTION)"
            fi
        fi
    fi
    if [ "$released" = 0 ]; then
        lost=1
        warn "the lock holder (pid ${holder:-?}, session ${session:-?}) was gone before the post-script: $(tail -n 3 "$err" 2>/dev/null)"
    fi
    rm -f -- "$fifo" "$out" "$err" "$pidfile" "$idfile"
else
    say "no lock holder recorded in $state (the pre-script did not lock): nothing to release"
fi

# --- writes work again ----------------------------------------------------------
if [ -n "$MARIADB_PROBE_TABLE" ]; then
    case $MARIADB_PROBE_TABLE in
        *.*) probe_db=${MARIADB_PROBE_TABLE%%.*} probe_tbl=${MARIADB_PROBE_TABLE#*.} ;;
        *) die "MARIADB_PROBE_TABLE must be database.table, not '$MARIADB_PROBE_TABLE'" ;;
    esac
    if ! msg=$(db -e "SET SESSION lock_wait_timeout = 5;
        CREATE DATABASE IF NOT EXISTS \`$probe_db\`;
        CREATE TABLE IF NOT EXISTS \`$probe_db\`.\`$probe_tbl\` (id TINYINT UNSIGNED PRIMARY KEY, at DATETIME(6) NOT NULL) ENGINE=InnoDB;
        REPLACE INTO \`$probe_db\`.\`$probe_tbl\` (id, at) VALUES (1, NOW(6));" 2>&1); then
        die "MariaDB on $MARIADB_SOCKET does not accept writes (probe $MARIADB_PROBE_TABLE): $msg"
    fi
    say "MariaDB on $MARIADB_SOCKET accepts writes (probe $MARIADB_PROBE_TABLE)"
else
    if ! msg=$(db -e 'SELECT 1' 2>&1); then
        die "MariaDB on $MARIADB_SOCKET does not answer: $msg"
    fi
    say "MariaDB on $MARIADB_SOCKET answers (write probe disabled)"
fi
if [ "$lost" = 1 ]; then
    die "the read lock was lost before the post phase (see the warning above): the snapshot may not have been taken under the lock; check MARIADB_MAX_HOLD and the server's error log"
fi
exit 0
