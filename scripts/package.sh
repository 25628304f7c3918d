#!/usr/bin/env bash
# Builds the Debian package (cargo-deb) and the RPM (cargo-generate-rpm) into
# target/packages/:
#   target/packages/quiesce_<version>-1_<arch>.deb
#   target/packages/quiesce-<version>-1.<arch>.rpm
# What goes where, with which owner and mode, is in Cargo.toml
# ([package.metadata.deb] and [package.metadata.generate-rpm]); the man page
# and the bash completion are hand-written in packaging/. tests/package.rs
# checks the result (run it with QUIESCE_PACKAGE_TESTS=1).
#
# Needs: cargo (rustup), gzip, strip (binutils); installs cargo-deb and
# cargo-generate-rpm with `cargo install --locked` when they are missing.
# Does not need root and installs nothing on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/packages     # where tests/package.rs looks for the packages
stage=target/packaging  # generated inputs of the RPM (Cargo.toml names them)
build=${CARGO_TARGET_DIR:-target}/release

need_tool() { # <cargo subcommand> <crate>
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "scripts/package.sh: installing $2"
        cargo install "$2" --locked --quiet
    fi
}
need_tool deb cargo-deb
need_tool generate-rpm cargo-generate-rpm
for tool in gzip strip; do
    command -v "$tool" >/dev/null || { echo "scripts/package.sh: $tool not found (apt-get install gzip binutils)" >&2; exit 2; }
done

# Files from git keep the mode of the checkout; packages set their own, but a
# wrong source mode must not hide a mistake in the metadata, so check syntax.
sh -n packaging/extension-hook
sh -n packaging/before-remove packaging/debian/prerm packaging/debian/postrm
bash -n packaging/completions/quiesce.bash

echo "== cargo build --release"
cargo build --release --locked --quiet

rm -rf "$out" "$stage"
mkdir -p "$out" "$stage"

# The RPM's inputs: a stripped copy of the binary (cargo-deb strips its own),
# and the man page gzipped per policy (cargo-deb compresses its own);
# -n: no name or timestamp in the header, so the page is reproducible.
for bin in quiesce quiesce-group; do
    cp "$build/$bin" "$stage/$bin"
    strip --strip-unneeded "$stage/$bin"
done
gzip -9n <packaging/quiesce.8 >"$stage/quiesce.8.gz"

echo "== cargo deb"
cargo deb --no-build --locked --output "$out/" --quiet
echo "== cargo generate-rpm"
cargo generate-rpm --output "$out/"

ls -l "$out"
