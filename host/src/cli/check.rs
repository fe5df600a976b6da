//! `boulder check`: validate a config and everything it names, then exit.

use super::ConfigArg;
use anyhow::Result;
use boulder::config::Config;
use boulder::runtime::{Chain, Router, Runtime, RuntimeSettings};

pub fn run(args: ConfigArg) -> Result<()> {
    let config = Config::load(&args.config)?;
    // A config with a [kafka] table is meant for `boulder run`: check all it needs.
    if config.kafka.is_some() {
        config.check_runnable()?;
        for tenant in &config.tenants {
            for (i, output) in tenant.outputs.iter().enumerate() {
                if let Some(var) = &output.token_env {
                    if std::env::var_os(var).is_none() {
                        eprintln!(
                            "warning: tenant {:?} output {}: token_env {var:?} is not set here; `boulder run` will refuse to start without it",
                            tenant.name,
                            tenant.output_name(i)
                        );
                    }
                }
            }
        }
    }
    let runtime = Runtime::new(RuntimeSettings::from_config(&config))?;
    let router = Router::load(&runtime, &config)?;
    let mut stages = usize::from(router.is_some());
    for tenant in &config.tenants {
        stages += Chain::load(&runtime, &config, tenant)?.stages().len();
    }
    println!(
        "{}: ok ({} tenants, {} stages{})",
        args.config.display(),
        config.tenants.len(),
        stages,
        if router.is_some() {
            ", with a router"
        } else {
            ", no router"
        }
    );
    Ok(())
}
