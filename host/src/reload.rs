//! Live swap: a watcher looks at the files of every component that runs (the
//! router's and each tenant's chain) and, when one holds something else than what
//! was loaded from it, loads that tenant's chain (or the router) again beside the
//! running one, runs its `init`s, and puts it in place ([`Tenant::replace_chain`],
//! [`Pipeline::change`]). Groups that started on the old version finish on it.
//! A quarantined tenant's quarantine is lifted by its new version.
//!
//! A file is read only once it has stayed the same (size, modification time,
//! inode) for one look, so a file being written is not caught half-way; one that
//! still fails to load or `init` leaves the running version in place, is logged
//! and counted (`boulder_component_load_failures_total`), and is tried again when
//! it changes. Replacing a file by rename (write a new file, then `mv` it over the
//! old one) is the way to ship a new version: the watcher sees it whole or not at
//! all.
//!
//! "Changed" is judged by content (the SHA-256 the runtime keys components by), so
//! touching a file without changing it loads nothing, and a file replaced before
//! the watcher's first look still counts.

use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Tenant};
use crate::runtime::component::content_hash;
use crate::runtime::{Chain, Router, Runtime};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// How often the files are looked at: a new version runs within about two looks
/// of being renamed into place.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What a look at a file's metadata tells, without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

#[derive(Default)]
struct Watched {
    /// The stamp at the last look.
    last: Option<Stamp>,
    /// The stamp when the content was last hashed.
    hashed: Option<Stamp>,
}

/// The files of the running components, and what the watcher saw of them.
#[derive(Default)]
struct Watcher {
    files: HashMap<PathBuf, Watched>,
}

/// Watches until the pipeline is dropped.
pub fn spawn_watcher(pipeline: Weak<Pipeline>, runtime: Arc<Runtime>) {
    let mut watcher = Watcher::default();
    let spawned = std::thread::Builder::new()
        .name("boulder-reload".into())
        .spawn(move || loop {
            std::thread::sleep(INTERVAL);
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            watcher.look(&pipeline, &runtime);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the component watcher: replaced components run only after a restart");
    }
}

impl Watcher {
    /// One look at every running component's file; loads what changed.
    fn look(&mut self, pipeline: &Pipeline, runtime: &Runtime) {
        let routing = pipeline.routing();
        let router = routing.router.as_ref().and_then(|r| r.stage().file());
        let chains: Vec<_> = routing.tenants.iter().map(|t| t.chain()).collect();
        let in_use: HashSet<&Path> = router
            .iter()
            .copied()
            .chain(chains.iter().flat_map(|c| c.component_files()))
            .map(|(path, _)| path)
            .collect();
        self.files.retain(|path, _| in_use.contains(path.as_path()));
        // The new content of each file that settled since it was last hashed.
        let mut settled: HashMap<&Path, String> = HashMap::new();
        for path in in_use {
            let stamp = stamp_of(path);
            let watched = self.files.entry(path.to_owned()).or_default();
            if stamp != watched.last {
                // Changed since the last look, maybe still being written.
                watched.last = stamp;
                continue;
            }
            if stamp.is_none() || stamp == watched.hashed {
                continue;
            }
            watched.hashed = stamp;
            if let Ok(bytes) = std::fs::read(path) {
                settled.insert(path, content_hash(&bytes));
            }
        }
        let changed = |files: &[(&Path, &str)]| {
            files
                .iter()
                .any(|(path, loaded)| settled.get(path).is_some_and(|now| now != loaded))
        };
        if changed(router.as_slice()) {
            reload_router(pipeline, runtime);
        }
        for (tenant, chain) in routing.tenants.iter().zip(&chains) {
            if changed(&chain.component_files()) {
                reload_tenant(pipeline, runtime, tenant);
            }
        }
    }
}

/// Loads `tenant`'s chain again and puts it in place, or keeps the running one.
fn reload_tenant(pipeline: &Pipeline, runtime: &Runtime, tenant: &Arc<Tenant>) {
    pipeline.change(|routing| {
        // A config reload may have replaced the tenant meanwhile.
        let current = routing
            .tenant(tenant.name())
            .filter(|t| Arc::ptr_eq(t, tenant));
        let config = routing.config.tenant(tenant.name());
        let (Some(tenant), Some(config)) = (current, config) else {
            return (None, ());
        };
        match Chain::load(runtime, &routing.config, config) {
            Ok(chain) => tenant.replace_chain(chain, pipeline.metrics()),
            Err(e) => load_failed(pipeline.metrics(), tenant.name(), &e),
        }
        (None, ())
    });
}

/// Loads the router again and puts it in place, or keeps the running one.
fn reload_router(pipeline: &Pipeline, runtime: &Runtime) {
    pipeline.change(|routing| match Router::load(runtime, &routing.config) {
        Ok(router) => {
            tracing::info!("the router's new component runs from now on");
            (Some(routing.with_router(router.map(Arc::new))), ())
        }
        Err(e) => {
            load_failed(pipeline.metrics(), "", &e);
            (None, ())
        }
    });
}

fn load_failed(metrics: &Metrics, tenant: &str, error: &dyn std::fmt::Display) {
    metrics
        .component_load_failures
        .get_or_create(&Metrics::tenant(tenant))
        .inc();
    tracing::error!(
        tenant,
        error = %error,
        "a changed component cannot be loaded: the running version stays in place until the file changes again"
    );
}
