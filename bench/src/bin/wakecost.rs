//! What a thread's wake-up costs on this machine, apart from any sbc code:
//! the CPU time the scheduler charges a thread per wake-up, by how long it
//! slept, and what a send charges its sender when it wakes a receiver
//! sleeping on another CPU. On a virtual machine both depend on how long
//! the CPU was idle, which is why a shard's CPU per call at a low call
//! rate is mostly the cost of its wake-ups (bench/results/2026-12-06-vm-wakeups.md).
//!
//!   wakecost sleep [--cpu N] [--seconds S]
//!   wakecost peer  [--cpu N] [--peer-cpu M] [--seconds S]
//!   wakecost warm  --cpu N --period-us P --seconds S
//!
//! `warm` only naps: run beside a benchmark, it keeps CPU N from idling
//! longer than P (its own CPU time is not the benchmark's).
//! Run time and wake-up counts come from /proc/thread-self/schedstat
//! (nanoseconds on the CPU, times scheduled in), not clock ticks.

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// CPU time per wake-up of a thread that sleeps for each of several
    /// periods in turn.
    Sleep {
        #[arg(long, default_value_t = 0)]
        cpu: usize,
        /// Seconds per period.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// CPU time per round of a thread that sleeps 4 ms, then sends 0, 1
    /// or 8 datagrams to a receiver blocked on another CPU.
    Peer {
        #[arg(long, default_value_t = 0)]
        cpu: usize,
        #[arg(long, default_value_t = 1)]
        peer_cpu: usize,
        /// Seconds per case.
        #[arg(long, default_value_t = 1.5)]
        seconds: f64,
    },
    /// Naps of `period_us` on `cpu` for `seconds`.
    Warm {
        #[arg(long)]
        cpu: usize,
        #[arg(long, default_value_t = 200)]
        period_us: u64,
        #[arg(long)]
        seconds: f64,
    },
}

/// (nanoseconds on the CPU, times scheduled in) of the calling thread.
fn schedstat() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    let run = f.next().unwrap_or(0);
    let _wait = f.next();
    (run, f.next().unwrap_or(0))
}

/// Pins the calling thread to `cpu` (ignored when that fails: the
/// figures then say so by their spread).
fn pin(cpu: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

/// Runs `round` until `seconds` pass; µs of CPU per round and rounds.
fn per_round(seconds: f64, mut round: impl FnMut()) -> (f64, u64) {
    let (run0, _) = schedstat();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut rounds = 0u64;
    while Instant::now() < end {
        round();
        rounds += 1;
    }
    let (run1, _) = schedstat();
    (
        run1.saturating_sub(run0) as f64 / 1e3 / rounds.max(1) as f64,
        rounds,
    )
}

fn sleep_costs(cpu: usize, seconds: f64) {
    pin(cpu);
    println!("| sleep per wake-up | wake-ups | CPU µs per wake-up | CPU ms per second |");
    println!("|---|---|---|---|");
    for us in [100u64, 250, 500, 1_000, 2_000, 4_000, 10_000, 50_000] {
        let (_, w0) = schedstat();
        let (per, rounds) = per_round(seconds, || thread::sleep(Duration::from_micros(us)));
        let (_, w1) = schedstat();
        println!(
            "| {:.2} ms | {} | {per:.1} | {:.1} |",
            us as f64 / 1e3,
            w1.saturating_sub(w0),
            per * rounds as f64 / 1e3 / seconds
        );
    }
}

fn peer_costs(cpu: usize, peer_cpu: usize, seconds: f64) -> std::io::Result<()> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let to = rx.local_addr()?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let total = Duration::from_secs_f64(seconds * 3.0 + 1.0);
    let receiver = thread::spawn(move || {
        pin(peer_cpu);
        let mut buf = [0u8; 2048];
        let end = Instant::now() + total;
        while Instant::now() < end {
            let _ = rx.recv(&mut buf);
        }
    });
    pin(cpu);
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let payload = [b'x'; 600];
    thread::sleep(Duration::from_millis(100));
    println!("| datagrams sent after each 4 ms sleep | CPU µs per round |");
    println!("|---|---|");
    for k in [0usize, 1, 8] {
        let (per, _) = per_round(seconds, || {
            thread::sleep(Duration::from_millis(4));
            for _ in 0..k {
                let _ = tx.send_to(&payload, to);
            }
        });
        println!("| {k} | {per:.1} |");
    }
    let _ = receiver.join();
    Ok(())
}

fn main() -> std::io::Result<()> {
    match Args::parse().what {
        What::Sleep { cpu, seconds } => sleep_costs(cpu, seconds),
        What::Peer {
            cpu,
            peer_cpu,
            seconds,
        } => peer_costs(cpu, peer_cpu, seconds)?,
        What::Warm {
            cpu,
            period_us,
            seconds,
        } => {
            pin(cpu);
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < end {
                thread::sleep(Duration::from_micros(period_us));
            }
        }
    }
    Ok(())
}
