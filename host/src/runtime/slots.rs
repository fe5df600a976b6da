//! The engine's instance slots (`runtime.max_instances`), shared by every stage.
//!
//! Each stage keeps idle instances for reuse, and an idle instance holds a slot.
//! When the pool has no free slot, the slot is the host's to find, never a guest's
//! failure: first an idle instance of any stage is given up, then the stage waits
//! (bounded) for a running call to give its instance back. Only when the wait runs
//! out does the call fail, with [`super::Failure::NoInstance`], which is not
//! counted against the tenant.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a call waits for a slot when every slot holds a running instance:
/// a call holds one for at most its deadline, so with fewer slots than workers a
/// slot is usually free well within this.
pub const WAIT: Duration = Duration::from_secs(5);

/// What holds idle instances that can be given up to free slots.
pub(crate) trait Idle: Send + Sync {
    /// Gives up one idle instance, if there is one; true if one was.
    fn give_up_one(&self) -> bool;
}

/// Every stage's idle instances, and a signal for instances given back.
#[derive(Default)]
pub(crate) struct Slots {
    idle: Mutex<Vec<Weak<dyn Idle>>>,
    // Stages waiting for a slot; while there are none, giving an instance back
    // costs an atomic load.
    waiting: AtomicUsize,
    // Bumped whenever an instance is given back (idle, or dropped) while a
    // stage waits.
    released: Mutex<u64>,
    released_signal: Condvar,
    // Where the last search for an idle instance stopped, so that stages take
    // turns giving theirs up.
    cursor: Mutex<usize>,
}

impl Slots {
    /// Registers a stage's idle instances.
    pub(crate) fn register(&self, idle: Weak<dyn Idle>) {
        let mut all = self.idle.lock().expect("poisoned");
        all.retain(|i| i.strong_count() > 0);
        all.push(idle);
    }

    /// Gives up one idle instance of some stage; false if none is idle anywhere.
    pub(crate) fn give_up_idle(&self) -> bool {
        let stages: Vec<Arc<dyn Idle>> = {
            let all = self.idle.lock().expect("poisoned");
            all.iter().filter_map(Weak::upgrade).collect()
        };
        if stages.is_empty() {
            return false;
        }
        let start = {
            let mut cursor = self.cursor.lock().expect("poisoned");
            *cursor = (*cursor + 1) % stages.len();
            *cursor
        };
        (0..stages.len()).any(|k| stages[(start + k) % stages.len()].give_up_one())
    }

    /// An instance was given back, to its stage's idle ones or dropped (its
    /// slot freed): a waiting stage may now find a slot.
    pub(crate) fn released(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        *self.released.lock().expect("poisoned") += 1;
        self.released_signal.notify_all();
    }

    /// Announces a stage looking for a slot, until the guard is dropped: read the
    /// generation and try only after this, so that an instance given back
    /// meanwhile is not missed.
    pub(crate) fn looking(&self) -> Looking<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Looking(self)
    }

    /// How many instances have been given back while stages waited: read before
    /// trying for a slot, and handed to [`Slots::wait`].
    pub(crate) fn generation(&self) -> u64 {
        *self.released.lock().expect("poisoned")
    }

    /// Waits until an instance is given back after `generation` was read, or
    /// `deadline` passes; false if it passed.
    pub(crate) fn wait(&self, _looking: &Looking<'_>, generation: u64, deadline: Instant) -> bool {
        let released = self.released.lock().expect("poisoned");
        let left = deadline.saturating_duration_since(Instant::now());
        let (released, _) = self
            .released_signal
            .wait_timeout_while(released, left, |now| *now == generation)
            .expect("poisoned");
        *released != generation
    }
}

/// A stage looking for a slot ([`Slots::looking`]).
pub(crate) struct Looking<'a>(&'a Slots);

impl Drop for Looking<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Pool(AtomicUsize);

    impl Idle for Pool {
        fn give_up_one(&self) -> bool {
            self.0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        }
    }

    #[test]
    fn idle_instances_of_every_stage_are_given_up_in_turn() {
        let slots = Slots::default();
        let a: Arc<dyn Idle> = Arc::new(Pool(AtomicUsize::new(1)));
        let b: Arc<dyn Idle> = Arc::new(Pool(AtomicUsize::new(2)));
        slots.register(Arc::downgrade(&a));
        slots.register(Arc::downgrade(&b));
        assert!(slots.give_up_idle());
        assert!(slots.give_up_idle());
        assert!(slots.give_up_idle());
        assert!(!slots.give_up_idle(), "all three are gone");
        drop(a);
        drop(b);
        assert!(!slots.give_up_idle());
    }

    #[test]
    fn a_wait_ends_when_an_instance_is_given_back_or_at_its_deadline() {
        let slots = Arc::new(Slots::default());
        slots.released();
        assert_eq!(slots.generation(), 0, "nobody waits: nothing to say");
        let looking = slots.looking();
        let started = Instant::now();
        let seen = slots.generation();
        assert!(!slots.wait(&looking, seen, started + Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let giving_back = slots.clone();
        std::thread::spawn(move || giving_back.released())
            .join()
            .unwrap();
        // Given back before the wait began, after the generation was read: not missed.
        assert!(slots.wait(&looking, seen, Instant::now() + Duration::from_secs(30)));
    }
}
