//! Boulder: moves metrics from Kafka through tenants' WebAssembly transforms into
//! InfluxDB-v2-compatible databases.
//!
//! The modules follow a point's path:
//! - [`kafka`]: Kafka as transport: the consumer group, topics, client settings;
//! - [`ack`]: which consumed offsets are finished and may be committed;
//! - [`decode`]: bytes (a Kafka message, a file) into a flat [`boulder_batch::Batch`];
//! - [`runtime`]: the sandbox: the router and each tenant's chain of components;
//! - [`encode`]: line protocol for the sinks;
//! - [`sink`]: batching writers to InfluxDB-v2-compatible endpoints;
//! - [`dlq`]: the dead-letter queue for everything not written;
//! - [`pipeline`]: one group of messages through all of the above;
//! - [`service`]: `boulder run` assembled: the consumer loop that groups messages
//!   and hands them to workers (pausing while it must wait), writers, signals;
//! - [`reload`]: a quarantined tenant's components replaced while running;
//!
//! and around them [`config`], the one file that describes a deployment,
//! [`fatal`], for tasks whose panic must end the process,
//! [`metrics`] with the [`status`] endpoint that exposes them, and [`allocator`]
//! settings.
//! The `boulder` binary (`src/main.rs`, `src/cli/`) wires them into commands.
#![deny(missing_docs)]

pub mod ack;
pub mod allocator;
pub mod config;
pub mod decode;
pub mod dlq;
pub mod encode;
pub mod fatal;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod retry;
pub mod runtime;
pub mod service;
pub mod sink;
pub mod status;

pub use boulder_batch as batch;
