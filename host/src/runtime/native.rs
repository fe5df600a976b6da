//! The built-in transforms compiled into the host and run without the sandbox.
//!
//! Only for measuring what the sandbox costs (`runtime.native_builtins = true`,
//! which `scripts/bench.sh` and the chain benchmark use): the same transform code,
//! the same batch, the same SDK loop, but no WebAssembly, no encoding between
//! stages and no limits. A tenant's own component always runs sandboxed.

use super::stage::{Rejection, StageOutput};
use super::{LoadError, StageId};
use boulder_batch::Batch;
use boulder_guest_sdk::{transform_batch, Params, Transform, Verdict};
use std::sync::Mutex;

/// The built-ins that can run natively, by the name the config uses.
pub const BUILTINS: [&str; 4] = ["validate", "normalize", "flip-single-fields", "route"];

/// Runs one batch through a transform with its params.
type RunBatch = Box<dyn Fn(&Batch) -> StageOutput + Send + Sync>;

/// A built-in transform compiled into the host, with its params.
pub struct NativeStage {
    id: StageId,
    run: RunBatch,
}

impl NativeStage {
    /// The built-in `component` with these params, or `None` if it has no native
    /// form (a tenant's own component).
    pub fn load(
        id: StageId,
        component: &str,
        params: &str,
    ) -> Option<Result<NativeStage, LoadError>> {
        let run = match component {
            "validate" => pooled::<validate::Validate>(&id, params),
            "normalize" => pooled::<normalize::Normalize>(&id, params),
            "flip-single-fields" => pooled::<flip_single_fields::Flip>(&id, params),
            "route" => pooled::<route::Route>(&id, params),
            _ => return None,
        };
        Some(run.map(|run| NativeStage { id, run }))
    }

    /// Which stage this is.
    pub fn id(&self) -> &StageId {
        &self.id
    }

    /// Runs a batch through the transform. Its answer needs no checking: the SDK
    /// loop accounts for every point by construction.
    pub fn process(&self, input: &Batch) -> StageOutput {
        (self.run)(input)
    }
}

/// Instances of `T` reused across batches, one per thread running at once, as
/// the sandbox pools its instances.
fn pooled<T: Transform + Send>(id: &StageId, params: &str) -> Result<RunBatch, LoadError> {
    let init = {
        let params = params.to_owned();
        move || T::init(Params::from_json(params.clone()))
    };
    let first = init().map_err(|message| LoadError::Params {
        stage: id.clone(),
        message,
    })?;
    let idle = Mutex::new(vec![first]);
    Ok(Box::new(move |input: &Batch| {
        let pooled = idle.lock().expect("poisoned").pop();
        // init accepted these params once; it is deterministic in them.
        let mut transform = pooled.unwrap_or_else(|| init().expect("params accepted at load"));
        // SAFETY: every batch the host passes to a stage is valid: its decoder's
        // (built with `Batch`'s methods), the router's selections of one, or a
        // stage's answer (checked, or built by the SDK as this one is).
        let (batch, rejections) = unsafe { transform_batch(&mut transform, input) };
        idle.lock().expect("poisoned").push(transform);
        StageOutput {
            batch,
            rejections: rejections
                .into_iter()
                .map(|r| Rejection {
                    point: r.point as usize,
                    dead_letter: matches!(r.verdict, Verdict::DeadLetter(_)),
                    reason: r.verdict.reason().to_owned(),
                })
                .collect(),
        }
    }))
}
