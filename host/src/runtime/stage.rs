//! One stage: a component with its params and limits, and a pool of instances.
//!
//! An instance is a wasmtime `Store` (with the limits and the log budget) plus the
//! instantiated component, `init`ed with the stage's params. Instances are reused
//! across batches; one that traps or answers too much is dropped, and the next batch
//! gets a fresh one, so a guest that corrupted its own state cannot carry it over.

use super::bindings::boulder::transform::log;
use super::bindings::exports::boulder::transform::stage::{self as wit, Verdict};
use super::bindings::Transform;
use super::component::LoadedComponent;
use super::{Failure, LoadError, Runtime, StageError, StageId, EPOCH_TICK};
use crate::config::Limits;
use boulder_batch::{codec, Batch};
use std::sync::{Arc, Mutex};
use wasmtime::{ResourceLimiter, Store, Trap};

/// The prefix of the log line with which the guest SDK reports a panic before the
/// guest aborts (see `guest-sdk/src/log.rs`).
const PANIC_PREFIX: &str = "panic: ";
/// Log lines a guest may write per batch; the rest are counted, then reported in one line.
const LOG_LINES_PER_BATCH: u32 = 10;
/// Longest guest log line kept, in bytes.
const LOG_LINE_MAX: usize = 1024;
/// How much an output may exceed `ratio x input` regardless of the ratio.
const OUTPUT_SLACK_BYTES: usize = 64 * 1024;
/// Idle instances kept per stage (about the number of threads that run batches).
const MAX_IDLE: usize = 8;

/// What a store holds for its instance: identity, limits and per-batch bookkeeping.
pub struct StoreState {
    stage: Arc<StageId>,
    memory_limit: usize,
    memory_denied: bool,
    panic: Option<String>,
    log_lines_left: u32,
    log_lines_suppressed: u32,
}

impl StoreState {
    fn start_batch(&mut self) {
        self.memory_denied = false;
        self.panic = None;
        self.log_lines_left = LOG_LINES_PER_BATCH;
        self.log_lines_suppressed = 0;
    }

    fn end_batch(&mut self) {
        if self.log_lines_suppressed > 0 {
            tracing::warn!(stage = %self.stage, suppressed = self.log_lines_suppressed, "guest log lines over budget dropped");
        }
    }
}

