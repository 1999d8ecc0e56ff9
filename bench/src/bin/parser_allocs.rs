//! Messages per second and heap allocations per message for the SIP
//! parser on a typical INVITE / 200 / BYE (single thread, counting
//! allocator). `cargo run --release -p sbc-bench --bin parser_allocs`
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sbc_bench::MESSAGES;
use sbc_core::sip::{Message, Request, Response};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn parse(raw: &[u8]) -> usize {
    match Message::parse(raw) {
        Ok(m) if m.is_request() => Request::parse(m).map_or(0, |r| r.call_id.len()),
        Ok(m) => Response::parse(m).map_or(0, |r| r.call_id.len()),
        Err(_) => 0,
    }
}

fn main() {
    const N: u64 = 2_000_000;
    println!("| message | msgs/s (1 core) | ns/msg | allocations/msg |");
    println!("|---|---|---|---|");
    for (name, text) in MESSAGES {
        let raw = text.as_bytes();
        for _ in 0..10_000 {
            black_box(parse(black_box(raw)));
        }
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        for _ in 0..N {
            black_box(parse(black_box(raw)));
        }
        let dt = t0.elapsed();
        let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
        let ns = dt.as_nanos() as f64 / N as f64;
        println!(
            "| {name} ({} bytes) | {:.0} | {ns:.0} | {:.2} |",
            raw.len(),
            1e9 / ns,
            allocs as f64 / N as f64
        );
    }
}
