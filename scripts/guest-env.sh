# Source this file (`source scripts/guest-env.sh`) to build wasm32-unknown-unknown
# guests on this machine, with plain cargo or `cargo component`:
#   cargo component build --release --target wasm32-unknown-unknown
#
# - With rustup's wasm32-unknown-unknown target installed, nothing needs to change.
# - Otherwise (rustup here has no wasm32 std and cannot download one), Debian's
#   rustc-web builds std from source (rust-web-src) and wasm-ld-22 links:
#   `scripts/install-deps.sh` installs them. Build-std is passed through environment
#   variables, not `-Z` flags (cargo component misparses those) and not a
#   .cargo/config.toml (it would apply to host builds too).
# Sets BOULDER_GUEST_CARGO to the cargo to use and BOULDER_GUEST_TOOLCHAIN to a
# description; returns non-zero with a message when neither way is available.

# The list is read whole: `| grep -q` would fail under a caller's pipefail when
# grep stops reading early.
if [[ $'\n'$(rustup target list --installed 2>/dev/null)$'\n' == *$'\n'wasm32-unknown-unknown$'\n'* ]]; then
    BOULDER_GUEST_CARGO=cargo
    BOULDER_GUEST_TOOLCHAIN="rustup wasm32-unknown-unknown"
elif [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && command -v wasm-ld-22 >/dev/null; then
    export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_UNSTABLE_BUILD_STD=std,panic_abort \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22
    BOULDER_GUEST_CARGO=/usr/bin/cargo
    BOULDER_GUEST_TOOLCHAIN="Debian rustc-web with build-std"
    # cargo component checks that a wasip1 sysroot folder exists even when building
    # for wasm32-unknown-unknown; an empty one satisfies it.
    mkdir -p "$(/usr/bin/rustc --print sysroot)/lib/rustlib/wasm32-wasip1" 2>/dev/null || true
    # cargo component runs the cargo named here.
    export CARGO=/usr/bin/cargo
else
    echo "guest-env: no wasm32 std in rustup and no Debian rustc-web/cargo-web/lld-22;" >&2
    echo "  run scripts/install-deps.sh (apt-get install rustc-web cargo-web rust-web-src lld-22)" >&2
    return 1 2>/dev/null || exit 1
fi
export BOULDER_GUEST_CARGO BOULDER_GUEST_TOOLCHAIN
