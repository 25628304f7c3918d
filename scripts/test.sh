#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine and runs the whole
# suite: formatting, lints, doc links, unit and integration tests. Run as
# root: the trust checks are about uid 0 ownership, and the freeze tests
# create loop-mounted scratch filesystems. It never freezes / or the work
# tree's filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/scratchfs.sh
. scripts/lib/scratchfs.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: run as root (root-only tests would be skipped)" >&2
    exit 2
fi

# --- what the tests need -------------------------------------------------------
# e2fsprogs/xfsprogs/btrfs-progs: scratch filesystems; util-linux: losetup,
# fsfreeze, mount; procps: ps/pkill used by fixtures; rsyslog: the audit-trail
# receiver; systemd: journald and journalctl for the journal tests (run in a
# private mount namespace, not as the host's logger) and systemd-analyze
# verify of quiesce-recover.service; python3: lock-holder fixtures.
# lintian/rpm/man-db/groff-base/binutils: the package tests. strace:
# scripts/bench.sh counts the system calls of one `pre` with it.
# rsyslog-gnutls, openssl and the libraries syslog-ng-core depends on (it
# conflicts with rsyslog, so it is unpacked below, not installed; its
# Depends: are these): tests/forward.rs runs the shipped forwarding drop-ins
# in the real daemons, over TLS with certificates made by openssl.
# qemu-guest-agent: tests/hooks.rs runs qemu-ga on a unix socket of its own
# (never the virtio port) and has it freeze a scratch filesystem through
# quiesce's hook.
# python3-grpcio, python3-grpc-tools, python3-protobuf, iproute2: tests/gce_agent.rs
# runs Google's guest agent (unpacked below, never installed) in a private
# network namespace against a gRPC stand-in for Google's snapshot service.
# etcd-server, etcd-client: tests/groups.rs runs a three-node etcd cluster
# on loopback ports, with TLS and client certificates made by openssl;
# iproute2 (below) also puts a group member in a network namespace of its
# own, cut off.
packages=(etcd-server etcd-client e2fsprogs xfsprogs btrfs-progs util-linux procps rsyslog systemd python3 psmisc strace
          lintian rpm man-db groff-base binutils gzip
          rsyslog-gnutls openssl libcap2 libglib2.0-0 libivykis0 libjson-c5 libnet1
          libpcre3 libssl3 libsystemd0 libwrap0 qemu-guest-agent
          python3-grpcio python3-grpc-tools python3-protobuf iproute2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo not found (install Rust with rustup)" >&2; exit 2; }

# unpack_into PACKAGE DIR: Debian's PACKAGE, fetched and unpacked into DIR
# (never installed: nothing runs from it but the tests).
unpack_into() {
    local fetch
    echo "scripts/test.sh: unpacking $1 into $2"
    fetch=$(mktemp -d)
    chmod 755 "$fetch"   # apt-get download runs as _apt where it can
    (cd "$fetch" && apt-get download -q "$1" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download -q "$1" >/dev/null; })
    rm -rf "$2"
    # A fresh clone has no target/ yet: dpkg-deb makes only the last level.
    mkdir -p "$2"
    dpkg-deb -x "$fetch"/"$1"_*.deb "$2"
    rm -rf "$fetch"
}

# --- syslog-ng for tests/forward.rs --------------------------------------------
# Debian's syslog-ng-core conflicts with rsyslog, so the package is fetched
# and unpacked into target/syslog-ng (never installed, nothing runs from it
# but the tests). A binary that cannot find a library fails here, not in the
# test.
syslog_ng_root="$PWD/target/syslog-ng"
[ -x "$syslog_ng_root/usr/sbin/syslog-ng" ] || unpack_into syslog-ng-core "$syslog_ng_root"
if LD_LIBRARY_PATH="$syslog_ng_root/usr/lib/syslog-ng" ldd "$syslog_ng_root/usr/sbin/syslog-ng" | grep -q "not found"; then
    echo "scripts/test.sh: syslog-ng lacks libraries:" >&2
    LD_LIBRARY_PATH="$syslog_ng_root/usr/lib/syslog-ng" ldd "$syslog_ng_root/usr/sbin/syslog-ng" | grep "not found" >&2
    exit 2
fi
export QUIESCE_SYSLOG_NG_ROOT="$syslog_ng_root"
# The forwarding tests fail, instead of skipping, when a daemon is missing.
export QUIESCE_FORWARD_TESTS=1

# --- google-guest-agent for tests/gce_agent.rs ---------------------------------
# Installing it would start its services (accounts, network, clock, scripts)
# on this machine, so it is unpacked into target/google-guest-agent and run
# only by the test, in namespaces of its own.
gce_agent_root="$PWD/target/google-guest-agent"
[ -x "$gce_agent_root/usr/bin/google_guest_agent" ] || unpack_into google-guest-agent "$gce_agent_root"
export QUIESCE_GCE_AGENT_ROOT="$gce_agent_root"
# The real-agent tests fail, instead of skipping, when something is missing.
export QUIESCE_GCE_AGENT_TESTS=1

# --- safety net: whatever happens, no scratch filesystem stays frozen ----------
# Tests mount their scratch filesystems under /run/quiesce-* (tests, sandbox
# tests, benchmarks); each test thaws and unmounts its own, this trap is the
# second line. Deepest mounts first; thaw before unmount.
cleanup() {
    scratch_release_under /run/quiesce-
}
trap cleanup EXIT INT TERM

# --- the suite -----------------------------------------------------------------
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --all-features --quiet -- -D warnings
echo "== cargo doc (no broken intra-doc links)"
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links" cargo doc --no-deps --all-features --quiet
echo "== databases for the consistency tests (scripts/databases.sh)"
bash scripts/databases.sh
export QUIESCE_DB_TESTS=1
echo "== packages (scripts/package.sh: .deb and .rpm into target/packages)"
bash scripts/package.sh
export QUIESCE_PACKAGE_TESTS=1
echo "== cargo test"
# fault-injection: test-only fault points (a panic inside the freeze window
# must still exit 70 with everything thawed); never in the packages.
cargo test --all-targets --features fault-injection 2>&1
