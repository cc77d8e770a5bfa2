//! Per-thread copies of the cached value: what a cache hit reads.
//!
//! A hit hands out a clone of the cached value, and the clone writes reference counts (an
//! identity of credentials has several). Were every thread to clone one shared copy, each hit
//! would pull the cache lines of those counts away from the other cores. So each thread keeps
//! a copy of the current value of every cache it reads ([`Copies`], at most [`MAX_COPIES`]),
//! made on that thread with [`Expiring::replicate`] (its own reference counts and
//! allocations), together with the entry's times. A hit then reads one shared word, the
//! cache's [`Generation`], and writes nothing shared; the clock is still read on every hit
//! and checked against the copy's own expiry, so nothing expired is served even if the
//! refresh task never runs.
//!
//! A copy belongs to one generation of one cache: every store bumps the generation and the
//! next hit on each thread replaces that thread's copy. A copy of a dropped cache is released
//! at the thread's next miss (or when the thread ends); copies of credentials are zeroed when
//! released, like the credentials themselves.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::LocalKey;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Expiring, Times};

/// Caches a thread keeps copies for. A thread reading more caches than this serves the
/// others from their shared copy.
pub(crate) const MAX_COPIES: usize = 8;

/// A cache's generation: bumped by every store, [`Generation::CLOSED`] once the cache is
/// dropped. The copies hold it, which keeps its address (their key) from being reused.
#[derive(Debug, Default)]
pub(crate) struct Generation(AtomicU64);

impl Generation {
    const CLOSED: u64 = u64::MAX;

    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// After a store: copies of earlier generations are no longer served.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// The cache is gone: its copies are released at their thread's next miss.
    pub(crate) fn close(&self) {
        self.0.store(Self::CLOSED, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.current() == Self::CLOSED
    }
}

/// One thread's copies of one value type (a `thread_local!` per type; see
/// [`Expiring::copies`]).
#[derive(Debug)]
pub(crate) struct Copies<T> {
    slots: Vec<Copy<T>>,
}

#[derive(Debug)]
pub(crate) struct Copy<T> {
    cache: Arc<Generation>,
    generation: u64,
    pub(crate) times: Times,
    pub(crate) value: T,
    /// When this thread next records an access for idle detection.
    pub(crate) record_due: Cell<SystemTime>,
}

impl<T> Default for Copies<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Copies<T> {
    pub(crate) const fn new() -> Self {
        Self { slots: Vec::new() }
    }
}

/// Runs `serve` on this thread's copy of `cache`'s value at `generation`, if it has one.
pub(crate) fn read<T: Expiring, R>(
    cache: &Arc<Generation>,
    generation: u64,
    serve: impl FnOnce(&Copy<T>) -> R,
) -> Option<R> {
    with(T::copies(), |copies| {
        let copies = copies.try_borrow().ok()?;
        let copy = copies
            .slots
            .iter()
            .find(|copy| copy.generation == generation && Arc::ptr_eq(&copy.cache, cache))?;
        Some(serve(copy))
    })
}

/// Keeps a copy of `value` for this thread's next hits on `cache`, replacing its older one and
/// releasing copies of dropped caches. Does nothing when the thread already keeps
/// [`MAX_COPIES`] copies of live caches.
pub(crate) fn keep<T: Expiring>(cache: &Arc<Generation>, generation: u64, times: Times, value: &T) {
    with(T::copies(), |copies| {
        let mut copies = copies.try_borrow_mut().ok()?;
        copies
            .slots
            .retain(|copy| !Arc::ptr_eq(&copy.cache, cache) && !copy.cache.is_closed());
        if copies.slots.len() < MAX_COPIES {
            copies.slots.push(Copy {
                cache: cache.clone(),
                generation,
                times,
                value: value.replicate(),
                record_due: Cell::new(UNIX_EPOCH),
            });
        }
        Some(())
    });
}

/// Runs `f` on this thread's copies; `None` while the thread is being torn down.
fn with<T: 'static, R>(
    key: &'static LocalKey<RefCell<Copies<T>>>,
    f: impl FnOnce(&RefCell<Copies<T>>) -> Option<R>,
) -> Option<R> {
    key.try_with(f).ok().flatten()
}
