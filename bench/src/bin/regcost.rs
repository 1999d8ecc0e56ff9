//! Whole-system cost of digest registration: stock `sipp` registering N
//! distinct accounts (401 challenge, then the authorized REGISTER) through
//! the real `sbc` registrar, and through Kamailio (registrar + auth,
//! passwords in memory, TLSF, one worker) in the same run. Measures the
//! server's CPU per registration (utime + stime from /proc), the rate
//! reached, the resident memory each binding adds, and, with `--storm`, a
//! refresh storm: every binding registered again within that many seconds,
//! none lost.
//!
//! `cargo build --release -p sbc-controlplane -p sbc-bench &&
//!  target/release/regcost --accounts 10000 --rate 1000 --target both`
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use sbc_bench::harness::{
    Proc, scenario, scrape, sipp_stat, spawn_kamailio, spawn_sbc, spawn_sipp, wait_healthy,
};
use sbc_bench::procstat::{status_kb, tree_cpu_seconds};

#[derive(Parser, Debug)]
#[command(about = "CPU microseconds and memory per digest registration, sbc against Kamailio")]
struct Args {
    /// Distinct accounts registered (u0..uN-1, passwords p0..pN-1).
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Registrations per second offered by sipp.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Which registrars to measure.
    #[arg(long, value_enum, default_value_t = Target::Both)]
    target: Target,
    /// Data-plane shards (Kamailio gets as many workers).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Wake-up coalescing of the shard loops, media or not
    /// (shards.batch_wait_us and media_batch_wait_us; default: the sbc's own).
    #[arg(long)]
    batch_wait_us: Option<u32>,
    /// Then re-register every account within this many seconds (a
    /// refresh storm) and count what was lost; 0: no storm.
    #[arg(long, default_value_t = 0)]
    storm: u32,
    /// Also measure the RSS this many seconds after the first pass (the
    /// transactions of the registrations gone, the bindings kept); 0: not.
    #[arg(long, default_value_t = 0)]
    settle: u32,
    /// The sbc binary.
    #[arg(long, default_value = "target/release/sbc")]
    sbc: PathBuf,
    /// The kamailio binary (Debian package kamailio).
    #[arg(long, default_value = "/usr/sbin/kamailio")]
    kamailio: PathBuf,
    /// Second octet of the loopback network used (127.N.0.0/24).
    #[arg(long, default_value_t = 201)]
    net: u8,
    /// Write Markdown and JSON results into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Sbc,
    Kamailio,
    Both,
}

fn fail(msg: &str) -> ! {
    sbc_bench::harness::fail("regcost", msg)
}

/// What one pass measured.
#[derive(Debug, Default)]
struct Pass {
    ok: u64,
    failed: u64,
    wall_s: f64,
    cpu_s: f64,
}

impl Pass {
    fn us_per_registration(&self) -> f64 {
        if self.ok == 0 {
            f64::NAN
        } else {
            self.cpu_s * 1e6 / self.ok as f64
        }
    }
    fn rate(&self) -> f64 {
        self.ok as f64 / self.wall_s.max(1e-9)
    }
}

/// What one registrar measured.
#[derive(Debug)]
struct Result {
    name: &'static str,
    first: Pass,
    storm: Option<Pass>,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// RSS `--settle` seconds after the first pass.
    rss_settled_kib: Option<u64>,
    /// Bindings the registrar says it holds after the run (sbc only).
    held: Option<u64>,
}

/// The sbc configuration: a registrar with `accounts` extensions of one
/// account each, every stranger answered (sipp is one source), no
/// lockout, no keepalives.
fn sbc_config(ip: &str, shards: usize, batch_wait_us: Option<u32>, accounts: u32) -> String {
    let wait = sbc_bench::harness::wait_lines(batch_wait_us);
    let mut c = format!(
        "[sip]\nlisten = [\"{ip}:5060\"]\n[shards]\ncount = {shards}\n{wait}[metrics]\nlisten = \"{ip}:9090\"\n\
         [acl]\nstranger_answers_per_s = 100000\nstranger_answers_total_per_s = 100000\n\
         [registrar]\nrealm = \"bench\"\nmax_expires_s = 3600\nlockout = {{ failures = 0 }}\n\
         keepalive = {{ method = \"off\" }}\n"
    );
    for i in 0..accounts {
        let _ = write!(
            c,
            "[[extensions]]\nnumber = \"{}\"\naccounts = [{{ username = \"u{i}\", secret = \"p{i}\" }}]\n",
            1_000_000 + u64::from(i)
        );
    }
    c
}

