//! Write Boulder transforms.
//!
//! A transform is a type that implements [`Transform`], exported with [`export!`].
//! Boulder calls it once per point of every batch (the batch crosses the sandbox
//! once; the loop over points runs inside the guest) and it answers with a
//! [`Verdict`]: keep the point (after changing it as it likes, maybe splitting it),
//! drop it, or dead-letter it.
//!
//! ```
//! use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};
//!
//! /// Adds `env=<env>` to every point, and drops points from the `debug` measurement.
//! struct AddEnv {
//!     env: String,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct AddEnvParams {
//!     env: String,
//! }
//!
//! impl Transform for AddEnv {
//!     fn init(params: Params) -> Result<Self, String> {
//!         let p: AddEnvParams = params.parse()?;
//!         Ok(AddEnv { env: p.env })
//!     }
//!
//!     fn process(&mut self, point: &mut Point<'_>) -> Verdict {
//!         if point.measurement() == "debug" {
//!             return Verdict::drop("debug measurement");
//!         }
//!         point.set_tag("env", &self.env);
//!         Verdict::Keep
//!     }
//! }
//!
//! export!(AddEnv);
//!
//! // Transforms are tested natively, with plain `cargo test`:
//! use boulder_guest_sdk::testing::{point, run};
//! let mut t = AddEnv::init(Params::from_json(r#"{"env":"prod"}"#)).unwrap();
//! let out = run(&mut t, &[point("cpu").field("usage", 0.5), point("debug").field("x", 1i64)]);
//! assert_eq!(out.kept, vec![point("cpu").tag("env", "prod").field("usage", 0.5)]);
//! assert_eq!(out.dropped(), vec![(1, "debug measurement")]);
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown` and turn it into a
//! component: `cargo component build --release` does both. The crate needs no WIT
//! files and no `wit-bindgen` dependency of its own; this SDK carries the contract,
//! `boulder:transform@0.1.0`.
//!
//! A guest has no capabilities beyond [`log`]: no files, sockets or clock. Panics
//! are reported by the host with their message, and the batch is dead-lettered.
//!
//! The SDK trusts the batches it is given: the host checks every batch it passes to
//! a guest (spans, indices, codes, UTF-8; `codec::check`), so a [`Point`] reads its
//! strings without checking them again, which is a tenth of a simple transform's
//! time in the sandbox. Everything a transform can do through [`Point`] keeps a
//! batch valid; [`transform_batch`], for running a transform natively, is `unsafe`
//! for that reason, and [`testing::run`] checks its batch first.
#![deny(missing_docs)]

// Lets the generated bindings name this crate by the same path from inside and
// outside of it.
extern crate self as boulder_guest_sdk;

pub mod log;
mod params;
mod point;
mod run;
pub mod scan;
pub mod testing;

pub use boulder_batch::{FieldValue, Format};
pub use params::Params;
pub use point::Point;
pub use run::{transform_batch, Rejection, Verdict};

/// A transform: one stage of a tenant's chain, or a router.
///
/// Boulder creates instances as it needs them (one per concurrent batch, replaced
/// after a failure), calling [`Transform::init`] on each, then calls
/// [`Transform::process`] for every point of every batch, in order.
pub trait Transform: Sized + 'static {
    /// Builds the transform from the stage's `params` in the Boulder config.
    ///
    /// An error refuses the config: say which parameter is wrong and what is
    /// expected. The host shows the message when it loads the config.
    fn init(params: Params) -> Result<Self, String>;

    /// Decides about one point, changing it in place if it keeps it.
    ///
    /// To turn one point into several, call [`Point::split`]. A router sets the
    /// tenant with [`Point::set_tenant`], splitting for each further tenant.
    fn process(&mut self, point: &mut Point<'_>) -> Verdict;
}

/// Exports a [`Transform`] as the component's `boulder:transform/stage` interface.
///
/// Call it once, at the top level of the crate, with the transform's type.
#[macro_export]
macro_rules! export {
    ($transform:ty) => {
        const _: () = {
            struct BoulderStage;

            impl $crate::__private::bindings::exports::boulder::transform::stage::Guest
                for BoulderStage
            {
                fn init(
                    params: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$transform>(params)
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<
                    $crate::__private::bindings::exports::boulder::transform::stage::Output,
                    $crate::__private::bindings::exports::boulder::transform::stage::Error,
                > {
                    // SAFETY: the host passes only batches that `codec::check`
                    // accepts (the contract: wit/transform.wit, `process`).
                    unsafe { $crate::__private::process::<$transform>(batch) }
                }
            }

            // Only a wasm build exports the component's functions: their names
            // (`boulder:transform/stage@0.1.0#process`) are not valid native symbols,
            // and native builds exist only to run tests.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::bindings::__export_transform!(
                BoulderStage with_types_in $crate::__private::bindings
            );
        };
    };
}

#[doc(hidden)]
pub mod __private {
    //! What [`export!`](crate::export) expands to. Not part of the API.

    pub use wit_bindgen;

    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "transform",
            pub_export_macro: true,
            export_macro_name: "__export_transform",
            default_bindings_module: "boulder_guest_sdk::__private::bindings",
            runtime_path: "boulder_guest_sdk::__private::wit_bindgen::rt",
        });
    }

    use crate::run::{process_bytes, ProcessError};
    use crate::{Params, Transform, Verdict};
    use bindings::exports::boulder::transform::stage;
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        // A component instance is single-threaded and called by one host thread at
        // a time, so the instance's transform lives here between calls.
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// `stage.init`: builds the transform and keeps it for `process`.
    pub fn init<T: Transform>(params: String) -> Result<(), String> {
        crate::log::install_panic_hook();
        let transform = T::init(Params::from_json(params))?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(transform)));
        Ok(())
    }

    /// `stage.process`: runs the transform over one encoded batch.
    ///
    /// # Safety
    /// `batch` must be valid, as `codec::check` checks: see `run::process_bytes`.
    pub unsafe fn process<T: Transform>(batch: Vec<u8>) -> Result<stage::Output, stage::Error> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let transform = slot
                .as_mut()
                .and_then(|t| t.downcast_mut::<T>())
                .ok_or_else(|| stage::Error::Other("process called before init".into()))?;
            // SAFETY: the caller promises a valid batch.
            let (batch, rejections) =
                unsafe { process_bytes(transform, batch) }.map_err(|e| match e {
                    ProcessError::InvalidBatch(e) => stage::Error::InvalidBatch(e.to_string()),
                })?;
            let rejections = rejections
                .into_iter()
                .map(|r| stage::Rejection {
                    point: r.point,
                    verdict: match r.verdict {
                        Verdict::DeadLetter(_) => stage::Verdict::DeadLetter,
                        _ => stage::Verdict::Drop,
                    },
                    reason: r.verdict.reason().to_owned(),
                })
                .collect();
            Ok(stage::Output { batch, rejections })
        })
    }
}