impl ResourceLimiter for StoreState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // Remembered so that the trap that usually follows (Rust aborts on a
            // failed allocation) is reported as out-of-memory.
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, mut message: String) {
        if let Some(panic) = message.strip_prefix(PANIC_PREFIX) {
            self.panic = Some(truncate(panic, LOG_LINE_MAX).to_owned());
            return;
        }
        if self.log_lines_left == 0 {
            self.log_lines_suppressed += 1;
            return;
        }
        self.log_lines_left -= 1;
        message.truncate(truncate(&message, LOG_LINE_MAX).len());
        let stage = &*self.stage;
        match level {
            log::Level::Trace => tracing::trace!(target: "boulder::guest", %stage, "{message}"),
            log::Level::Debug => tracing::debug!(target: "boulder::guest", %stage, "{message}"),
            log::Level::Info => tracing::info!(target: "boulder::guest", %stage, "{message}"),
            log::Level::Warn => tracing::warn!(target: "boulder::guest", %stage, "{message}"),
            log::Level::Error => tracing::error!(target: "boulder::guest", %stage, "{message}"),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Instance {
    store: Store<StoreState>,
    guest: Transform,
}

/// An input point the stage did not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Index in the stage's input batch.
    pub point: usize,
    /// True for dead-letter, false for drop.
    pub dead_letter: bool,
    /// The guest's reason.
    pub reason: String,
}

/// A guest's answer before the host has looked inside: the kept points still
/// encoded (only their size is checked), and the rejections as the guest gave them.
#[derive(Debug)]
pub struct RawOutput {
    /// The kept points, encoded by the guest.
    pub bytes: Vec<u8>,
    /// The input points it did not keep.
    pub rejections: Vec<Rejection>,
}

/// What a stage made of a batch, checked against its input.
#[derive(Debug)]
pub struct StageOutput {
    /// The kept points, validated.
    pub batch: Batch,
    /// The input points it did not keep.
    pub rejections: Vec<Rejection>,
}

/// A component with its params and limits, and its idle instances.
pub struct Stage {
    id: Arc<StageId>,
    component: Arc<LoadedComponent>,
    engine: wasmtime::Engine,
    params: String,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
}

impl Stage {
    /// Prepares a stage, starting one instance to check that `init` accepts the
    /// params.
    pub fn new(
        runtime: &Runtime,
        id: StageId,
        component: Arc<LoadedComponent>,
        params: String,
        limits: Limits,
    ) -> Result<Stage, LoadError> {
        let stage = Stage {
            id: Arc::new(id),
            component,
            engine: runtime.engine().clone(),
            params,
            limits,
            idle: Mutex::new(Vec::new()),
        };
        let first = stage.instantiate()?;
        stage.idle.lock().expect("poisoned").push(first);
        Ok(stage)
    }

    /// Which stage this is.
    pub fn id(&self) -> &StageId {
        &self.id
    }

    /// The component it runs.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    fn deadline_ticks(&self) -> u64 {
        // +1: the tick in progress when the deadline is set may be nearly over.
        self.limits
            .cpu_per_batch
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64
            + 1
    }

    fn instantiate(&self) -> Result<Instance, LoadError> {
        let state = StoreState {
            stage: self.id.clone(),
            memory_limit: self.limits.memory.as_u64() as usize,
            memory_denied: false,
            panic: None,
            log_lines_left: LOG_LINES_PER_BATCH,
            log_lines_suppressed: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let failed = |e: wasmtime::Error, store: &Store<StoreState>| LoadError::Instantiate {
            stage: (*self.id).clone(),
            reason: classify(&e, store.data(), &self.limits),
        };
        let guest = match self.component.pre.instantiate(&mut store) {
            Ok(guest) => guest,
            Err(e) => return Err(failed(e, &store)),
        };
        match guest
            .boulder_transform_stage()
            .call_init(&mut store, &self.params)
        {
            Ok(Ok(())) => Ok(Instance { store, guest }),
            Ok(Err(message)) => Err(LoadError::Params {
                stage: (*self.id).clone(),
                message,
            }),
            Err(e) => Err(failed(e, &store)),
        }
    }

    fn checkout(&self) -> Result<Instance, StageError> {
        if let Some(instance) = self.idle.lock().expect("poisoned").pop() {
            return Ok(instance);
        }
        self.instantiate().map_err(|e| StageError {
            stage: (*self.id).clone(),
            failure: match e {
                LoadError::Instantiate { reason, .. } => reason,
                other => Failure::Trap(other.to_string()),
            },
        })
    }

    /// Runs one encoded batch through the stage and returns the guest's answer
    /// unopened, checked in place (its size, layout, and every span, index and
    /// code: [`codec::check`]), so that it may go on to the next guest as it is.
    /// `input_bytes` must be valid (the host's own encoding, or an answer this
    /// checked): an answer equal to them is taken without a check.
    pub fn call(&self, input_bytes: &[u8]) -> Result<RawOutput, StageError> {
        let fail = |failure| StageError {
            stage: (*self.id).clone(),
            failure,
        };
        let mut instance = self.checkout()?;
        let store = &mut instance.store;
        store.data_mut().start_batch();
        store.set_epoch_deadline(self.deadline_ticks());
        let result = instance
            .guest
            .boulder_transform_stage()
            .call_process(&mut *store, input_bytes);
        store.data_mut().end_batch();
        let output = match result {
            Ok(Ok(output)) => output,
            // The guest failed cleanly: its instance is still sound.
            Ok(Err(error)) => {
                let message = match error {
                    wit::Error::InvalidBatch(m) => format!("invalid batch: {m}"),
                    wit::Error::Other(m) => m,
                };
                self.checkin(instance);
                return Err(fail(Failure::Guest(message)));
            }
            // A trap: the instance is dropped here.
            Err(e) => return Err(fail(classify(&e, store.data(), &self.limits))),
        };
        let limit = output_limit(input_bytes.len(), &self.limits);
        if output.batch.len() > limit {
            // Retired: a guest that answers this much is not to be trusted again.
            return Err(fail(Failure::OutputTooLarge {
                output: output.batch.len(),
                input: input_bytes.len(),
                ratio: self.limits.max_output_ratio,
            }));
        }
        // An answer that is the input, byte for byte, is as valid as the input (which
        // the host encoded or checked): a stage that keeps every point as it is, as
        // a validation of clean data does, costs a comparison instead of a check.
        if output.batch != input_bytes {
            if let Err(e) = codec::check(&output.batch) {
                // Retired too: the contract promises no second chance after this.
                return Err(fail(Failure::MalformedOutput(e.to_string())));
            }
        }
        self.checkin(instance);
        Ok(RawOutput {
            bytes: output.batch,
            rejections: output
                .rejections
                .into_iter()
                .map(|r| Rejection {
                    point: r.point as usize,
                    dead_letter: matches!(r.verdict, Verdict::DeadLetter),
                    reason: r.reason,
                })
                .collect(),
        })
    }

    fn checkin(&self, instance: Instance) {
        let mut idle = self.idle.lock().expect("poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(instance);
        }
    }
}

/// Names what a trap means, using what the store saw during the call.
fn classify(error: &wasmtime::Error, state: &StoreState, limits: &Limits) -> Failure {
    if state.memory_denied {
        return Failure::OutOfMemory(limits.memory);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Deadline(limits.cpu_per_batch),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        _ => match &state.panic {
            Some(message) => Failure::Panic(message.clone()),
            None => Failure::Trap(format!("{error:#}")),
        },
    }
}

/// The largest answer a stage may give to an input of `input_len` bytes.
fn output_limit(input_len: usize, limits: &Limits) -> usize {
    input_len
        .saturating_mul(limits.max_output_ratio as usize)
        .saturating_add(OUTPUT_SLACK_BYTES)
}

/// Checks a guest's answer against its input: encoding, and that every input point
/// is accounted for exactly once and no output point claims a foreign origin.
/// `output` is what [`Stage::call`] returned, so its bytes are checked already.
pub(crate) fn check_answer(input: &Batch, output: RawOutput) -> Result<StageOutput, Failure> {
    check_answer_to(input.len(), |i| input.points[i].origin, output)
}

/// [`check_answer`] for an input of `len` points whose `i`th has origin
/// `origin_of(i)`: an input numbered as it was encoded is not at hand in
/// numbered form.
pub(crate) fn check_answer_to(
    len: usize,
    origin_of: impl Fn(usize) -> u32,
    output: RawOutput,
) -> Result<StageOutput, Failure> {
    let batch = codec::decode_trusted(&output.bytes)
        .map_err(|e| Failure::MalformedOutput(e.to_string()))?;

    // Per origin: 0 = not in the input, 1 = in the input, 2 = accounted for.
    let origins = (0..len)
        .map(|i| origin_of(i) as usize + 1)
        .max()
        .unwrap_or(0);
    let mut state = vec![0u8; origins];
    for i in 0..len {
        state[origin_of(i) as usize] = 1;
    }
    for (i, p) in batch.points.iter().enumerate() {
        match state.get_mut(p.origin as usize) {
            Some(s) if *s > 0 => *s = 2,
            _ => {
                return Err(Failure::MalformedOutput(format!(
                    "output point {i} has origin {} that no input point has",
                    p.origin
                )))
            }
        }
    }
    for r in &output.rejections {
        if r.point >= len {
            return Err(rejection_out_of_range(r.point, len));
        }
        state[origin_of(r.point) as usize] = 2;
    }
    if let Some(i) = (0..len).position(|i| state[origin_of(i) as usize] != 2) {
        return Err(Failure::MalformedOutput(format!(
            "input point {i} was neither kept nor rejected"
        )));
    }
    Ok(StageOutput {
        batch,
        rejections: output.rejections,
    })
}

/// A rejection that names a point the input does not have.
pub(crate) fn rejection_out_of_range(point: usize, len: usize) -> Failure {
    Failure::MalformedOutput(format!("rejection of point {point} in a batch of {len}"))
}
