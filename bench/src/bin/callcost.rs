//! Whole-system cost of a call: the real `sbc` between two stock `sipp`
//! instances on loopback, at a fixed rate, measuring the CPU time (utime +
//! stime from /proc) the `sbc` process spends per completed call, next to
//! what each sipp spends in the same run.
//!
//! `cargo build --release -p sbc-controlplane -p sbc-bench &&
//!  target/release/callcost --rate 1000 --seconds 30 --shards 1`
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use sbc_bench::harness::{
    DATAGRAMS_PER_CALL, Proc, relay_floor_ns, sbc_config, scenario, sipp_stat, spawn_kamailio,
    spawn_sbc, spawn_sipp, wait_healthy, wait_label,
};
use sbc_bench::procstat::{cpu_seconds, cpu_split, status_kb, tree_cpu_seconds};

#[derive(Parser, Debug)]
#[command(about = "CPU microseconds per call of the sbc process under a fixed sipp load")]
struct Args {
    /// Calls per second offered by the sipp caller.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// Data-plane shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Call hold time in milliseconds (sipp -d).
    #[arg(long, default_value_t = 1000)]
    hold_ms: u32,
    /// What sits between the two sipp instances.
    #[arg(long, value_enum, default_value_t = Target::Sbc)]
    target: Target,
    /// The sbc binary.
    #[arg(long, default_value = "target/release/sbc")]
    sbc: PathBuf,
    /// The kamailio binary (Debian package kamailio), for --target kamailio.
    #[arg(long, default_value = "/usr/sbin/kamailio")]
    kamailio: PathBuf,
    /// Wake-up coalescing of the shard loops, media or not
    /// (shards.batch_wait_us and media_batch_wait_us; default: the sbc's own).
    #[arg(long)]
    batch_wait_us: Option<u32>,
    /// Second octet of the loopback network used (127.N.0.0/24).
    #[arg(long, default_value_t = 200)]
    net: u8,
    /// Write Markdown and JSON results into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also measure the kernel floor in the same run: the batched minimal
    /// relay (`relaycost --targets batched`) at the call's datagram rate.
    /// A basic call is 13 datagrams (6.5 received and 6.5 sent per call
    /// on average), so the floor per call is 6.5 relayed packets.
    #[arg(long)]
    floor: bool,
    /// The relaycost binary, for --floor.
    #[arg(long, default_value = "target/release/relaycost")]
    relaycost: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// This project's sbc (B2BUA).
    Sbc,
    /// Kamailio as a stateful proxy with rr, dialog and topoh
    /// (bench/kamailio/proxy.cfg).
    Kamailio,
}

fn sipp(dir: &Path, args: &[String]) -> Proc {
    spawn_sipp(dir, args).unwrap_or_else(|e| {
        fail(&format!(
            "cannot start sipp (apt-get install sip-tester): {e}"
        ))
    })
}

fn fail(msg: &str) -> ! {
    sbc_bench::harness::fail("callcost", msg)
}

