//! Lifting a quarantine: a quarantined tenant stays so "until its component is
//! replaced", so a watcher looks at the files of quarantined tenants' components
//! and, when one changes, loads the tenant's chain again from the same config and
//! puts it in place. A component that fails to load keeps the tenant quarantined
//! and is not retried until its file changes again.

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::runtime::{Chain, Runtime};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// How often the files are looked at; only while some tenant is quarantined.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What a file looked like: its size and modification time (a copy or a rename
/// over it changes one or the other).
type Fingerprint = Option<(u64, SystemTime)>;

fn fingerprint(path: &PathBuf) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Watches until the pipeline is dropped.
pub fn spawn_watcher(pipeline: Weak<Pipeline>, runtime: Arc<Runtime>, config: Arc<Config>) {
    // Per tenant: the files of the chain in use, as they were when it loaded.
    let mut seen: HashMap<String, Vec<(PathBuf, Fingerprint)>> = HashMap::new();
    let spawned = std::thread::Builder::new()
        .name("boulder-reload".into())
        .spawn(move || loop {
            std::thread::sleep(INTERVAL);
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            for tenant in pipeline.tenants() {
                let files = seen.entry(tenant.name().to_owned()).or_insert_with(|| {
                    let chain = tenant.chain();
                    let files = chain.component_files();
                    files
                        .into_iter()
                        .map(|f| (f.clone(), fingerprint(&f)))
                        .collect()
                });
                if !tenant.quarantined() {
                    continue;
                }
                let changed = files.iter().any(|(f, was)| fingerprint(f) != *was);
                if !changed {
                    continue;
                }
                for (f, was) in files.iter_mut() {
                    *was = fingerprint(f);
                }
                let Some(tenant_config) = config.tenant(tenant.name()) else {
                    continue;
                };
                match Chain::load(&runtime, &config, tenant_config) {
                    Ok(chain) => pipeline.replace_chain(tenant, chain),
                    Err(e) => tracing::error!(
                        tenant = tenant.name(),
                        error = %e,
                        "replaced component cannot be loaded: tenant stays quarantined"
                    ),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the component watcher: quarantines last until restart");
    }
}
