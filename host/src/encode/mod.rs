//! Encoding points for the sinks.
pub mod line_protocol;
