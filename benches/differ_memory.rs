//! Peak heap of one differ run (read both objects, diff, write the output) against the size of its two
//! inputs, over the real-object corpus. Prints one line per pair and the worst ratio; the goal is at
//! most 3x. The input buffers themselves are counted, as they are in `klpx diff`.
//! `cargo bench --bench differ_memory -- FILTER` measures only the pairs whose name contains FILTER.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "differ.rs"]
#[allow(dead_code)]
mod differ;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let mut pairs = differ::corpus_pairs_matching(&filter);
    pairs.extend(differ::newer_corpora_pairs(&filter));
    let mut worst: (f64, String) = (0.0, String::new());
    let mut total_in = 0usize;
    let mut total_peak = 0usize;
    for (name, orig, patched) in pairs {
        let input = orig.len() + patched.len();
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        // Copy the inputs as `klpx diff` reads them, inside the measured window.
        let (a, b) = (orig.clone(), patched.clone());
        std::hint::black_box(differ::run_pair(&a, &b));
        drop((a, b));
        let peak = PEAK.load(Ordering::Relaxed) - base;
        let ratio = peak as f64 / input as f64;
        println!(
            "{name:45} input {:8} B  peak heap {:8} B  {ratio:5.2}x",
            input, peak
        );
        total_in += input;
        total_peak = total_peak.max(peak);
        if ratio > worst.0 {
            worst = (ratio, name);
        }
    }
    println!(
        "worst: {:.2}x ({}); largest peak {} B; all inputs {} B",
        worst.0, worst.1, total_peak, total_in
    );
}
