//! A flood of INVITEs from strangers (sources that match no trunk) at the
//! real `sbc`, optionally while stock `sipp` places legitimate calls
//! through it: CPU per flood packet, how many answers the strangers got
//! (BRIEF §8: a few a second, the SBC is no reflector), and whether the
//! legitimate calls still complete.
//!
//! `cargo build --release -p sbc-controlplane -p sbc-bench &&
//!  target/release/flood --pps 100000 --seconds 10 --calls-rate 100`
use std::net::UdpSocket;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use clap::Parser;
use sbc_bench::harness::{
    Proc, sbc_config, scenario, scrape, sipp_stat, spawn_sbc, spawn_sipp, wait_healthy,
};
use sbc_bench::procstat::tree_cpu_seconds;

#[derive(Parser, Debug)]
#[command(about = "A stranger INVITE flood at the sbc: CPU per packet, answers, calls kept")]
struct Args {
    /// Flood packets per second (all sources together).
    #[arg(long, default_value_t = 100_000)]
    pps: u32,
    /// Seconds of flood.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Distinct stranger source addresses (127.N.1.x, 127.N.2.x, ...).
    #[arg(long, default_value_t = 256)]
    sources: u16,
    /// Legitimate calls per second placed by sipp meanwhile (0: none).
    #[arg(long, default_value_t = 100)]
    calls_rate: u32,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Second octet of the loopback network used (127.N.0.0/16).
    #[arg(long, default_value_t = 203)]
    net: u8,
    #[arg(long, default_value = "target/release/sbc")]
    sbc: PathBuf,
}

fn fail(msg: &str) -> ! {
    sbc_bench::harness::fail("flood", msg)
}

fn sipp(dir: &Path, args: &[String]) -> Proc {
    spawn_sipp(dir, args).unwrap_or_else(|e| {
        fail(&format!(
            "cannot start sipp (apt-get install sip-tester): {e}"
        ))
    })
}

/// The value of one sample in an OpenMetrics text (0 when absent).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let a = Args::parse();
    let ip = |h: u8| format!("127.{}.0.{h}", a.net);
    let work = std::env::temp_dir().join(format!("sbc-flood-{}", std::process::id()));
    for d in ["sbc", "uas", "uac"] {
        std::fs::create_dir_all(work.join(d)).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let cfg = work.join("sbc/bench.toml");
    std::fs::write(
        &cfg,
        sbc_config(&ip(1), &ip(10), &ip(20), a.shards, None, ""),
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    let server = spawn_sbc(&a.sbc, &cfg)
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", a.sbc.display())));
    let metrics = format!("{}:9090", ip(1));
    if !wait_healthy(&metrics, Duration::from_secs(10)) {
        fail("sbc did not start");
    }
    let pid = server.0.id();
    let sbc = format!("{}:5060", ip(1));

    // The strangers: one socket each, answers left in their buffers.
    let sockets: Vec<UdpSocket> = (0..a.sources)
        .map(|i| {
            // A fixed port: an ephemeral one could take one sipp binds.
            let addr = format!("127.{}.{}.{}:5060", a.net, 1 + i / 250, 1 + i % 250);
            UdpSocket::bind(&addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")))
        })
        .collect();
    let invites: Vec<Vec<u8>> = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let me = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
            format!(
                "INVITE sip:+15550100@{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfl{i}\r\nMax-Forwards: 70\r\nFrom: <sip:x@{me}>;tag=f{i}\r\nTo: <sip:+15550100@{sbc}>\r\nCall-ID: flood-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        })
        .collect();

    let calls = u64::from(a.calls_rate) * u64::from(a.seconds);
    let s = |v: &str| v.to_owned();
    let legit = (calls > 0).then(|| {
        let uas = sipp(
            &work.join("uas"),
            &[
                s("-sf"),
                scenario("uas_answer.xml"),
                s("-i"),
                ip(20),
                s("-p"),
                s("5060"),
                s("-mp"),
                s("40000"),
                s("-cp"),
                s("40010"),
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        let uac = sipp(
            &work.join("uac"),
            &[
                s("-sf"),
                scenario("uac_basic.xml"),
                s("-s"),
                s("+15550100"),
                s("-i"),
                ip(10),
                s("-p"),
                s("5060"),
                sbc.clone(),
                s("-r"),
                a.calls_rate.to_string(),
                s("-m"),
                calls.to_string(),
                s("-d"),
                s("500"),
                s("-mp"),
                s("40020"),
                s("-cp"),
                s("40030"),
            ],
        );
        (uas, uac)
    });

    let cpu0 = tree_cpu_seconds(pid);
    let start = Instant::now();
    let per_tick = u64::from(a.pps / 1000).max(1);
    let ticks = u64::from(a.seconds) * 1000;
    let mut sent = 0u64;
    let mut next = 0usize;
    for t in 0..ticks {
        for _ in 0..per_tick {
            let k = next % sockets.len();
            if sockets[k].send_to(&invites[k], &sbc).is_ok() {
                sent += 1;
            }
            next += 1;
        }
        let due = start + Duration::from_millis(t + 1);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let cpu = tree_cpu_seconds(pid) - cpu0;

    let mut answers = 0u64;
    let mut buf = [0u8; 4096];
    for s in &sockets {
        let _ = s.set_nonblocking(true);
        while s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    let (ok, failed) = match legit {
        Some((uas, mut uac)) => {
            let limit = Instant::now() + Duration::from_secs(u64::from(a.seconds) * 3 + 60);
            while !matches!(uac.0.try_wait(), Ok(Some(_))) && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(200));
            }
            drop(uas);
            (
                sipp_stat(&work.join("uac"), "SuccessfulCall(C)"),
                sipp_stat(&work.join("uac"), "FailedCall(C)"),
            )
        }
        None => (0, 0),
    };
    let text = scrape(&metrics).unwrap_or_default();
    let refused = sample(
        &text,
        "sbc_requests_rejected_total{reason=\"unknown_source\"}",
    );
    let silenced = sample(
        &text,
        "sbc_messages_discarded_total{reason=\"stranger_rate_limited\"}",
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&work);

    let offered = sent as f64 / wall;
    println!(
        "| flood packets/s offered | seen by the sbc | dropped silently | answers to strangers (per s) | sbc CPU % of a core | CPU ns per flood packet | legit calls ok / failed |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {offered:.0} | {refused:.0} of {sent} | {silenced:.0} | {answers} ({:.1}) | {:.1} | {:.0} | {ok} / {failed} |",
        answers as f64 / wall,
        cpu / wall * 100.0,
        cpu * 1e9 / refused.max(1.0),
    );
    println!(
        "{{\"pps_offered\":{offered:.0},\"sent\":{sent},\"seen\":{refused},\"silenced\":{silenced},\"answers\":{answers},\"cpu_s\":{cpu:.3},\"wall_s\":{wall:.2},\"calls_ok\":{ok},\"calls_failed\":{failed}}}"
    );
}
