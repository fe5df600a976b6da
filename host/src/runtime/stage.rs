//! One stage: a component with its params and limits, and a pool of instances.
//!
//! An instance is a wasmtime `Store` (with the limits and the log budget) plus the
//! instantiated component, `init`ed with the stage's params. Instances are reused
//! across batches; one that traps or answers too much is dropped, and the next batch
//! gets a fresh one, so a guest that corrupted its own state cannot carry it over.
//! Instance slots are the engine's, shared by every stage ([`super::slots`]);
//! answers are checked, and guests' text cut, by [`super::answer`].

use super::answer::{check_rejections, output_limit};
pub use super::answer::{cut, RawOutput, Rejection, StageOutput, MAX_GUEST_TEXT};
use super::bindings::boulder::transform::log;
use super::bindings::exports::boulder::transform::stage::{self as wit, Verdict};
use super::bindings::Transform;
use super::component::LoadedComponent;
use super::slots::{self, Idle, Slots};
use super::{Failure, LoadError, Runtime, StageError, StageId, EPOCH_TICK};
use crate::config::Limits;
use boulder_batch::codec;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::{PoolConcurrencyLimitError, ResourceLimiter, Store, Trap};

/// The prefix of the log line with which the guest SDK reports a panic before the
/// guest aborts (see `guest-sdk/src/log.rs`).
const PANIC_PREFIX: &str = "panic: ";
/// Log lines a guest may write per batch; the rest are counted, then reported in one line.
const LOG_LINES_PER_BATCH: u32 = 10;
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
            self.panic = Some(cut(panic.to_owned()));
            return;
        }
        if self.log_lines_left == 0 {
            self.log_lines_suppressed += 1;
            return;
        }
        self.log_lines_left -= 1;
        message = cut(message);
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

/// An instantiated component in its store. Dropping it frees its slot.
struct Instance {
    store: Store<StoreState>,
    guest: Transform,
    // After `store` (fields drop in order): says the slot is free once the
    // store is gone.
    _slot: FreedOnDrop,
}

struct FreedOnDrop(Arc<Slots>);

impl Drop for FreedOnDrop {
    fn drop(&mut self) {
        self.0.released();
    }
}

/// A stage's idle instances.
#[derive(Default)]
struct IdleInstances(Mutex<Vec<Instance>>);

impl Idle for IdleInstances {
    fn give_up_one(&self) -> bool {
        // Dropped outside the lock: dropping a store takes a while.
        let given_up = self.0.lock().expect("poisoned").pop();
        given_up.is_some()
    }
}

/// Why no instance could be had.
enum NoInstance {
    /// Every slot is taken (the pool's concurrency limit).
    SlotsFull,
    /// Instantiating or `init` failed.
    Failed(LoadError),
}

/// A component with its params and limits, and its idle instances.
pub struct Stage {
    id: Arc<StageId>,
    component: Arc<LoadedComponent>,
    engine: wasmtime::Engine,
    params: String,
    limits: Limits,
    idle: Arc<IdleInstances>,
    slots: Arc<Slots>,
    max_instances: u32,
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
            idle: Arc::default(),
            slots: runtime.slots.clone(),
            max_instances: runtime.settings().max_instances,
        };
        let idle: Arc<dyn Idle> = stage.idle.clone();
        runtime.slots.register(Arc::downgrade(&idle));
        let first = match stage.instance_in_a_slot() {
            Ok(first) => first,
            Err(NoInstance::Failed(e)) => return Err(e),
            Err(NoInstance::SlotsFull) => {
                return Err(LoadError::Instantiate {
                    stage: (*stage.id).clone(),
                    reason: stage.no_instance(),
                })
            }
        };
        stage.checkin(first);
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
            .deadline_per_call
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64
            + 1
    }

    fn instantiate(&self) -> Result<Instance, NoInstance> {
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
        let failed = |e: wasmtime::Error, store: &Store<StoreState>| {
            NoInstance::Failed(LoadError::Instantiate {
                stage: (*self.id).clone(),
                reason: classify(&e, store.data(), &self.limits),
            })
        };
        let guest = match self.component.pre.instantiate(&mut store) {
            Ok(guest) => guest,
            Err(e) if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                return Err(NoInstance::SlotsFull)
            }
            Err(e) => return Err(failed(e, &store)),
        };
        match guest
            .boulder_transform_stage()
            .call_init(&mut store, &self.params)
        {
            Ok(Ok(())) => Ok(Instance {
                store,
                guest,
                _slot: FreedOnDrop(self.slots.clone()),
            }),
            Ok(Err(message)) => Err(NoInstance::Failed(LoadError::Params {
                stage: (*self.id).clone(),
                message: cut(message),
            })),
            Err(e) => Err(failed(e, &store)),
        }
    }

    /// An idle instance of this stage, or a new one in a slot found by giving up
    /// other stages' idle instances or by waiting (up to [`slots::WAIT`]) for a
    /// running call to give its instance back.
    fn instance_in_a_slot(&self) -> Result<Instance, NoInstance> {
        if let Some(instance) = self.idle.0.lock().expect("poisoned").pop() {
            return Ok(instance);
        }
        match self.instantiate() {
            Err(NoInstance::SlotsFull) => {}
            done => return done,
        }
        let looking = self.slots.looking();
        let deadline = Instant::now() + slots::WAIT;
        loop {
            let generation = self.slots.generation();
            if let Some(instance) = self.idle.0.lock().expect("poisoned").pop() {
                return Ok(instance);
            }
            match self.instantiate() {
                Err(NoInstance::SlotsFull) => {}
                done => return done,
            }
            if self.slots.give_up_idle() {
                continue;
            }
            if !self.slots.wait(&looking, generation, deadline) {
                return Err(NoInstance::SlotsFull);
            }
        }
    }

    fn no_instance(&self) -> Failure {
        Failure::NoInstance {
            max_instances: self.max_instances,
            waited: slots::WAIT,
        }
    }

    fn checkout(&self) -> Result<Instance, StageError> {
        self.instance_in_a_slot().map_err(|e| StageError {
            stage: (*self.id).clone(),
            failure: match e {
                NoInstance::SlotsFull => {
                    tracing::warn!(stage = %self.id, max_instances = self.max_instances, waited = ?slots::WAIT, "no instance slot free: every one of runtime.max_instances is running a call");
                    self.no_instance()
                }
                NoInstance::Failed(LoadError::Instantiate { reason, .. }) => reason,
                NoInstance::Failed(other) => Failure::Trap(cut(other.to_string())),
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
                    wit::Error::InvalidBatch(m) => format!("invalid batch: {}", cut(m)),
                    wit::Error::Other(m) => cut(m),
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
        if !output.rejections.is_empty() {
            if let Err(e) = check_rejections(input_bytes, &output.rejections) {
                return Err(fail(Failure::MalformedOutput(e)));
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
                    reason: cut(r.reason),
                })
                .collect(),
        })
    }

    fn checkin(&self, instance: Instance) {
        let mut idle = self.idle.0.lock().expect("poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(instance);
            drop(idle);
            self.slots.released();
        }
    }
}

/// Names what a trap means, using what the store saw during the call.
fn classify(error: &wasmtime::Error, state: &StoreState, limits: &Limits) -> Failure {
    if state.memory_denied {
        return Failure::OutOfMemory(limits.memory);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Deadline(limits.deadline_per_call),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        _ => match &state.panic {
            Some(message) => Failure::Panic(message.clone()),
            // The text names the guest's functions, which the guest names.
            None => Failure::Trap(cut(format!("{error:#}"))),
        },
    }
}
