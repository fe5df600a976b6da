//! `SIGHUP`: read the config file again and apply it without leaving the consumer
//! group. Tenants added, removed or changed, their outputs and the router are put
//! in place as a new routing ([`Pipeline::change`]): groups that started finish on
//! the old one; an unchanged tenant keeps its chain, its quarantine state and its
//! writers; a changed tenant keeps the writers of its unchanged outputs. A removed
//! output's writer writes (or dead-letters) what it holds, then stops.
//!
//! A config that `boulder check` would refuse is refused with the same error, and
//! the running one is kept. So is a change to what the consumer, the dead-letter
//! producer, the runtime or the status endpoint were built from (`[kafka]`,
//! `[[inputs]]`, `[dlq]`, `[runtime]`, `[pipeline]`, `[http]`): those need a
//! restart, and the error says so.

use super::Writers;
use crate::config::Config;
use crate::pipeline::{Pipeline, Routing, Tenant};
use crate::runtime::{Chain, Router, Runtime};
use anyhow::{bail, Result};
use std::path::Path;
use std::sync::Arc;

/// What a reload changed, by tenant name.
#[derive(Debug, Default)]
pub(super) struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    router_changed: bool,
}

/// Reads the config at `path` and puts it in place, or says why not.
pub(super) fn reload(
    path: &Path,
    pipeline: &Pipeline,
    runtime: &Runtime,
    writers: &Writers,
) -> Result<Changes> {
    let new = Config::load(path)?;
    new.check_runnable()?;
    pipeline.change(|routing| match apply(new, routing, runtime, writers) {
        Ok((routing, changes)) => (Some(routing), Ok(changes)),
        Err(e) => (None, Err(e)),
    })
}

/// The routing of config `new`, built beside `running`.
fn apply(
    new: Config,
    running: &Routing,
    runtime: &Runtime,
    writers: &Writers,
) -> Result<(Routing, Changes)> {
    let old = &running.config;
    let needs_restart: Vec<&str> = [
        ("[kafka]", old.kafka != new.kafka),
        ("[[inputs]]", old.inputs != new.inputs),
        ("[dlq]", old.dlq != new.dlq),
        ("[runtime]", old.runtime != new.runtime),
        ("[pipeline]", old.pipeline != new.pipeline),
        ("[http]", old.http != new.http),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect();
    if !needs_restart.is_empty() {
        bail!(
            "{} changed: that needs a restart of boulder run, not a reload",
            needs_restart.join(", ")
        );
    }
    let mut changes = Changes {
        router_changed: old.router != new.router,
        ..Changes::default()
    };
    let mut tenants = Vec::new();
    for tenant in &new.tenants {
        let was = old.tenant(&tenant.name).zip(running.tenant(&tenant.name));
        match was {
            Some((config, running)) if config == tenant => {
                tenants.push(running.clone());
                continue;
            }
            Some(_) => changes.changed.push(tenant.name.clone()),
            None => changes.added.push(tenant.name.clone()),
        }
        let chain = Chain::load(runtime, &new, tenant)?;
        let outputs = writers.outputs(tenant, was.map(|(c, r)| (c, &**r)))?;
        tenants.push(Arc::new(Tenant::new(chain, outputs, &tenant.limits)));
    }
    changes.removed = old
        .tenants
        .iter()
        .filter(|t| new.tenant(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    // The router knows the tenants' names: loaded again whenever they change.
    let router =
        if changes.router_changed || !changes.added.is_empty() || !changes.removed.is_empty() {
            Router::load(runtime, &new)?.map(Arc::new)
        } else {
            running.router.clone()
        };
    Ok((Routing::new(Arc::new(new), router, tenants), changes))
}

/// Waits for `SIGHUP`s and reloads on each, until the pipeline is dropped.
pub(super) async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    path: std::path::PathBuf,
    pipeline: std::sync::Weak<Pipeline>,
    runtime: Arc<Runtime>,
    writers: Arc<Writers>,
) {
    while hangups.recv().await.is_some() {
        let Some(pipeline) = pipeline.upgrade() else {
            return;
        };
        let (path, runtime, writers) = (path.clone(), runtime.clone(), writers.clone());
        let metrics = pipeline.metrics().clone();
        tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
        let reloaded =
            tokio::task::spawn_blocking(move || reload(&path, &pipeline, &runtime, &writers)).await;
        let result = match reloaded {
            Ok(Ok(changes)) => {
                tracing::info!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    changed = ?changes.changed,
                    router_changed = changes.router_changed,
                    "config reloaded"
                );
                "applied"
            }
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config is kept");
                "refused"
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; the running config is kept");
                "refused"
            }
        };
        metrics
            .config_reloads
            .get_or_create(&crate::metrics::ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}
