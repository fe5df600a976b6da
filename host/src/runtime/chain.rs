//! A tenant's chain of stages, and the router in front of the chains.
//!
//! Both number the points of a batch before the first stage (`origin` = index) so
//! that every stage's answer can be checked against its input, and put the caller's
//! origins back at the end: the caller uses them to find the Kafka message a point
//! came from.

use super::answer::{check_answer, check_answer_to, rejection_out_of_range};
use super::native::NativeStage;
use super::stage::{RawOutput, Rejection, Stage, StageOutput};
use super::{Failure, LoadError, Runtime, StageError, StageId};
use crate::config::{params_json, Config, Limits, StageConfig, TenantConfig};
use crate::encode::line_protocol;
use boulder_batch::{codec, Batch};
use std::borrow::Cow;
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

/// The caller's origins of a batch, replaced by indices while stages run; borrowed
/// from a [`Routed::Answer`], which keeps them.
struct Origins<'a>(Cow<'a, [u32]>);

impl Origins<'_> {
    /// The caller's origins of `batch`'s points, before they are numbered.
    fn of(batch: &Batch) -> Origins<'static> {
        Origins(batch.points.iter().map(|p| p.origin).collect())
    }

    /// Takes the caller's origins and gives each point its index instead.
    fn number(batch: &mut Batch) -> Origins<'static> {
        let origins = Origins::of(batch);
        for (i, p) in batch.points.iter_mut().enumerate() {
            p.origin = i as u32;
        }
        origins
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn caller(&self, origin: u32) -> u32 {
        self.0[origin as usize]
    }

    fn restore(&self, batch: &mut Batch) {
        for p in &mut batch.points {
            p.origin = self.caller(p.origin);
        }
    }

    /// A stage's rejections as [`Rejected`] points, rendered from its input (whose
    /// origins are numbered). Fails (blaming the stage) if a rejection names a
    /// point the input does not have.
    fn rejected(
        &self,
        stage: &StageId,
        input: &Batch,
        rejections: &[Rejection],
    ) -> Result<Vec<Rejected>, StageError> {
        rejected_from(stage, input, rejections, |origin| self.caller(origin))
    }
}

/// Rejections as [`Rejected`] points, rendered from the stage's input, each with
/// the caller's origin `caller(origin of the input point)`.
fn rejected_from(
    stage: &StageId,
    input: &Batch,
    rejections: &[Rejection],
    caller: impl Fn(u32) -> u32,
) -> Result<Vec<Rejected>, StageError> {
    rejections
        .iter()
        .map(|r| {
            let point = input.points.get(r.point).ok_or_else(|| StageError {
                stage: stage.clone(),
                failure: rejection_out_of_range(r.point, input.len()),
            })?;
            Ok(Rejected {
                stage: stage.clone(),
                dead_letter: r.dead_letter,
                reason: r.reason.clone(),
                origin: caller(point.origin),
                line: line_protocol::point_to_line(input, r.point),
            })
        })
        .collect()
}

/// One stage of a chain (or the router): a sandboxed component, or a built-in run
/// natively (`runtime.native_builtins`).
pub enum AnyStage {
    /// A WebAssembly component in the sandbox.
    Wasm(Stage),
    /// A built-in compiled into the host.
    Native(NativeStage),
}

impl AnyStage {
    /// Which stage this is.
    pub fn id(&self) -> &StageId {
        match self {
            AnyStage::Wasm(stage) => stage.id(),
            AnyStage::Native(stage) => stage.id(),
        }
    }

    /// The file of a sandboxed component, with the content hash of what was
    /// loaded from it; `None` for a built-in run natively.
    pub fn file(&self) -> Option<(&std::path::Path, &str)> {
        match self {
            AnyStage::Wasm(stage) => {
                let component = stage.component();
                Some((&component.path, &component.sha256))
            }
            AnyStage::Native(_) => None,
        }
    }

