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
# BOULDER_COMPONENTIZER=plain forces the second (the tests use it to check both).
#
# Usage: scripts/build-guests.sh [PACKAGE...]   (default: every guest)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target_dir="$root/target/guests"
out_dir="$root/target/components"
profile=guest
mkdir -p "$out_dir"

packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    for manifest in "$root"/transforms/*/Cargo.toml "$root"/tests/guests/*/Cargo.toml; do
        packages+=("$(basename "$(dirname "$manifest")")")
    done
fi

# ---- compiler ----
cargo_bin=cargo
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    toolchain="rustup wasm32-unknown-unknown"
else
    for need in /usr/bin/rustc /usr/bin/cargo wasm-ld-22; do
        if ! command -v "$need" >/dev/null; then
            echo "build-guests: no wasm32 std in rustup and no $need for the build-std recipe;" >&2
            echo "  run scripts/install-deps.sh (apt-get install rustc-web cargo-web rust-web-src lld-22)" >&2
            exit 1
        fi
    done
    toolchain="Debian rustc-web with build-std"
    export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_UNSTABLE_BUILD_STD=std,panic_abort \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22
    cargo_bin=/usr/bin/cargo
fi

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
    if [ "$cargo_bin" = /usr/bin/cargo ]; then
        # cargo component checks that a wasip1 sysroot folder exists even for
        # wasm32-unknown-unknown; an empty one satisfies it.
        mkdir -p "$(/usr/bin/rustc --print sysroot)/lib/rustlib/wasm32-wasip1"
    fi
    (cd "$root" && CARGO="$cargo_bin" cargo component build --quiet --profile "$profile" \
        --target wasm32-unknown-unknown --target-dir "$target_dir" "${package_args[@]}")
    for p in "${packages[@]}"; do
        cp "$wasm_dir/${p//-/_}.wasm" "$out_dir/$p.wasm"
    done
else
    (cd "$root" && "$cargo_bin" build --quiet --profile "$profile" \
        --target wasm32-unknown-unknown --target-dir "$target_dir" "${package_args[@]}")
    (cd "$root" && cargo build --quiet -p boulder-componentize)
    for p in "${packages[@]}"; do
        "$root/target/debug/boulder-componentize" "$wasm_dir/${p//-/_}.wasm" "$out_dir/$p.wasm"
    done
fi
echo "build-guests: components in $out_dir" >&2
