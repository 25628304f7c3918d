#!/bin/sh
# quiesce sample pre-script for MariaDB (and MySQL): takes
# FLUSH TABLES WITH READ LOCK in a session that stays open across the freeze
# and the snapshot — a "holder" — and exits 0 once the lock is held.
#
# FLUSH TABLES WITH READ LOCK closes and flushes every table (MyISAM/Aria,
# including the system tables) and blocks every write and commit until the
# session releases it; InnoDB's redo log makes the rest crash-safe. The lock
# lives only as long as its session, so the session must outlive this
# script: it is a `mariadb` client started in the background that reads its
# statements from a FIFO. quiesce records it as the pre-script's holder and
# terminates it once the post phase is over (also when the post phase is a
# later `quiesce post`); post-script.sh releases the lock first
# (UNLOCK TABLES through the FIFO) and checks that writes work again.
#
# Safety nets, should everything else fail: the holder's session has
# lock_wait_timeout = MARIADB_LOCK_WAIT_TIMEOUT (a FLUSH that cannot get the
# lock gives up instead of blocking writers for long), and wait_timeout =
# MARIADB_MAX_HOLD, so the server itself closes the session, releasing the
# lock, after that many idle seconds. A holder left by an earlier run (a
# runner killed with SIGKILL) is released when this script next runs.
#
# Install (as root): this file and post-script.sh as
# /etc/quiesce/mariadb/{pre,post}-script.sh, owner root, mode 0700;
# mariadb.env next to them, owner root, mode 0600;
# VMSnapshotScriptPluginConfig.json as /etc/azure/VMSnapshotScriptPluginConfig.json,
# owner root, mode 0600.
#
# Settings: mariadb.env in this script's directory (found through $0), or the
# file given as the first argument (preScriptParams ["/path/mariadb.env"];
# needed when the script is pinned with preScriptSha256, because $0 is then
# /dev/fd/N). It is sourced by /bin/sh as root: it must be owned by root and
# not group/world-writable, or the script refuses it.
#
# quiesce runs this as root in its sandbox with only PATH, LANG, HOME and
# QUIESCE_* in the environment, cwd /, stdin /dev/null. Exit 0: the lock is
# held. Non-zero: it is not (nothing is left locked); quiesce then decides by
# continueBackupOnFailure. Safe to run any number of times.
set -u
me="pre-script (MariaDB)"

say() { printf '%s: %s\n' "$me" "$*"; }
warn() { printf '%s: warning: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

# --- settings -----------------------------------------------------------------
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
MARIADB_LOCK_WAIT_TIMEOUT=${MARIADB_LOCK_WAIT_TIMEOUT:-10}
MARIADB_MAX_HOLD=${MARIADB_MAX_HOLD:-600}
for v in "LOCK_WAIT_TIMEOUT=$MARIADB_LOCK_WAIT_TIMEOUT" "MAX_HOLD=$MARIADB_MAX_HOLD"; do
    case ${v#*=} in '' | *[!0-9]* | 0) die "MARIADB_${v%%=*} must be a whole number of seconds >= 1, not '${v#*=}'" ;; esac
done
if [ -z "$MARIADB_CLIENT" ]; then
    MARIADB_CLIENT=$(command -v mariadb || command -v mysql) ||
        die "neither mariadb nor mysql found in PATH ($PATH); install mariadb-client"
fi

# The client with the connection settings; --defaults-extra-file must come first.
db() {
    "$MARIADB_CLIENT" ${MARIADB_DEFAULTS_FILE:+"--defaults-extra-file=$MARIADB_DEFAULTS_FILE"} \
        --socket="$MARIADB_SOCKET" --user="$MARIADB_USER" --connect-timeout=5 \
        --batch --skip-column-names "$@"
}
# The holder: the same client, replacing the calling (sub)shell so that its
# pid is the client's; no reconnect, so a lost session is never replaced by a
# fresh one that holds no lock; output flushed after each statement.
exec_holder() {
    exec "$MARIADB_CLIENT" ${MARIADB_DEFAULTS_FILE:+"--defaults-extra-file=$MARIADB_DEFAULTS_FILE"} \
        --socket="$MARIADB_SOCKET" --user="$MARIADB_USER" --connect-timeout=5 \
        --batch --skip-column-names --skip-reconnect --unbuffered
}

# --- the state directory: the holder's FIFO, output and pid, never on a
# frozen filesystem (the default is on /run, a tmpfs) ----------------------------
state=$MARIADB_STATE_DIR
fifo=$state/holder.fifo
out=$state/holder.out
err=$state/holder.err
pidfile=$state/holder.pid
idfile=$state/holder.id
prepare_state_dir() {
    (umask 077 && mkdir -p -- "$state") || die "cannot create $state"
    [ -L "$state" ] && die "$state is a symbolic link; refusing it"
    [ -d "$state" ] || die "$state is not a directory"
    [ "$(stat -c %u -- "$state")" = 0 ] || die "$state is not owned by root"
    chmod 700 -- "$state" || die "cannot chmod 700 $state"
}

# Whether $1 is a live holder: a process whose stdin is our FIFO (so a
# recycled pid is never taken for it).
holder_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
        case $(readlink "/proc/$1/fd/0" 2>/dev/null) in "$fifo" | "$fifo (deleted)") true ;; *) false ;; esac
}

