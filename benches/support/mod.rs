//! Shared by the benches: a counting allocator, a deterministic key population, and the ratio
//! report that turns criterion's estimates into multiples of the in-run baseline.
#![allow(dead_code, unreachable_pub, missing_docs, unsafe_code)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

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

/// criterion's output directory, as criterion itself chooses it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("criterion")
}

/// The median estimate of one benchmark in nanoseconds, from criterion's `estimates.json`.
pub fn median_ns(group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir().join(group).join(bench).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Prints every benchmark of `group` as a multiple of `baseline`, with its target if any.
pub fn print_ratios(group: &str, baseline: &str, rows: &[(&str, &str)]) {
    let Some(base) = median_ns(group, baseline) else {
        eprintln!("ratio report: no estimate for {group}/{baseline} (was it filtered out?)");
        return;
    };
    println!();
    println!("ratios to {baseline} (median, same run)");
    println!("{:<40} {:>8}  target", "benchmark", "ratio");
    for (bench, target) in rows {
        match median_ns(group, bench) {
            Some(ns) => println!("{bench:<40} {:>7.3}x  {target}", ns / base),
            None => println!("{bench:<40} {:>8}  {target}", "-"),
        }
    }
}