fn main() {
    let a = Args::parse();
    let ip = |h: u8| format!("127.{}.0.{h}", a.net);
    let calls = u64::from(a.rate) * u64::from(a.seconds);
    let work = std::env::temp_dir().join(format!("sbc-callcost-{}", std::process::id()));
    for d in ["sbc", "uas", "uac"] {
        std::fs::create_dir_all(work.join(d)).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let config = sbc_config(&ip(1), &ip(10), &ip(20), a.shards, a.batch_wait_us, "");
    let cfg_path = work.join("sbc/bench.toml");
    std::fs::write(&cfg_path, config).unwrap_or_else(|e| fail(&e.to_string()));
    let server = match a.target {
        Target::Sbc => spawn_sbc(&a.sbc, &cfg_path).unwrap_or_else(|e| {
            fail(&format!(
                "cannot start {}: {e} (build it with cargo build --release)",
                a.sbc.display()
            ))
        }),
        Target::Kamailio => {
            let template = include_str!("../../kamailio/proxy.cfg");
            let kcfg = work.join("sbc/kamailio.cfg");
            std::fs::write(
                &kcfg,
                template
                    .replace("@LISTEN@", &ip(1))
                    .replace("@TARGET@", &ip(20)),
            )
            .unwrap_or_else(|e| fail(&e.to_string()));
            spawn_kamailio(&a.kamailio, &kcfg, &work.join("sbc"), 256).unwrap_or_else(|e| {
                fail(&format!(
                    "cannot start {} (apt-get install kamailio): {e}",
                    a.kamailio.display()
                ))
            })
        }
    };
    let pid = server.0.id();
    match a.target {
        Target::Sbc => {
            let metrics = format!("{}:9090", ip(1));
            if !wait_healthy(&metrics, Duration::from_secs(10)) {
                fail("sbc did not start");
            }
        }
        Target::Kamailio => std::thread::sleep(Duration::from_millis(1500)),
    }
    let s = |v: &str| v.to_owned();
    let uas = sipp(
        &work.join("uas"),
        &[
            s("-sf"),
            scenario("uas_answer.xml"),
            s("-i"),
            ip(20),
            s("-p"),
            s("5060"),
            s("-m"),
            calls.to_string(),
            s("-mp"),
            s("40000"),
            s("-cp"),
            s("40010"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = tree_cpu_seconds(pid);
    let (user0, _) = cpu_split(pid);
    let uas_cpu0 = cpu_seconds(uas.0.id());
    let start = Instant::now();
    let mut uac = sipp(
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
            format!("{}:5060", ip(1)),
            s("-r"),
            a.rate.to_string(),
            s("-m"),
            calls.to_string(),
            s("-d"),
            a.hold_ms.to_string(),
            s("-mp"),
            s("40020"),
            s("-cp"),
            s("40030"),
        ],
    );
    let mut uac_cpu = 0.0;
    let mut uas_cpu = 0.0;
    let mut cpu1 = cpu0;
    loop {
        // Sample while the processes exist (a finished child's /proc entry
        // keeps its totals until it is reaped).
        uac_cpu = f64::max(uac_cpu, cpu_seconds(uac.0.id()));
        uas_cpu = f64::max(uas_cpu, cpu_seconds(uas.0.id()) - uas_cpu0);
        cpu1 = f64::max(cpu1, tree_cpu_seconds(pid));
        if let Ok(Some(_)) = uac.0.try_wait() {
            break;
        }
        if start.elapsed() > Duration::from_secs(u64::from(a.seconds) * 3 + 60) {
            fail("sipp did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = start.elapsed().as_secs_f64();
    let (user1, _) = cpu_split(pid);
    let rss_kb = status_kb(pid, "VmRSS:");
    let hwm_kb = status_kb(pid, "VmHWM:");
    let ok = sipp_stat(&work.join("uac"), "SuccessfulCall(C)");
    let failed = sipp_stat(&work.join("uac"), "FailedCall(C)");
    drop(uas);
    drop(server);
    let per_call = |cpu: f64| {
        if ok > 0 {
            cpu * 1e6 / ok as f64
        } else {
            f64::NAN
        }
    };
    let sbc_us = per_call(cpu1 - cpu0);
    let sbc_user_us = per_call(user1 - user0);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| rate (calls/s) | shards | batch µs | calls ok | failed | wall s | sbc CPU µs/call | of which user | sipp UAC µs/call | sipp UAS µs/call | sbc/UAC ratio | sbc RSS MiB (peak) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| {:?} | {} | {} | {} | {ok} | {failed} | {wall:.1} | {sbc_us:.1} | {sbc_user_us:.1} | {:.1} | {:.1} | {:.2} | {:.1} ({:.1}) |",
        a.target,
        a.rate,
        a.shards,
        wait_label(a.batch_wait_us),
        per_call(uac_cpu),
        per_call(uas_cpu),
        sbc_us / per_call(uac_cpu),
        rss_kb as f64 / 1024.0,
        hwm_kb as f64 / 1024.0
    );
    let json = format!(
        "{{\"target\":\"{:?}\",\"rate\":{},\"shards\":{},\"batch_wait_us\":{},\"seconds\":{},\"hold_ms\":{},\"calls_ok\":{ok},\"calls_failed\":{failed},\"wall_s\":{wall:.2},\"sbc_cpu_us_per_call\":{sbc_us:.2},\"sbc_user_cpu_us_per_call\":{sbc_user_us:.2},\"sipp_uac_cpu_us_per_call\":{:.2},\"sipp_uas_cpu_us_per_call\":{:.2},\"sbc_rss_kib\":{rss_kb},\"sbc_peak_rss_kib\":{hwm_kb}}}",
        a.target,
        a.rate,
        a.shards,
        a.batch_wait_us
            .map_or("null".to_string(), |us| us.to_string()),
        a.seconds,
        a.hold_ms,
        per_call(uac_cpu),
        per_call(uas_cpu)
    );
    if a.floor {
        let pps = (f64::from(a.rate) * DATAGRAMS_PER_CALL).round() as u32;
        for (paced, how) in [(false, "batched"), (true, "paced")] {
            match relay_floor_ns(&a.relaycost, pps, a.seconds, paced) {
                Some(ns) => {
                    let floor_us = ns * DATAGRAMS_PER_CALL / 2.0 / 1000.0;
                    let _ = writeln!(
                        md,
                        "\nkernel floor, {how} (minimal batched relay at {pps} packets/s{}, measured in this run): {ns:.0} ns/packet, {floor_us:.1} µs per call of {DATAGRAMS_PER_CALL} datagrams; sbc = {:.2}x the floor",
                        if paced {
                            " sent one by one"
                        } else {
                            " sent in 1 ms bursts"
                        },
                        sbc_us / floor_us
                    );
                }
                None => {
                    let _ = writeln!(
                        md,
                        "\nkernel floor ({how}): relaycost did not run ({})",
                        a.relaycost.display()
                    );
                }
            }
        }
    }
    print!("{md}");
    println!("{json}");
    if let Some(dir) = a.out {
        let _ = std::fs::create_dir_all(&dir);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = std::fs::write(dir.join(format!("callcost-{stamp}.md")), &md);
        let _ = std::fs::write(dir.join(format!("callcost-{stamp}.json")), &json);
    }
    let _ = std::fs::remove_dir_all(&work);
    if failed > 0 || ok < calls {
        std::process::exit(1);
    }
}
