#!/usr/bin/env bash
# Builds quiesce and runs the whole job on scratch filesystems with sample
# scripts: check, then snapshot (pre-script, freeze, a snapshot command that
# copies a filesystem image, thaw, post-script), the status JSON, a verified
# copy, the audit trail, two applications of an apps directory, and a run
# that degrades. Run as root on Debian.
#
# It never freezes / or the work tree's filesystem: it makes two scratch
# filesystems on loop devices under /run and passes them with --mount. A
# trap thaws and unmounts them whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/scratchfs.sh
. scripts/lib/scratchfs.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/demo.sh: run as root (freezing needs CAP_SYS_ADMIN; the trust checks need root-owned files)" >&2
    exit 2
fi
command -v cargo >/dev/null || { echo "scripts/demo.sh: cargo not found (install Rust with rustup)" >&2; exit 2; }
for tool in mkfs.ext4 mount fsfreeze; do
    command -v "$tool" >/dev/null || { echo "scripts/demo.sh: $tool not found (apt-get install e2fsprogs util-linux)" >&2; exit 2; }
done

echo "== building quiesce (release)"
cargo build --release --quiet
q="$PWD/target/release/quiesce"

# Scratch directory: root-owned, 0700, on tmpfs, not under world-writable /tmp.
demo=$(mktemp -d /run/quiesce-demo.XXXXXX)
chmod 700 "$demo"
syslogd_pid=""
journal_ns_pid=""
journald_pid=""
cleanup() {
    set +e
    scratch_release_all   # thaw, then unmount, then detach
    [ -n "$syslogd_pid" ] && kill "$syslogd_pid" 2>/dev/null
    [ -n "$journald_pid" ] && kill "$journald_pid" 2>/dev/null
    [ -n "$journal_ns_pid" ] && kill "$journal_ns_pid" 2>/dev/null
    rm -rf "$demo"
}
trap cleanup EXIT INT TERM

echo "== two scratch filesystems on loop devices"
for name in data logs; do
    scratch_mount "$demo/$name.img" "$demo/$name" ext4 64M
done
# An "application" that keeps writing while it is not paused.
seq 1 20000 > "$demo/data/table.csv"

echo "== sample config and scripts (packaging/examples), root-owned, 0600/0700"
mkdir -m 700 "$demo/scripts"
install -m 700 packaging/examples/pre-script.sh "$demo/scripts/pre-script.sh"
install -m 700 packaging/examples/post-script.sh "$demo/scripts/post-script.sh"
sed -e "s#/etc/quiesce/scripts#$demo/scripts#" packaging/examples/VMSnapshotScriptPluginConfig.json > "$demo/config.json"
chmod 600 "$demo/config.json"

# A private syslog daemon, so the audit trail can be shown (RFC 5424).
socket="$demo/no-syslog.sock"
if command -v rsyslogd >/dev/null; then
    mkdir -m 700 "$demo/rsyslog"
    socket="$demo/rsyslog/log.sock"
    cat > "$demo/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$demo/rsyslog")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$socket" ruleset="q" useSpecialParser="off" parseHostname="on" ignoreTimestamp="off")
ruleset(name="q") { action(type="omfile" file="$demo/rsyslog/trail.log" template="RSYSLOG_SyslogProtocol23Format") }
EOF
    rsyslogd -n -f "$demo/rsyslog/rsyslog.conf" -i "$demo/rsyslog/pid" &
    syslogd_pid=$!
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
else
    echo "   (rsyslogd not installed: the audit trail is reported as undelivered)"
fi
# A private journald, the way tests/journal.rs runs it: in its own mount
# namespace with a tmpfs over /run (and /var/log/journal), so the host's
# journal, if any, is untouched. quiesce reaches its socket, and journalctl
# its files, through /proc/PID/root.
journal=(--trail syslog)
journald=/lib/systemd/systemd-journald
if [ -x "$journald" ] && command -v unshare >/dev/null && command -v journalctl >/dev/null; then
    # shellcheck disable=SC2016  # $0 expands in the inner shell
    unshare -m --propagation private sh -c \
        'mount -t tmpfs -o mode=0755 tmpfs /run &&
         { [ ! -d /var/log/journal ] || mount -t tmpfs tmpfs /var/log/journal; } &&
         { "$0" & echo $! > /run/demo-journald.pid; exec sleep 2147483647; }' "$journald" \
        </dev/null >/dev/null 2>&1 &
    journal_ns_pid=$!
    jroot="/proc/$journal_ns_pid/root"
    for _ in $(seq 100); do [ -S "$jroot/run/systemd/journal/socket" ] && break; sleep 0.1; done
    journald_pid=$(cat "$jroot/run/demo-journald.pid" 2>/dev/null || true)
    if [ -S "$jroot/run/systemd/journal/socket" ]; then
        journal=(--trail both --journal-socket "$jroot/run/systemd/journal/socket")
    fi
else
    echo "   (systemd-journald not installed: the trail goes to syslog only; apt-get install systemd)"
fi
mkdir -m 755 "$demo/metrics"
runner=(--host-config "$demo/no-plugin-host.conf"
        --run-dir "$demo/run" --syslog-socket "$socket" "${journal[@]}"
        --state-dir "$demo/state" --metrics-dir "$demo/metrics")