# Waits until the holder printed a line starting with $1, at most $2 seconds;
# fails early if the holder is gone.
wait_for() {
    tries=$(($2 * 10))
    # The whole line: the client may be caught between writing the text
    # and the session id after it.
    while [ "$tries" -gt 0 ]; do
        grep -q "^$1[0-9]" "$out" 2>/dev/null && return 0
        holder_alive "$holder" || { grep -q "^$1[0-9]" "$out" 2>/dev/null; return; }
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

# Releases a holder recorded by an earlier run that was never released (its
# post phase did not run). Its session is closed by the server once the
# client is gone.
release_stale() {
    [ -e "$pidfile" ] || return 0
    old=$(cat "$pidfile" 2>/dev/null)
    old_id=$(cat "$idfile" 2>/dev/null)
    if holder_alive "$old"; then
        warn "a holder from an earlier run (pid $old, session ${old_id:-?}) still holds the lock: releasing it"
        printf 'UNLOCK TABLES;\n' 1<>"$fifo"
        case $old_id in '' | *[!0-9]*) ;; *) db -e "KILL CONNECTION $old_id" 2>/dev/null ;; esac
        kill -TERM "$old" 2>/dev/null
    fi
    rm -f -- "$fifo" "$out" "$err" "$pidfile" "$idfile"
}

holder=
session=
# Undoes a half-taken lock: nothing may stay locked when this script fails.
abandon() {
    case $session in '' | *[!0-9]*) ;; *) db -e "KILL CONNECTION $session" >/dev/null 2>&1 ;; esac
    [ -n "$holder" ] && kill -TERM "$holder" 2>/dev/null
    rm -f -- "$fifo" "$pidfile" "$idfile"
}
trap 'abandon; exit 143' TERM
trap 'abandon; exit 130' INT

prepare_state_dir
release_stale

if ! probe=$(db -e 'SELECT 1' 2>&1); then
    die "cannot connect to MariaDB on $MARIADB_SOCKET as $MARIADB_USER: $probe"
fi

# Leave quiesce time to see the result: wait at most the phase's remaining
# time less 2 s, and no longer than the lock wait plus 5 s.
left=${QUIESCE_DEADLINE_SECONDS:-30}
case $left in '' | *[!0-9]*) left=30 ;; esac
budget=$((left > 3 ? left - 2 : 1))
[ "$budget" -gt $((MARIADB_LOCK_WAIT_TIMEOUT + 5)) ] && budget=$((MARIADB_LOCK_WAIT_TIMEOUT + 5))

rm -f -- "$fifo"
mkfifo -m 600 -- "$fifo" || die "cannot create the FIFO $fifo"
{ : >"$out" && : >"$err"; } || die "cannot write to $state"
# Opened read-write: never blocks, and the holder, which gets this very
# descriptor as its stdin, never sees end-of-file while it lives.
exec 3<>"$fifo"
exec_holder <&3 >"$out" 2>"$err" 3>&- &
holder=$!
printf '%s\n' \
    "SET SESSION lock_wait_timeout = $MARIADB_LOCK_WAIT_TIMEOUT;" \
    "SET SESSION wait_timeout = $MARIADB_MAX_HOLD;" \
    "SELECT CONCAT('holder-session ', CONNECTION_ID());" \
    "FLUSH TABLES WITH READ LOCK;" \
    "SELECT CONCAT('holder-locked ', CONNECTION_ID());" >&3
exec 3>&-

start=$(date +%s%N)
wait_for 'holder-session ' 5 && session=$(sed -n 's/^holder-session //p' "$out" | head -n 1)
if ! wait_for 'holder-locked ' "$budget"; then
    why=$(cat "$err" 2>/dev/null)
    abandon
    if [ -z "$session" ]; then
        die "the holder session could not start on $MARIADB_SOCKET: ${why:-no error output}"
    fi
    die "could not take FLUSH TABLES WITH READ LOCK in session $session (lock_wait_timeout ${MARIADB_LOCK_WAIT_TIMEOUT}s, waited at most ${budget}s; a long-running statement may be holding tables); nothing is left locked: ${why:-no answer}"
fi
end=$(date +%s%N)
# Read again now that the lock's line is there: the session's line, written
# before it, is whole.
session=$(sed -n 's/^holder-locked //p' "$out" | head -n 1)
if ! { printf '%s\n' "$holder" >"$pidfile" && printf '%s\n' "$session" >"$idfile"; }; then
    abandon
    die "cannot record the holder in $state"
fi
say "FLUSH TABLES WITH READ LOCK held by session $session (holder pid $holder) after $(((end - start) / 1000000)) ms; writes are blocked until the post-script"
exit 0
