//! Integration tests: one binary, a module per concern. The guests are built from
//! this repository by `scripts/build-guests.sh` on first use.

mod builtins;
mod cli;
mod containment;
mod dashboard;
mod delivery;
mod guest_builds;
mod hostile;
mod isolation;
mod kafka_e2e;
mod layout;
mod limits;
mod new_crate;
mod reload;
mod replay;
mod sink_failures;
mod swap;
mod tenant_guide;