common=(--config "$demo/config.json" "${runner[@]}")
window=(--mount "$demo/data" --mount "$demo/logs")

echo
echo "== quiesce check: verifies config and scripts, lists the mounts; runs nothing"
"$q" "${common[@]}" check "${window[@]}"

echo
echo "== quiesce snapshot: pre-script, freeze, copy the data image, thaw, post-script"
set +e
"$q" "${common[@]}" snapshot --json "${window[@]}" \
    -- cp --sparse=always "$demo/data.img" "$demo/data-snapshot.img" > "$demo/status.json"
rc=$?
set -e
# The status, without the per-attempt capability lists (quiesce audit shows them).
python3 - "$demo/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for phase in ("pre", "post"):
    for a in s.get("phases", {}).get(phase, {}).get("attempts", []):
        a.pop("sandbox", None)
print(json.dumps(s, indent=2))
PY
echo "exit status: $rc (0: application-consistent)"

echo
echo "== the copy is a clean filesystem (taken while frozen)"
fsck.ext4 -n -f "$demo/data-snapshot.img" | tail -1
echo "== and the live filesystems are writable again"
date > "$demo/data/written-after-thaw" && echo "   wrote $demo/data/written-after-thaw"

if [ -n "$syslogd_pid" ]; then
    sleep 0.3
    echo
    echo "== the audit trail of that run (RFC 5424, facility authpriv)"
    op=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["operationId"])' "$demo/status.json")
    grep -F "op=\"$op\"" "$demo/rsyslog/trail.log" | grep -v ' script-output ' | cut -c1-230
fi

if [ -n "$journal_ns_pid" ] && [ "${journal[1]}" = both ]; then
    sleep 0.3
    echo
    echo "== the same run in the journal: native entries, one field per parameter"
    op=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["operationId"])' "$demo/status.json")
    journalctl -D "$jroot/run/log/journal" -o json --all "QUIESCE_OP=$op" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    extra = " ".join(f"{k}={e[k]}" for k in sorted(e)
                     if k.startswith("QUIESCE_") and k not in ("QUIESCE_OP", "QUIESCE_PHASE", "QUIESCE_TIME", "QUIESCE_APP"))
    msg = e["MESSAGE"] if isinstance(e["MESSAGE"], str) else "[binary]"
    first = msg.splitlines()[0] if msg else ""
    mid, kind, phase = e["MESSAGE_ID"][:8], e["SYSLOG_MSGID"], e["QUIESCE_PHASE"]
    line = f"{mid} {kind:<17} {phase:<9} {first} | {extra}"
    print(line[:230])
'
    echo "   (journalctl -x explains each MESSAGE_ID with the installed /usr/lib/systemd/catalog/quiesce.catalog)"
fi

echo
echo "== after the run: its status kept as last-snapshot.json, and the node-exporter textfile"
ls -l "$demo/state/last-snapshot.json"
grep -v '^#' "$demo/metrics/quiesce.prom" | grep 'operation="snapshot"' | head -20

echo
echo "== several applications: an apps directory with two (packaging/examples/apps.d)"
# The sample app twice, each with its own scripts; pre-scripts run in
# lexical order, post-scripts in reverse.
mkdir -m 755 "$demo/apps.d"
mkdir -m 700 "$demo/cache-scripts"
install -m 700 packaging/examples/pre-script.sh packaging/examples/post-script.sh "$demo/cache-scripts/"
sed -e "s#/etc/quiesce/app/#$demo/scripts/#" packaging/examples/apps.d/10-app.json > "$demo/apps.d/10-app.json"
sed -e "s#/etc/quiesce/app/#$demo/cache-scripts/#" packaging/examples/apps.d/10-app.json > "$demo/apps.d/20-cache.json"
cp "$demo/apps.d/20-cache.json" "$demo/apps.d/20-cache.json.dpkg-old"
chmod 600 "$demo"/apps.d/*
apps=(--apps-dir "$demo/apps.d" "${runner[@]}")
"$q" "${apps[@]}" check "${window[@]}" 2>&1 | sed -n '/applications (2)/,/a snapshot would be/p' | grep -v '^quiesce: mount '
set +e
"$q" "${apps[@]}" snapshot --json "${window[@]}" -- true > "$demo/apps-status.json" 2> "$demo/apps-stderr"
rc=$?
set -e
grep -E 'application [0-9] of|script (ok|exited)|thawed' "$demo/apps-stderr" | head -20
python3 - "$demo/apps-status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"result {s['result']}, consistency {s.get('consistency')}")
for a in s["applications"]:
    pre = a.get("pre", {}).get("attempts", [{}])[0].get("exitCode")
    post = a.get("post", {}).get("attempts", [{}])[0].get("exitCode")
    print(f"   {a['name']:<10} {a['config']}: pre exit {pre}, post exit {post}")
PY
echo "exit status: $rc"

echo
echo "== a careless chmod 755 of the pre-script: the run degrades, it does not break"
chmod 755 "$demo/scripts/pre-script.sh"
set +e
"$q" "${common[@]}" snapshot "${window[@]}" -- true
rc=$?
set -e
echo "exit status: $rc (1: only filesystem-consistent, as continueBackupOnFailure allows)"
