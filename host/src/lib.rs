//! Boulder: moves metrics from Kafka through tenants' WebAssembly transforms into
//! InfluxDB-v2-compatible databases.
//!
//! The modules follow a point's path:
//! - [`kafka`]: the consumer group, and the offsets that may be committed ([`kafka::ack`]);
//! - [`decode`]: bytes (a Kafka message, a file) into a flat [`boulder_batch::Batch`];
//! - [`runtime`]: the sandbox: the router and each tenant's chain of components;
//! - [`encode`]: line protocol for the sinks;
//! - [`sink`]: batching writers to InfluxDB-v2-compatible endpoints;
//! - [`dlq`]: the dead-letter queue for everything not written;
//! - [`pipeline`]: one group of messages through all of the above;
//! - [`reload`]: a quarantined tenant's components replaced while running;
//!
//! and around them [`config`], the one file that describes a deployment,
//! [`metrics`] with the [`status`] endpoint that exposes them, and [`allocator`]
//! settings.
//! The `boulder` binary (`src/main.rs`, `src/cli/`) wires them into commands.
#![deny(missing_docs)]

pub mod allocator;
pub mod config;
pub mod decode;
pub mod dlq;
pub mod encode;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod retry;
pub mod runtime;
pub mod sink;
pub mod status;

pub use boulder_batch as batch;
