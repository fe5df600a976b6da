//! Boulder: moves metrics from Kafka through tenants' WebAssembly transforms into
//! InfluxDB-v2-compatible databases.
//!
//! The modules follow a point's path:
//! - [`decode`]: bytes (a Kafka message, a file) into a flat [`boulder_batch::Batch`];
//! - [`runtime`]: the sandbox: the router and each tenant's chain of components;
//! - [`encode`]: line protocol for the sinks;
//!
//! and around them [`config`], the one file that describes a deployment.
//! The `boulder` binary (`src/main.rs`, `src/cli/`) wires them into commands.
#![deny(missing_docs)]

pub mod config;
pub mod decode;
pub mod encode;
pub mod runtime;

pub use boulder_batch as batch;
