#!/usr/bin/env bash
# Builds every guest — the built-in transforms in transforms/ and the test fixtures in
# tests/guests/ — to WebAssembly components in target/components/NAME.wasm.
#
# One cargo invocation and one target dir (target/guests) for all of them, so the
# standard library and shared crates are built once.
#
# Compiler, in order of preference:
#   1. rustup's own wasm32-unknown-unknown target, when installed;
#   2. Debian's rustc-web + rust-web-src, building std from source (build-std), with
#      wasm-ld-22 as the linker. `scripts/install-deps.sh` installs these.
# Componentizer, in order of preference:
#   1. cargo component (cargo install cargo-component --locked), when installed;
#   2. plain cargo, then scripts/componentize (the wit-component crate).
# BOULDER_COMPONENTIZER=plain forces the second (the tests use it to check both);
# BOULDER_GUEST_OUT changes the output folder.
#
# Usage: scripts/build-guests.sh [PACKAGE...]   (default: every guest)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target_dir="$root/target/guests"
out_dir="${BOULDER_GUEST_OUT:-$root/target/components}"
profile=guest
mkdir -p "$out_dir"

packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    for manifest in "$root"/transforms/*/Cargo.toml "$root"/tests/guests/*/Cargo.toml; do
        packages+=("$(basename "$(dirname "$manifest")")")
    done
fi

# ---- compiler ----
# shellcheck source=guest-env.sh
source "$root/scripts/guest-env.sh"
cargo_bin=$BOULDER_GUEST_CARGO
toolchain=$BOULDER_GUEST_TOOLCHAIN
# 128-bit SIMD, which wasmtime runs natively: the arena's UTF-8 check (simdutf8) uses
# it. Set for the wasm32 target only, so host tools built here are unaffected.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:--C target-feature=+simd128}"

# ---- componentizer ----
if [ "${BOULDER_COMPONENTIZER:-}" != plain ] && cargo component --version >/dev/null 2>&1; then
    componentizer="cargo component"
else
    componentizer="cargo + wit-component"
fi

echo "build-guests: ${#packages[@]} guests with $toolchain, $componentizer" >&2
package_args=()
for p in "${packages[@]}"; do package_args+=(-p "$p"); done

wasm_dir="$target_dir/wasm32-unknown-unknown/$profile"
if [ "$componentizer" = "cargo component" ]; then
    (cd "$root" && cargo component build --quiet --profile "$profile" \
        --target wasm32-unknown-unknown --target-dir "$target_dir" "${package_args[@]}")
    for p in "${packages[@]}"; do
        cp "$wasm_dir/${p//-/_}.wasm" "$out_dir/$p.wasm"
    done
else
    (cd "$root" && "$cargo_bin" build --quiet --profile "$profile" \
        --target wasm32-unknown-unknown --target-dir "$target_dir" "${package_args[@]}")
    # The componentizer is a host tool: rustup's cargo and rustc, not the guest's.
    (cd "$root" && env -u RUSTC -u RUSTC_BOOTSTRAP -u CARGO_UNSTABLE_BUILD_STD -u CARGO \
        cargo build --quiet -p boulder-componentize --target-dir "$root/target/tools")
    for p in "${packages[@]}"; do
        "$root/target/tools/debug/boulder-componentize" "$wasm_dir/${p//-/_}.wasm" "$out_dir/$p.wasm"
    done
fi
echo "build-guests: components in $out_dir" >&2
