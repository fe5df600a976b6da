#!/usr/bin/env bash
# The demo, from a fresh clone on a fresh Debian 12 machine: installs what is
# missing, builds Boulder and the built-in transforms, then runs the example config's
# router and each tenant's chain over sample metrics with `boulder transform`,
# showing what each tenant keeps, drops and dead-letters.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build-guests.sh validate normalize flip-single-fields route
echo "demo: building boulder (release; the first build takes a few minutes)" >&2
cargo build --release --quiet -p boulder

boulder=target/release/boulder
$boulder check --config boulder.example.toml
for tenant in ops web; do
    echo
    echo "=== tenant '$tenant': tests/fixtures/sample.lp through the router and its chain ==="
    $boulder transform --config boulder.example.toml --route --tenant "$tenant" \
        --topic metrics tests/fixtures/sample.lp
done
echo
echo "demo: edit boulder.example.toml or tests/fixtures/sample.lp and run again:"
echo "  $boulder transform --config boulder.example.toml --route --tenant ops tests/fixtures/sample.lp"
