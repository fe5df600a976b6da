//! The sandbox: runs tenants' WebAssembly components over batches of points.
//!
//! - [`Runtime`]: one wasmtime `Engine` per process (pooling allocator, epoch
//!   interruption), a ticker thread that advances the epoch, and the component
//!   loader with its on-disk cache of compiled code ([`component`]).
//! - [`Stage`]: one component with its params and limits, and a pool of idle
//!   instances reused across batches ([`stage`]).
//! - [`Chain`] and [`Router`]: a tenant's stages in order, and the router that splits
//!   a batch by tenant ([`chain`]).
//!
//! Guests get no WASI and no ambient authority: the linker holds only the
//! contract's `log` import, and a component that imports anything else is refused
//! at load. A trap, deadline, out-of-memory, panic or malformed answer fails the
//! batch with an error naming the stage, and discards that instance only. The
//! host's own shortage (no instance slot free, [`Failure::NoInstance`]) is told
//! apart from the guest's failures.

mod answer;
mod bindings;
pub mod chain;
pub mod component;
mod error;
pub mod native;
mod slots;
pub mod stage;

pub use chain::{AnyStage, Chain, ChainOutput, Rejected, RouteOutput, Routed, Router};
pub use component::LoadedComponent;
pub use error::{Failure, LoadError, StageError, StageId};
pub use stage::{Stage, StageOutput};

use crate::config::{Config, RuntimeConfig};
use bytesize::ByteSize;
use stage::StoreState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

/// How often the epoch advances: the resolution of `limits.deadline_per_call`.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances, and tables, the pool has room for per component instance.
const CORE_PER_COMPONENT: u32 = 4;

/// Engine-wide settings, derived from the config.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// Largest memory any instance may get (sizes the pool's slots).
    pub max_memory: ByteSize,
    /// `runtime.max_wasm_stack`.
    pub max_wasm_stack: ByteSize,
    /// `runtime.max_instances`.
    pub max_instances: u32,
    /// Folders searched for built-in components, in order.
    pub components_dirs: Vec<PathBuf>,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl RuntimeSettings {
    /// Settings for this config.
    pub fn from_config(config: &Config) -> RuntimeSettings {
        let runtime: &RuntimeConfig = &config.runtime;
        let components_dirs = match &runtime.components_dir {
            Some(dir) => vec![config.base_dir.join(dir)],
            None => default_components_dirs(),
        };
        let cache_dir = match (runtime.cache, &runtime.cache_dir) {
            (false, _) => None,
            (true, Some(dir)) => Some(config.base_dir.join(dir)),
            (true, None) => default_cache_dir(),
        };
        RuntimeSettings {
            max_memory: config.largest_memory_limit(),
            max_wasm_stack: runtime.max_wasm_stack,
            max_instances: runtime.max_instances,
            components_dirs,
            cache_dir,
        }
    }
}

/// `$BOULDER_COMPONENTS_DIR`, then `components/` beside the binary and one folder up
/// (`target/components` for `target/debug/boulder` in a checkout).
pub fn default_components_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("BOULDER_COMPONENTS_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        dirs.push(exe_dir.join("components"));
        if let Some(up) = exe_dir.parent() {
            dirs.push(up.join("components"));
        }
    }
    dirs
}

/// `$XDG_CACHE_HOME/boulder`, else `$HOME/.cache/boulder`; with neither set, no
/// cache at all rather than a folder others share (such as the system's temporary
/// folder), since what the cache holds runs as native code.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if base.is_none() {
        tracing::warn!("neither XDG_CACHE_HOME nor HOME is set: compiled components are not cached (set runtime.cache_dir)");
    }
    Some(base?.join("boulder"))
}

/// The process's WebAssembly engine and component loader.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    settings: RuntimeSettings,
    loaded: component::Loaded,
    slots: Arc<slots::Slots>,
    ticker: Option<EpochTicker>,
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker. Refuses a cache folder that
    /// others could write compiled code into ([`component::check_cache_dir`]).
    pub fn new(settings: RuntimeSettings) -> Result<Runtime, LoadError> {
        if let Some(dir) = &settings.cache_dir {
            component::check_cache_dir(dir)?;
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(settings.max_instances)
            // A component built with wit-component runs as three core instances
            // (its module, an import shim and the shim's fixups) with a table in
            // two of them; one more of each is room for an adapter. With fewer,
            // `max_instances` components never fit at once (nor one alone in a
            // pool of 1).
            .total_core_instances(settings.max_instances.saturating_mul(CORE_PER_COMPONENT))
            .total_tables(settings.max_instances.saturating_mul(CORE_PER_COMPONENT))
            .total_memories(settings.max_instances)
            .max_memory_size(settings.max_memory.as_u64() as usize);
        let mut config = EngineConfig::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // The pool's memories never move; saying so lets compiled code keep a
            // memory's base address in a register instead of reloading it.
            .memory_may_move(false)
            .max_wasm_stack(settings.max_wasm_stack.as_u64() as usize)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        bindings::boulder::transform::log::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime {
            engine,
            linker,
            settings,
            loaded: component::Loaded::default(),
            slots: Arc::default(),
            ticker: Some(ticker),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings the runtime was built with.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`], so that a guest
/// past its deadline traps. Stopped and joined when the runtime is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("boulder-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
