//! Integration tests: one binary, a module per concern. The guests are built from
//! this repository by `scripts/build-guests.sh` on first use.

mod builtins;
mod cli;
mod delivery;
mod guest_builds;
mod hostile;
mod kafka_e2e;
mod sink_failures;
