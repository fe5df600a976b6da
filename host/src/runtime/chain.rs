//! A tenant's chain of stages, and the router in front of the chains.
//!
//! Both number the points of a batch before the first stage (`origin` = index) so
//! that every stage's answer can be checked against its input, and put the caller's
//! origins back at the end: the caller uses them to find the Kafka message a point
//! came from.

use super::stage::{Stage, StageOutput};
use super::{LoadError, Runtime, StageError, StageId};
use crate::config::{params_json, Config, StageConfig, TenantConfig};
use crate::encode::line_protocol;
use boulder_batch::{codec, Batch};
use std::collections::{BTreeMap, HashSet};

/// A point that a stage (or the router) did not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Which stage.
    pub stage: StageId,
    /// Dead-letter (true) or drop (false).
    pub dead_letter: bool,
    /// The guest's reason.
    pub reason: String,
    /// The caller's origin of the point.
    pub origin: u32,
    /// The point as it entered the stage, as line protocol (without newline).
    pub line: String,
}

/// The caller's origins of a batch, replaced by indices while stages run.
struct Origins(Vec<u32>);

impl Origins {
    fn number(batch: &mut Batch) -> Origins {
        let caller = batch.points.iter().map(|p| p.origin).collect();
        for (i, p) in batch.points.iter_mut().enumerate() {
            p.origin = i as u32;
        }
        Origins(caller)
    }

    fn caller(&self, origin: u32) -> u32 {
        self.0[origin as usize]
    }

    fn restore(&self, batch: &mut Batch) {
        for p in &mut batch.points {
            p.origin = self.caller(p.origin);
        }
    }

    /// The stage's rejections as [`Rejected`] points, rendered from its input.
    fn rejected(&self, stage: &Stage, input: &Batch, output: &StageOutput) -> Vec<Rejected> {
        output
            .rejections
            .iter()
            .map(|r| Rejected {
                stage: stage.id().clone(),
                dead_letter: r.dead_letter,
                reason: r.reason.clone(),
                origin: self.caller(input.points[r.point].origin),
                line: line_protocol::point_to_line(input, r.point),
            })
            .collect()
    }
}

/// What a chain made of a batch.
#[derive(Debug)]
pub struct ChainOutput {
    /// The points that passed every stage, with the caller's origins.
    pub batch: Batch,
    /// The points some stage dropped or dead-lettered.
    pub rejected: Vec<Rejected>,
}

/// A tenant's stages, in order.
pub struct Chain {
    tenant: String,
    stages: Vec<Stage>,
}

impl Chain {
    /// Loads every component of the tenant's chain and checks its params.
    pub fn load(
        runtime: &Runtime,
        config: &Config,
        tenant: &TenantConfig,
    ) -> Result<Chain, LoadError> {
        let stages = tenant
            .chain
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let id = StageId::stage(&tenant.name, i + 1, &stage.component);
                load_stage(runtime, config, stage, id, tenant.limits)
            })
            .collect::<Result<_, _>>()?;
        Ok(Chain {
            tenant: tenant.name.clone(),
            stages,
        })
    }

    /// The tenant's name.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Runs a batch through every stage. A stage's failure fails the whole batch:
    /// the caller dead-letters its input.
    pub fn run(&self, input: &Batch) -> Result<ChainOutput, StageError> {
        let mut batch = input.clone();
        let origins = Origins::number(&mut batch);
        let mut bytes = codec::encode(&batch);
        let mut rejected = Vec::new();
        for stage in &self.stages {
            if batch.is_empty() {
                break;
            }
            let output = stage.process(&batch, &bytes)?;
            rejected.extend(origins.rejected(stage, &batch, &output));
            batch = output.batch;
            bytes = output.bytes;
        }
        origins.restore(&mut batch);
        Ok(ChainOutput { batch, rejected })
    }
}

fn load_stage(
    runtime: &Runtime,
    config: &Config,
    stage: &StageConfig,
    id: StageId,
    limits: crate::config::Limits,
) -> Result<Stage, LoadError> {
    let component = runtime.load(&stage.component, &config.base_dir)?;
    Stage::new(runtime, id, component, params_json(&stage.params), limits)
}

/// What the router made of a batch.
#[derive(Debug, Default)]
pub struct RouteOutput {
    /// Per tenant, its points (with the caller's origins). A point fanned out to
    /// several tenants is in each of their batches.
    pub by_tenant: BTreeMap<String, Batch>,
    /// The points the router dropped or dead-lettered, or assigned to no known
    /// tenant (dead-lettered).
    pub rejected: Vec<Rejected>,
}

/// The router stage, and the tenants it may answer.
pub struct Router {
    stage: Stage,
    tenants: HashSet<String>,
}

impl Router {
    /// Loads the router of the config, if it has one.
    pub fn load(runtime: &Runtime, config: &Config) -> Result<Option<Router>, LoadError> {
        let Some(router) = &config.router else {
            return Ok(None);
        };
        let id = StageId::router(&router.component);
        let stage = load_stage(
            runtime,
            config,
            router,
            id,
            router.limits.unwrap_or_default(),
        )?;
        let tenants = config.tenants.iter().map(|t| t.name.clone()).collect();
        Ok(Some(Router { stage, tenants }))
    }

    /// Splits a batch by tenant.
    pub fn route(&self, input: &Batch) -> Result<RouteOutput, StageError> {
        let mut batch = input.clone();
        let origins = Origins::number(&mut batch);
        let bytes = codec::encode(&batch);
        let output = self.stage.process(&batch, &bytes)?;
        let mut routed = RouteOutput {
            rejected: origins.rejected(&self.stage, &batch, &output),
            ..RouteOutput::default()
        };
        let mut out = output.batch;
        origins.restore(&mut out);
        for i in 0..out.len() {
            let tenant = out.point(i).tenant();
            let problem = if tenant.is_empty() {
                Some("router assigned no tenant")
            } else if !self.tenants.contains(tenant) {
                Some("router assigned an unknown tenant")
            } else {
                None
            };
            match problem {
                Some(reason) => routed.rejected.push(Rejected {
                    stage: self.stage.id().clone(),
                    dead_letter: true,
                    // Not the name itself: reasons are counted, names are unbounded.
                    reason: reason.to_owned(),
                    origin: out.points[i].origin,
                    line: line_protocol::point_to_line(&out, i),
                }),
                None => {
                    let tenant = tenant.to_owned();
                    routed
                        .by_tenant
                        .entry(tenant)
                        .or_default()
                        .copy_point_from(&out, i);
                }
            }
        }
        Ok(routed)
    }
}
