//! Lifting a quarantine: a quarantined tenant stays so "until its component is
//! replaced", so a watcher looks at the files of quarantined tenants' components
//! and, when one no longer holds what the chain loaded from it, loads the tenant's
//! chain again from the same config and puts it in place. A replacement that fails
//! to load keeps the tenant quarantined and is not retried until a file changes
//! again.
//!
//! "Replaced" is judged by content (the SHA-256 the runtime keys components by),
//! not by when the watcher first looked: a file replaced before the watcher's first
//! look still counts, and touching a file without changing it does not.

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::runtime::component::content_hash;
use crate::runtime::{Chain, Runtime};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the files are looked at. Only quarantined tenants' files are read and
/// hashed each time: no cache of what they held, as a quarantine is rare and
/// hashing a component takes far less than this.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The file's content hash now, or `None` if it cannot be read.
fn content_of(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|bytes| content_hash(&bytes))
}

/// Watches until the pipeline is dropped.
pub fn spawn_watcher(pipeline: Weak<Pipeline>, runtime: Arc<Runtime>, config: Arc<Config>) {
    // Per tenant: the files' contents when a reload last failed, so a broken
    // replacement is tried once, not every second.
    let mut failed: HashMap<String, Vec<Option<String>>> = HashMap::new();
    let spawned = std::thread::Builder::new()
        .name("boulder-reload".into())
        .spawn(move || loop {
            std::thread::sleep(INTERVAL);
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            for tenant in pipeline.tenants().iter().filter(|t| t.quarantined()) {
                let loaded = tenant.chain().component_files();
                let now: Vec<Option<String>> = loaded.iter().map(|(f, _)| content_of(f)).collect();
                let replaced = loaded
                    .iter()
                    .zip(&now)
                    .any(|((_, was), is)| is.as_ref() != Some(was));
                if !replaced || failed.get(tenant.name()) == Some(&now) {
                    continue;
                }
                let Some(tenant_config) = config.tenant(tenant.name()) else {
                    continue;
                };
                match Chain::load(&runtime, &config, tenant_config) {
                    Ok(chain) => {
                        failed.remove(tenant.name());
                        pipeline.replace_chain(tenant, chain);
                    }
                    Err(e) => {
                        tracing::error!(
                            tenant = tenant.name(),
                            error = %e,
                            "replaced component cannot be loaded: tenant stays quarantined"
                        );
                        failed.insert(tenant.name().to_owned(), now);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the component watcher: quarantines last until restart");
    }
}
