//! Shared by the benches: a counting allocator, and paired measurement against the baseline.
//!
//! Absolute times on a shared machine drift by 10–20% within minutes, so a ratio of two
//! benchmarks measured a minute apart says little. [`Paired`] times every sample of a subject
//! together with a sample of the baseline over the same number of iterations, immediately before
//! it, and reports the median of those per-sample ratios: drift cancels out.
#![allow(dead_code, unreachable_pub, missing_docs, unsafe_code)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counts live heap bytes and allocation calls, so a bench can report bytes per key and prove
/// that the hot path does not allocate.
pub struct Counting;

pub static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
pub static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Paired samples: per subject, the (baseline, subject) times of each criterion sample.
pub struct Paired<B> {
    baseline: B,
    samples: Mutex<BTreeMap<&'static str, Vec<(Duration, Duration)>>>,
}

impl<B: FnMut()> Paired<B> {
    pub fn new(baseline: B) -> Self {
        Self { baseline, samples: Mutex::new(BTreeMap::new()) }
    }

    /// For criterion's `iter_custom`: times `iters` runs of the baseline, then of `subject`,
    /// records both, and returns the subject's time.
    pub fn measure(&mut self, name: &'static str, iters: u64, mut subject: impl FnMut()) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            (self.baseline)();
        }
        let base = start.elapsed();
        let start = Instant::now();
        for _ in 0..iters {
            subject();
        }
        let took = start.elapsed();
        self.samples.lock().unwrap().entry(name).or_default().push((base, took));
        took
    }

    /// The median over samples of subject time / baseline time.
    pub fn ratio(&self, name: &str) -> Option<f64> {
        let samples = self.samples.lock().unwrap();
        let mut ratios: Vec<f64> =
            samples.get(name)?.iter().map(|(b, s)| s.as_secs_f64() / b.as_secs_f64().max(1e-12)).collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        Some(ratios[ratios.len() / 2])
    }

    /// The median time per iteration of the subject, in nanoseconds (for orientation only).
    pub fn nanos(&self, name: &str, iters_per_sample: impl Fn(usize) -> u64) -> Option<f64> {
        let samples = self.samples.lock().unwrap();
        let mut ns: Vec<f64> = samples
            .get(name)?
            .iter()
            .enumerate()
            .map(|(i, (_, s))| s.as_nanos() as f64 / iters_per_sample(i) as f64)
            .collect();
        ns.sort_by(f64::total_cmp);
        ns.get(ns.len() / 2).copied()
    }
}

/// Prints one row of the ratio table.
pub fn row(name: &str, ratio: Option<f64>, target: &str) {
    match ratio {
        Some(r) => println!("{name:<40} {r:>7.3}x  {target}"),
        None => println!("{name:<40} {:>8}  {target}", "-"),
    }
}

/// Keeps a value alive and opaque to the optimiser.
pub fn keep<T>(value: T) {
    black_box(value);
}
