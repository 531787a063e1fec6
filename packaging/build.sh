#!/usr/bin/env bash
# Builds target/debian/writ_*.deb and target/generate-rpm/writ-*.rpm from the workspace.
#
#   packaging/build.sh              release build, then both packages
#   packaging/build.sh --deb-only   only the .deb
#   WRIT_PACKAGE_PROFILE=dev WRIT_PACKAGE_NO_BUILD=1 packaging/build.sh --deb-only
#                                   package the binary `cargo test` already built (CI)
#
# Installs cargo-deb and cargo-generate-rpm with `cargo install --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${WRIT_PACKAGE_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$profile" in
dev) profile_dir=debug ;;
*) profile_dir="$profile" ;;
esac
rpm=1
[ "${1:-}" = "--deb-only" ] && rpm=0

need() {
    command -v "cargo-$1" >/dev/null || cargo install --locked "cargo-$1"
}

if [ "${WRIT_PACKAGE_NO_BUILD:-0}" != 1 ]; then
    cargo build --locked --profile "$profile" --bin writ
fi
test -x "$target_dir/$profile_dir/writ" || {
    echo "no binary at $target_dir/$profile_dir/writ: build it first" >&2
    exit 1
}

need deb
fast=()
# A CI round-trip package: compression speed over size.
[ "$profile" = dev ] && fast=(--fast)
cargo deb --no-build --profile "$profile" "${fast[@]}" --output "$target_dir/debian/"
ls -1 "$target_dir"/debian/*.deb

if [ "$rpm" = 1 ]; then
    need generate-rpm
    # Writes $target_dir/generate-rpm/; asset paths under target/release follow --profile.
    cargo generate-rpm --target-dir "$target_dir" --profile "$profile"
    ls -1 "$target_dir"/generate-rpm/*.rpm
fi
