//! What a group of messages runs through: the router and the tenants, each with
//! its chain and its outputs' writers, as one snapshot ([`Routing`]) that a group
//! takes when it starts. A new snapshot (a changed config, a replaced router) or a
//! tenant's new chain (a replaced component) is put in place while groups run:
//! groups that started keep what they took, later groups get the new one, so no
//! point goes through two versions.

use super::limits::TenantLimits;
use crate::config::{Config, Limits};
use crate::metrics::{LimitLabels, Metrics};
use crate::runtime::{AnyStage, Chain, Router};
use crate::sink::OutputHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

/// A tenant's chain and the writers of its outputs.
pub struct Tenant {
    name: String,
    // Behind a lock so that a new version of its components can be put in place
    // while batches run (see `reload`); a batch holds the chain it started with.
    chain: RwLock<Arc<Chain>>,
    /// The outputs' writers.
    pub outputs: Vec<OutputHandle>,
    /// `limits.quarantine_after`.
    pub quarantine_after: u32,
    /// Its ingestion limits, if it has any.
    pub limits: Option<TenantLimits>,
    /// Batches failed in a row.
    pub failures_in_a_row: AtomicU32,
}

impl Tenant {
    /// A tenant that has not failed yet, nor sent anything.
    pub fn new(chain: Chain, outputs: Vec<OutputHandle>, limits: &Limits) -> Tenant {
        Tenant {
            name: chain.tenant().to_owned(),
            chain: RwLock::new(Arc::new(chain)),
            outputs,
            quarantine_after: limits.quarantine_after,
            limits: TenantLimits::new(limits),
            failures_in_a_row: AtomicU32::new(0),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chain batches run through now.
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.read().expect("poisoned").clone()
    }

    /// Whether the tenant's batches skip the chain and go to the dead-letter queue.
    pub fn quarantined(&self) -> bool {
        self.quarantine_after > 0
            && self.failures_in_a_row.load(Ordering::Relaxed) >= self.quarantine_after
    }

    /// Puts a new version of the tenant's chain in place and lifts a quarantine:
    /// batches that took the old chain finish on it.
    pub fn replace_chain(&self, chain: Chain, metrics: &Metrics) {
        let chain = Arc::new(chain);
        let old = std::mem::replace(&mut *self.chain.write().expect("poisoned"), chain.clone());
        show(metrics, &self.name, old.stages(), false);
        show(metrics, &self.name, chain.stages(), true);
        let was_quarantined = self.quarantined();
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        metrics
            .quarantined
            .get_or_create(&Metrics::tenant(&self.name))
            .set(0);
        tracing::info!(
            tenant = self.name,
            components = ?chain.stages().iter().map(AnyStage::fingerprint).collect::<Vec<_>>(),
            quarantine_lifted = was_quarantined,
            "tenant's new components run from now on"
        );
    }
}

/// The router and the tenants, as the config they came from has them.
pub struct Routing {
    /// The config this routing was built from.
    pub config: Arc<Config>,
    /// The router; without one every point goes to the only tenant.
    pub router: Option<Arc<Router>>,
    /// The tenants, in config order.
    pub tenants: Vec<Arc<Tenant>>,
    by_name: HashMap<String, usize>,
}

impl Routing {
    /// A routing over these tenants.
    pub fn new(
        config: Arc<Config>,
        router: Option<Arc<Router>>,
        tenants: Vec<Arc<Tenant>>,
    ) -> Routing {
        let by_name = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name().to_owned(), i))
            .collect();
        Routing {
            config,
            router,
            tenants,
            by_name,
        }
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name).map(|&i| &self.tenants[i])
    }

    /// The same tenants behind another router.
    pub fn with_router(&self, router: Option<Arc<Router>>) -> Routing {
        Routing::new(self.config.clone(), router, self.tenants.clone())
    }

    /// Creates each tenant's and output's series at 0, so that `/metrics` (and
    /// dashboards) show a tenant that has sent nothing yet, or never failed, as 0
    /// rather than as no data.
    pub fn create_series(&self, metrics: &Metrics) {
        let _ = metrics
            .component_load_failures
            .get_or_create(&Metrics::tenant(""));
        for tenant in &self.tenants {
            let name = Metrics::tenant(tenant.name());
            let _ = metrics.points_in.get_or_create(&name);
            let _ = metrics.quarantined.get_or_create(&name);
            let _ = metrics.component_load_failures.get_or_create(&name);
            for output in &tenant.outputs {
                let labels = Metrics::output(tenant.name(), &output.name);
                let _ = metrics.points_written.get_or_create(&labels);
                let _ = metrics.write_retries.get_or_create(&labels);
                let _ = metrics.output_held.get_or_create(&labels);
            }
            if let Some(limits) = &tenant.limits {
                for limit in limits.limits() {
                    let _ = metrics.points_limited.get_or_create(&LimitLabels {
                        tenant: tenant.name().to_owned(),
                        limit: limit.name().to_owned(),
                    });
                }
                if limits.active_series().is_some() {
                    let _ = metrics.tenant_active_series.get_or_create(&name);
                }
            }
        }
    }

    /// Shows (or removes) this routing's components in `boulder_component_info`.
    pub fn show(&self, metrics: &Metrics, running: bool) {
        if let Some(router) = &self.router {
            show(metrics, "", std::slice::from_ref(router.stage()), running);
        }
        for tenant in &self.tenants {
            show(metrics, tenant.name(), tenant.chain().stages(), running);
        }
    }
}

fn show(metrics: &Metrics, tenant: &str, stages: &[AnyStage], running: bool) {
    metrics.show_components(tenant, stages.iter().map(AnyStage::fingerprint), running);
}