    /// `(stage, component, sha256)` as [`crate::metrics::Metrics::show_components`]
    /// shows it: the stage is `router` or the position in the chain; the hash is
    /// `native` for a built-in run natively.
    pub fn fingerprint(&self) -> (String, &str, &str) {
        let id = self.id();
        let stage = match id.tenant {
            None => "router".to_owned(),
            Some(_) => id.position.to_string(),
        };
        (
            stage,
            &id.component,
            self.file().map_or("native", |(_, h)| h),
        )
    }
}

/// A batch between two stages, in whichever form the last stage left it.
enum Between<'a> {
    Decoded(Batch),
    /// Valid bytes: a stage's answer, which [`Stage::call`] checked, or the host's
    /// own encoding of the chain's input; borrowed when the input came encoded
    /// (the router's answer, [`Routed::Answer`]).
    Encoded(Cow<'a, [u8]>),
}

impl Between<'_> {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Between::Decoded(batch) => codec::encode(batch),
            Between::Encoded(bytes) => bytes.to_vec(),
        }
    }

    /// The batch, decoded if it is still encoded (valid bytes, so not checked again).
    fn decode(&self) -> Result<Cow<'_, Batch>, Failure> {
        match self {
            Between::Decoded(batch) => Ok(Cow::Borrowed(batch)),
            Between::Encoded(bytes) => codec::decode_trusted(bytes)
                .map(Cow::Owned)
                .map_err(|e| Failure::MalformedOutput(e.to_string())),
        }
    }

    /// The batch, owned; itself back if it does not decode.
    fn into_decoded(self) -> Result<Batch, Self> {
        if let Between::Decoded(batch) = self {
            return Ok(batch);
        }
        let decoded = self.decode().map(Cow::into_owned);
        decoded.map_err(|_| self)
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
    stages: Vec<AnyStage>,
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

    /// The files of its sandboxed components, each with the content hash of what
    /// was loaded from it.
    pub fn component_files(&self) -> Vec<(&std::path::Path, &str)> {
        self.stages.iter().filter_map(AnyStage::file).collect()
    }

    /// The stages.
    pub fn stages(&self) -> &[AnyStage] {
        &self.stages
    }

    /// Runs a batch through every stage. A stage's failure fails the whole batch:
    /// the caller dead-letters its input.
    ///
    /// The host opens a guest's answer only where it must. Each answer is checked
    /// in place as it arrives (layout, spans, indices, codes: a malformed one is
    /// blamed on its stage at once) and passed on still encoded; it is decoded only
    /// to render rejected points, and the last one at the end, where the chain's
    /// accounting is checked once (every input point kept or rejected, no foreign
    /// origin). Only when that check fails, or a guest refuses its input, are the
    /// stages' answers checked one by one to name the stage at fault.
    pub fn run(&self, input: &Batch) -> Result<ChainOutput, StageError> {
        if input.is_empty() || self.stages.is_empty() {
            return Ok(ChainOutput {
                batch: input.clone(),
                rejected: Vec::new(),
            });
        }
        let (origins, current) = match &self.stages[0] {
            // Numbered as it is encoded: no copy of the batch just to number it.
            AnyStage::Wasm(_) => (
                Origins::of(input),
                Between::Encoded(Cow::Owned(codec::encode_numbered(input))),
            ),
            AnyStage::Native(_) => {
                let mut batch = input.clone();
                (Origins::number(&mut batch), Between::Decoded(batch))
            }
        };
        self.run_numbered(origins, current)
    }

    /// [`Chain::run`] for what the router gave this tenant, as it gave it: a
    /// router's answer that went to this tenant whole is passed to the first stage
    /// as it is, not decoded and encoded again.
    pub fn run_routed(&self, input: &Routed) -> Result<ChainOutput, StageError> {
        match input {
            Routed::Answer { bytes, origins } if !origins.is_empty() => self.run_numbered(
                Origins(Cow::Borrowed(origins)),
                Between::Encoded(Cow::Borrowed(bytes)),
            ),
            _ => self.run(&input.batch()),
        }
    }

    /// Runs every stage on `current`, whose points are numbered by index; `origins`
    /// are the caller's.
    fn run_numbered(
        &self,
        origins: Origins<'_>,
        mut current: Between<'_>,
    ) -> Result<ChainOutput, StageError> {
        let mut rejected = Vec::new();
        // What each stage was given and what it rejected, to find the culprit.
        let mut trail: Vec<(Between, Vec<Rejection>)> = Vec::with_capacity(self.stages.len());
        for (k, stage) in self.stages.iter().enumerate() {
            let output = match stage {
                AnyStage::Native(native) => {
                    let input = match current.into_decoded() {
                        Ok(batch) => batch,
                        Err(encoded) => return Err(self.culprit(&trail, encoded, None, k)),
                    };
                    let output = native.process(&input);
                    rejected.extend(origins.rejected(stage.id(), &input, &output.rejections)?);
                    trail.push((Between::Decoded(input), output.rejections));
                    current = Between::Decoded(output.batch);
                    continue;
                }
                AnyStage::Wasm(wasm) => {
                    let encoded;
                    let bytes: &[u8] = match &current {
                        Between::Decoded(batch) => {
                            encoded = codec::encode(batch);
                            &encoded
                        }
                        Between::Encoded(bytes) => bytes,
                    };
                    match wasm.call(bytes) {
                        Ok(output) => output,
                        // It may be right: the previous stage may have answered garbage.
                        Err(e) if matches!(e.failure, Failure::Guest(_)) => {
                            return Err(self.culprit(&trail, current, Some(e), k));
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let RawOutput { bytes, rejections } = output;
            if !rejections.is_empty() {
                let input = match current.decode() {
                    Ok(input) => input,
                    Err(_) => return Err(self.culprit(&trail, current, None, k)),
                };
                rejected.extend(origins.rejected(stage.id(), &input, &rejections)?);
            }
            trail.push((
                std::mem::replace(&mut current, Between::Encoded(Cow::Owned(bytes))),
                rejections,
            ));
        }
        let last = self.stages.len();
        let mut batch = match current.into_decoded() {
            Ok(batch) if accounts_for_every_point(&batch, &trail, origins.len()) => batch,
            Ok(batch) => return Err(self.culprit(&trail, Between::Decoded(batch), None, last)),
            Err(encoded) => return Err(self.culprit(&trail, encoded, None, last)),
        };
        origins.restore(&mut batch);
        Ok(ChainOutput { batch, rejected })
    }

    /// The first stage whose answer, checked against its input, is malformed; the
    /// stages before `stage` ran, and `last` is what the last of them answered.
    /// `fallback` is returned if every answer is sound.
    fn culprit(
        &self,
        trail: &[(Between, Vec<Rejection>)],
        last: Between,
        fallback: Option<StageError>,
        stage: usize,
    ) -> StageError {
        for k in 0..stage.min(trail.len()) {
            let output = trail.get(k + 1).map_or(&last, |(input, _)| input);
            let fail = |failure| StageError {
                stage: self.stages[k].id().clone(),
                failure,
            };
            let input = match trail[k].0.decode() {
                Ok(input) => input,
                Err(failure) => return fail(failure),
            };
            let raw = RawOutput {
                bytes: output.bytes(),
                rejections: trail[k].1.clone(),
            };
            if let Err(failure) = check_answer(&input, raw) {
                return fail(failure);
            }
        }
        fallback.unwrap_or_else(|| StageError {
            stage: self.stages[stage.min(self.stages.len() - 1)].id().clone(),
            failure: Failure::MalformedOutput(
                "the chain's answer does not account for every input point".into(),
            ),
        })
    }
}

/// Whether every input point of the chain (origins `0..inputs`) is in the output
/// or was rejected by some stage, and every output point has one of those origins.
fn accounts_for_every_point(
    output: &Batch,
    trail: &[(Between, Vec<Rejection>)],
    inputs: usize,
) -> bool {
    let mut seen = vec![false; inputs];
    for p in &output.points {
        match seen.get_mut(p.origin as usize) {
            Some(s) => *s = true,
            None => return false,
        }
    }
    if seen.iter().all(|&s| s) {
        return true;
    }
    // Some point left the chain by a rejection; find where (rare: needs decoding).
    for (input, rejections) in trail {
        if rejections.is_empty() {
            continue;
        }
        let Ok(input) = input.decode() else {
            return false;
        };
        for r in rejections {
            match input.points.get(r.point) {
                Some(p) if (p.origin as usize) < inputs => seen[p.origin as usize] = true,
                _ => return false,
            }
        }
    }
    seen.iter().all(|&s| s)
}

fn load_stage(
    runtime: &Runtime,
    config: &Config,
    stage: &StageConfig,
    id: StageId,
    limits: Limits,
) -> Result<AnyStage, LoadError> {
    let params = params_json(&stage.params);
    if config.runtime.native_builtins {
        if let Some(native) = NativeStage::load(id.clone(), &stage.component, &params) {
            return native.map(AnyStage::Native);
        }
    }
    let component = runtime.load(&stage.component, &config.base_dir)?;
    Stage::new(runtime, id, component, params, limits).map(AnyStage::Wasm)
}

/// A tenant's points, as the router gave them.
#[derive(Debug)]
pub enum Routed {
    /// Decoded, with the caller's origins.
    Batch(Batch),
    /// The router's answer itself, when it sent every point to this one tenant in
    /// order: checked bytes whose `i`th point is the router's input point `i`
    /// (numbered as a chain numbers its input), and the caller's origin of each.
    /// The usual case; the chain's first stage takes the bytes as they are.
    Answer {
        /// The answer, checked by [`Stage::call`].
        bytes: Vec<u8>,
        /// The caller's origin of point `i`.
        origins: Vec<u32>,
    },
}

impl Routed {
    /// Number of points.
    pub fn len(&self) -> usize {
        match self {
            Routed::Batch(batch) => batch.len(),
            Routed::Answer { origins, .. } => origins.len(),
        }
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The points, decoded, with the caller's origins.
    pub fn batch(&self) -> Cow<'_, Batch> {
        match self {
            Routed::Batch(batch) => Cow::Borrowed(batch),
            Routed::Answer { bytes, origins } => {
                // Checked bytes, which decode.
                let mut batch = codec::decode_trusted(bytes).unwrap_or_default();
                Origins(Cow::Borrowed(origins)).restore(&mut batch);
                Cow::Owned(batch)
            }
        }
    }
}

/// What the router made of a batch.
#[derive(Debug, Default)]
pub struct RouteOutput {
    /// Per tenant, its points. A point fanned out to several tenants is in each of
    /// their batches.
    pub by_tenant: BTreeMap<String, Routed>,
    /// The points the router dropped or dead-lettered, or assigned to no known
    /// tenant (dead-lettered).
    pub rejected: Vec<Rejected>,
}

/// The router stage, and the tenants it may answer.
pub struct Router {
    stage: AnyStage,
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

    /// The router's stage.
    pub fn stage(&self) -> &AnyStage {
        &self.stage
    }

    /// Splits a batch by tenant.
    ///
    /// The router's input is numbered by index, as a chain's first stage's is: as
    /// it is encoded for the sandbox, on a copy natively. Its answer is checked
    /// against that numbering, and its rejections index `input`.
    pub fn route(&self, input: &Batch) -> Result<RouteOutput, StageError> {
        let output = match &self.stage {
            AnyStage::Wasm(stage) => {
                let raw = stage.call(&codec::encode_numbered(input))?;
                let raw = match self.to_one_tenant(input, raw) {
                    Ok(routed) => return Ok(routed),
                    Err(raw) => raw,
                };
                check_answer_to(input.len(), |i| i as u32, raw).map_err(|failure| StageError {
                    stage: stage.id().clone(),
                    failure,
                })?
            }
            AnyStage::Native(stage) => {
                let mut batch = input.clone();
                Origins::number(&mut batch);
                stage.process(&batch)
            }
        };
        self.split(input, output)
    }

    /// The router's answer as it is, if it sent every input point, in order and
    /// once, to one known tenant and rejected none; read in place, not decoded.
    /// Point `i` having origin `i` for every `i` is the whole accounting check.
    /// Otherwise the answer comes back, to be checked and split.
    fn to_one_tenant(&self, input: &Batch, raw: RawOutput) -> Result<RouteOutput, RawOutput> {
        let Some(tenant) = self.one_tenant_of(input.len(), &raw) else {
            return Err(raw);
        };
        let routed = Routed::Answer {
            origins: Origins::of(input).0.into_owned(),
            bytes: raw.bytes,
        };
        Ok(RouteOutput {
            by_tenant: BTreeMap::from([(tenant, routed)]),
            rejected: Vec::new(),
        })
    }

    /// The one known tenant of every point of an answer to `len` numbered points,
    /// if it kept each of them once, in order, and rejected none.
    fn one_tenant_of(&self, len: usize, raw: &RawOutput) -> Option<String> {
        let points = codec::PointsInPlace::new(&raw.bytes).ok()?;
        if !raw.rejections.is_empty() || points.len() != len {
            return None;
        }
        let first = points.iter().next()?.tenant;
        let tenant = std::str::from_utf8(points.arena_bytes(first))
            .ok()
            .filter(|t| self.tenants.contains(*t))?;
        // Most points share the first one's tenant string, span and all.
        let same_tenant = |span| span == first || points.arena_bytes(span) == tenant.as_bytes();
        let kept_in_order = points
            .iter()
            .zip(0..)
            .all(|(p, i)| p.origin == i && same_tenant(p.tenant));
        kept_in_order.then(|| tenant.to_owned())
    }

    /// The tenants' batches of a checked answer.
    fn split(&self, input: &Batch, output: StageOutput) -> Result<RouteOutput, StageError> {
        let origins = Origins::of(input);
        let mut routed = RouteOutput {
            // Rendered from `input` itself, whose point `i` was numbered `i`.
            rejected: rejected_from(self.stage.id(), input, &output.rejections, |o| o)?,
            ..RouteOutput::default()
        };
        let mut out = output.batch;
        origins.restore(&mut out);
        // Each tenant's points, in order of first appearance. Most points get the
        // tenant the point before got: its group is found, and the name known to be
        // valid, without a lookup.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut last = 0;
        for i in 0..out.len() {
            let tenant = out.point(i).tenant();
            if groups.get(last).is_some_and(|(name, _)| *name == tenant) {
                groups[last].1.push(i);
                continue;
            }
            let problem = if tenant.is_empty() {
                Some("router assigned no tenant")
            } else if !self.tenants.contains(tenant) {
                Some("router assigned an unknown tenant")
            } else {
                None
            };
            if let Some(reason) = problem {
                routed.rejected.push(Rejected {
                    stage: self.stage.id().clone(),
                    dead_letter: true,
                    // Not the name itself: reasons are counted, names are unbounded.
                    reason: reason.to_owned(),
                    origin: out.points[i].origin,
                    line: line_protocol::point_to_line(&out, i),
                });
                continue;
            }
            last = match groups.iter().position(|(name, _)| *name == tenant) {
                Some(g) => g,
                None => {
                    groups.push((tenant, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[last].1.push(i);
        }
        // The usual case, every point to one tenant, hands the batch over whole.
        let by_tenant: Vec<(String, Routed)> = match groups.as_slice() {
            [(tenant, indices)] if indices.len() == out.len() => {
                let tenant = (*tenant).to_owned();
                vec![(tenant, Routed::Batch(out))]
            }
            _ => groups
                .iter()
                .map(|(tenant, indices)| ((*tenant).to_owned(), Routed::Batch(out.select(indices))))
                .collect(),
        };
        routed.by_tenant.extend(by_tenant);
        Ok(routed)
    }
}
