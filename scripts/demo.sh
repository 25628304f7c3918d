#!/usr/bin/env bash
# Builds quiesce and shows the job on a sample config and sample scripts in a
# root-owned scratch directory. Run as root on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/demo.sh: run as root (the trust checks require root-owned files)" >&2
    exit 2
fi
command -v cargo >/dev/null || { echo "scripts/demo.sh: cargo not found (install Rust with rustup)" >&2; exit 2; }

echo "== building quiesce (release)"
cargo build --release --quiet
q="$PWD/target/release/quiesce"

# Scratch directory: root-owned, 0700, not under world-writable /tmp.
demo=$(mktemp -d /run/quiesce-demo.XXXXXX)
cleanup() { rm -rf "$demo"; }
trap cleanup EXIT INT TERM
chmod 700 "$demo"
mkdir -m 700 "$demo/scripts"
install -m 700 packaging/examples/pre-script.sh "$demo/scripts/pre-script.sh"
install -m 700 packaging/examples/post-script.sh "$demo/scripts/post-script.sh"
sed -e "s#/etc/quiesce/scripts#$demo/scripts#" packaging/examples/VMSnapshotScriptPluginConfig.json > "$demo/config.json"
chmod 600 "$demo/config.json"
common=(--config "$demo/config.json" --host-config "$demo/no-plugin-host.conf")

echo
echo "== quiesce check (verifies config and scripts, runs nothing)"
"$q" "${common[@]}" check --json
echo "exit status: $?"

echo
echo "== the same check after a careless chmod 755 of the pre-script"
chmod 755 "$demo/scripts/pre-script.sh"
set +e
"$q" "${common[@]}" check
echo "exit status: $? (2: a snapshot would not be application-consistent)"
set -e
