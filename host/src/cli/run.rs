//! `boulder run`: the main job. Consume, decode, route, transform, write; what is
//! not written is dead-lettered; offsets are committed only behind both. The
//! service itself is the library's [`boulder::service`].

use super::ConfigArg;
use anyhow::Result;
use boulder::config::Config;
use boulder::runtime::{Chain, Router, Runtime, RuntimeSettings};
use std::sync::Arc;

pub fn run(args: ConfigArg) -> Result<()> {
    let config = Config::load(&args.config)?;
    config.check_runnable()?;
    let workers = config
        .pipeline
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = Arc::new(Runtime::new(RuntimeSettings::from_config(&config))?);
    let router = Router::load(&runtime, &config)?;
    let mut chains = Vec::new();
    for tenant in &config.tenants {
        chains.push(Chain::load(&runtime, &config, tenant)?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("boulder-io")
        .build()?
        .block_on(boulder::service::run(
            Arc::new(config),
            runtime,
            router,
            chains,
            workers,
        ))
}