/// sipp registering every account once at `rate`, from `from`.
fn register_all(dir: &Path, a: &Args, server: &str, from: &str, rate: u32) -> Pass {
    let s = |v: &str| v.to_owned();
    let start = Instant::now();
    let mut sipp = spawn_sipp(
        dir,
        &[
            s("-sf"),
            scenario("uac_register_inf.xml"),
            s("-inf"),
            dir.join("../accounts.csv").display().to_string(),
            s("-au"),
            s("[field0]"),
            s("-ap"),
            s("[field1]"),
            s("-i"),
            s(from),
            s("-p"),
            s("5070"),
            s(server),
            s("-r"),
            rate.to_string(),
            s("-m"),
            a.accounts.to_string(),
            s("-mp"),
            s("41000"),
            s("-cp"),
            s("41010"),
        ],
    )
    .unwrap_or_else(|e| {
        fail(&format!(
            "cannot start sipp (apt-get install sip-tester): {e}"
        ))
    });
    let limit = Duration::from_secs(u64::from(a.accounts / rate.max(1)) * 3 + 120);
    loop {
        if let Ok(Some(_)) = sipp.0.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            fail("sipp did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Pass {
        ok: sipp_stat(dir, "SuccessfulCall(C)"),
        failed: sipp_stat(dir, "FailedCall(C)"),
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: 0.0,
    }
}

/// The RSS at rest before the first REGISTER: the lowest of a reading a
/// second for 12 s. An allocator that returns freed memory to the system
/// over time (jemalloc's dirty pages, 10 s by default) still holds what
/// the start-up freed right after it.
fn resting_rss_kib(pid: u32) -> u64 {
    let mut low = status_kb(pid, "VmRSS:");
    for _ in 0..12 {
        std::thread::sleep(Duration::from_secs(1));
        low = low.min(status_kb(pid, "VmRSS:"));
    }
    low
}

/// Runs the passes against a started server.
fn measure(
    a: &Args,
    work: &Path,
    name: &'static str,
    server: &Proc,
    ip: &dyn Fn(u8) -> String,
) -> Result {
    let pid = server.0.id();
    let rss_before_kib = resting_rss_kib(pid);
    let dir = work.join(format!("{name}-first"));
    let _ = std::fs::create_dir_all(&dir);
    let cpu0 = tree_cpu_seconds(pid);
    let mut first = register_all(&dir, a, &format!("{}:5060", ip(1)), &ip(50), a.rate);
    first.cpu_s = tree_cpu_seconds(pid) - cpu0;
    let rss_after_kib = status_kb(pid, "VmRSS:");
    let rss_settled_kib = (a.settle > 0).then(|| {
        std::thread::sleep(Duration::from_secs(u64::from(a.settle)));
        status_kb(pid, "VmRSS:")
    });
    let storm = (a.storm > 0).then(|| {
        let dir = work.join(format!("{name}-storm"));
        let _ = std::fs::create_dir_all(&dir);
        let rate = a.accounts.div_ceil(a.storm).max(1);
        let cpu0 = tree_cpu_seconds(pid);
        let mut p = register_all(&dir, a, &format!("{}:5060", ip(1)), &ip(50), rate);
        p.cpu_s = tree_cpu_seconds(pid) - cpu0;
        p
    });
    let held = (name == "sbc").then(|| {
        std::thread::sleep(Duration::from_millis(1500));
        scrape(&format!("{}:9090", ip(1)))
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("sbc_registrations "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .map_or(0, |v| v as u64)
    });
    Result {
        name,
        first,
        storm,
        rss_before_kib,
        rss_after_kib,
        rss_settled_kib,
        held,
    }
}

fn start_sbc(a: &Args, work: &Path, ip: &dyn Fn(u8) -> String) -> Proc {
    let cfg = work.join("sbc.toml");
    std::fs::write(
        &cfg,
        sbc_config(&ip(1), a.shards, a.batch_wait_us, a.accounts),
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    let server = spawn_sbc(&a.sbc, &cfg).unwrap_or_else(|e| {
        fail(&format!(
            "cannot start {}: {e} (build it with cargo build --release)",
            a.sbc.display()
        ))
    });
    if !wait_healthy(&format!("{}:9090", ip(1)), Duration::from_secs(60)) {
        fail("sbc did not start");
    }
    server
}

fn start_kamailio(a: &Args, work: &Path, ip: &dyn Fn(u8) -> String) -> Proc {
    let cfg = work.join("kamailio.cfg");
    let text = include_str!("../../kamailio/registrar.cfg")
        .replace("@LISTEN@", &ip(1))
        .replace("children=1", &format!("children={}", a.shards.max(1)));
    std::fs::write(&cfg, text).unwrap_or_else(|e| fail(&e.to_string()));
    let server = spawn_kamailio(&a.kamailio, &cfg, work, 1024).unwrap_or_else(|e| {
        fail(&format!(
            "cannot start {} (apt-get install kamailio): {e}",
            a.kamailio.display()
        ))
    });
    std::thread::sleep(Duration::from_millis(1500));
    server
}

fn main() {
    let a = Args::parse();
    let ip = |h: u8| format!("127.{}.0.{h}", a.net);
    let work = std::env::temp_dir().join(format!("sbc-regcost-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap_or_else(|e| fail(&e.to_string()));
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..a.accounts {
        let _ = writeln!(csv, "u{i};p{i}");
    }
    std::fs::write(work.join("accounts.csv"), csv).unwrap_or_else(|e| fail(&e.to_string()));
    let mut results = Vec::new();
    if matches!(a.target, Target::Kamailio | Target::Both) {
        let server = start_kamailio(&a, &work, &ip);
        results.push(measure(&a, &work, "kamailio", &server, &ip));
    }
    if matches!(a.target, Target::Sbc | Target::Both) {
        let server = start_sbc(&a, &work, &ip);
        results.push(measure(&a, &work, "sbc", &server, &ip));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} accounts at {} registrations/s offered, {} shard(s)/worker(s), sbc batch_wait_us {}; a registration = 401 challenge + authorized REGISTER\n",
        a.accounts,
        a.rate,
        a.shards,
        sbc_bench::harness::wait_label(a.batch_wait_us)
    );
    let _ = writeln!(
        md,
        "| registrar | ok | failed | registrations/s | CPU µs/registration | RSS before MiB | RSS after MiB | bytes/binding | bytes/binding settled | storm ok | storm failed | storm s | held after |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = String::from("[");
    for (i, r) in results.iter().enumerate() {
        let per_binding = (r.rss_after_kib.saturating_sub(r.rss_before_kib) * 1024) as f64
            / f64::from(a.accounts.max(1));
        let storm = r.storm.as_ref();
        let settled = r.rss_settled_kib.map_or("-".into(), |kib| {
            format!(
                "{:.0}",
                (kib.saturating_sub(r.rss_before_kib) * 1024) as f64 / f64::from(a.accounts.max(1))
            )
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {settled} | {} | {} | {} | {} |",
            r.name,
            r.first.ok,
            r.first.failed,
            r.first.rate(),
            r.first.us_per_registration(),
            r.rss_before_kib as f64 / 1024.0,
            r.rss_after_kib as f64 / 1024.0,
            per_binding,
            storm.map_or("-".into(), |s| s.ok.to_string()),
            storm.map_or("-".into(), |s| s.failed.to_string()),
            storm.map_or("-".into(), |s| format!("{:.1}", s.wall_s)),
            r.held.map_or("-".into(), |h| h.to_string()),
        );
        let _ = write!(
            json,
            "{}{{\"registrar\":\"{}\",\"accounts\":{},\"rate\":{},\"shards\":{},\"ok\":{},\"failed\":{},\"registrations_per_s\":{:.1},\"cpu_us_per_registration\":{:.2},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_binding\":{:.0},\"storm_ok\":{},\"storm_failed\":{},\"storm_s\":{:.2},\"held_after\":{}}}",
            if i > 0 { "," } else { "" },
            r.name,
            a.accounts,
            a.rate,
            a.shards,
            r.first.ok,
            r.first.failed,
            r.first.rate(),
            r.first.us_per_registration(),
            r.rss_before_kib,
            r.rss_after_kib,
            per_binding,
            storm.map_or(0, |s| s.ok),
            storm.map_or(0, |s| s.failed),
            storm.map_or(0.0, |s| s.wall_s),
            r.held.map_or(-1, |h| i64::try_from(h).unwrap_or(-1)),
        );
    }
    json.push(']');
    if results.iter().any(|r| r.name == "kamailio") {
        let _ = writeln!(
            md,
            "\nKamailio's RSS is its main process only (its bindings live in shared memory): not comparable."
        );
    }
    if let (Some(k), Some(s)) = (
        results.iter().find(|r| r.name == "kamailio"),
        results.iter().find(|r| r.name == "sbc"),
    ) {
        let _ = writeln!(
            md,
            "\nsbc CPU per registration = {:.2}x Kamailio's (same run)",
            s.first.us_per_registration() / k.first.us_per_registration()
        );
    }
    print!("{md}");
    println!("{json}");
    if let Some(dir) = &a.out {
        let _ = std::fs::create_dir_all(dir);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = std::fs::write(dir.join(format!("regcost-{stamp}.md")), &md);
        let _ = std::fs::write(dir.join(format!("regcost-{stamp}.json")), &json);
    }
    let lost = results.iter().any(|r| {
        r.first.failed > 0
            || r.storm.as_ref().is_some_and(|s| s.failed > 0)
            || r.held.is_some_and(|h| h != u64::from(a.accounts))
    });
    if lost {
        eprintln!(
            "regcost: registrations failed or were lost; sipp's files are in {}",
            work.display()
        );
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&work);
}
