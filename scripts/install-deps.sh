#!/usr/bin/env bash
# Installs what Boulder needs on a fresh Debian 12 machine, skipping what is present:
# - Debian packages: rustc-web, cargo-web, rust-web-src and lld-22 (guests are built
#   for wasm32 with a std built from source, since rustup here cannot download one);
# - cargo-component, which builds tenants' transforms into components;
# - the real services tests and the demo run against: VictoriaMetrics (Debian's
#   package) and Tansu, a Kafka-protocol broker (crates.io, with its in-memory
#   storage engine; about 13 minutes to build on 2 cores, once);
# - libssl-dev and pkg-config, for librdkafka's TLS support;
# - libisal-dev: ISA-L's igzip, which compresses the outputs' bodies at gzip level 1
#   (the binary then needs libisal2 where it runs);
# - python3 and curl, which the demo and the benchmark use; patch, which the tenant
#   guide (docs/TENANTS.md) uses and its test runs.
# The host itself builds with the machine's rustup toolchain (stable >= 1.95).
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi

missing=()
for pkg in rustc-web cargo-web rust-web-src lld-22 victoria-metrics libssl-dev pkg-config libisal-dev python3 curl patch; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: apt-get install ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo component --version >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-component (a few minutes, once)" >&2
    cargo install --locked --quiet cargo-component
fi

if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
    echo "install-deps: cargo install tansu (about 13 minutes on 2 cores, once)" >&2
    cargo install --locked --quiet tansu --features dynostore
fi
