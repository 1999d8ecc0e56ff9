//! Whole-system load benchmark: sbc-load callers and callees drive the
//! release `sbc` (or Kamailio as a stateful proxy, or nothing: the load
//! generators against each other) at a series of rates, search the highest
//! rate with under 0.1 % failed calls (RFC 7502 style: each step a fixed
//! number of calls at a fixed offered rate, bounded in time), and run an
//! overload step at twice that rate. Every step starts the proxy afresh.
//! Results go to stdout and, with `--out`, to Markdown and JSON files.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/loadbench --rates 1000,2000,4000 --search --overload \
//!     --compare kamailio --out bench/results
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use sbc_bench::harness::{
    self, KAMAILIO_FAST_ALLOCATOR, Proc, call_floor_us, metric_sum, sbc_config, scrape, sipp_stat,
    wait_healthy,
};
use sbc_bench::procstat::{cpu_seconds, machine, status_kb, tree_cpu_seconds};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Calls/s, failures, response times and proxy CPU per call at a series of rates")]
struct Args {
    /// Offered rates (calls/s) of the series.
    #[arg(long, value_delimiter = ',', default_values_t = [1000u32, 2000, 4000])]
    rates: Vec<u32>,
    /// Seconds of load per step.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Search the highest rate with < 0.1 % failed calls, from the series.
    #[arg(long)]
    search: bool,
    /// Most search steps.
    #[arg(long, default_value_t = 8)]
    max_steps: u32,
    /// After the search, offer twice the capacity found.
    #[arg(long)]
    overload: bool,
    /// What sits between caller and callee.
    #[arg(long, value_enum, default_value_t = Target::Sbc)]
    target: Target,
    /// Also measure this, the same way in the same run, and print ratios.
    #[arg(long, value_enum)]
    compare: Option<Compare>,
    /// sbc shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// The sbc's `shards.batch_wait_us` and `media_batch_wait_us`: one
    /// window, media or not (default: the sbc's own defaults).
    #[arg(long)]
    batch_wait_us: Option<u32>,
    /// Call hold time (sbc-load -d), ms.
    #[arg(long, default_value_t = 0)]
    hold_ms: u32,
    /// Calls play media: the caller runs loadtest/scenarios/uac_pcap.xml
    /// (the G.711 capture sip-tester ships, 236 RTP packets over 7 s, the
    /// call held 8 s) instead of the basic call.
    #[arg(long)]
    pcap: bool,
    /// Threads of each sbc-load process.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Keep the load generators off the proxy's core: they run on the
    /// last CPU (taskset), the sbc's one shard is pinned to CPU 0 (so on
    /// this 2-core machine each has a core of its own).
    #[arg(long)]
    split_cores: bool,
    #[arg(long, default_value = "target/release/sbc")]
    sbc: PathBuf,
    #[arg(long, default_value = "target/release/sbc-load")]
    sbc_load: PathBuf,
    #[arg(long, default_value = "target/release/relaycost")]
    relaycost: PathBuf,
    /// Also measure the kernel floor at each rate (the batched minimal
    /// relay at 13 datagrams a call, with relaycost) and print each
    /// proxy's CPU per call against it.
    #[arg(long)]
    floor: bool,
    #[arg(long, default_value = "/usr/sbin/kamailio")]
    kamailio: PathBuf,
    /// Second octet of the loopback network used (127.N.0.0/24).
    #[arg(long, default_value_t = 201)]
    net: u8,
    /// Write Markdown and JSON results into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// This project's sbc (B2BUA).
    Sbc,
    /// Kamailio as a stateful proxy (tm, rr, dialog; bench/kamailio/proxy.cfg).
    Kamailio,
    /// No proxy: sbc-load caller straight to the sbc-load callee; with
    /// --compare sipp, stock sipp against itself.
    Direct,
    /// Stock sipp caller straight to a stock sipp callee.
    Sipp,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    /// Kamailio as a stateful proxy on the same calls.
    Kamailio,
    /// rtpengine against the sbc relaying RTP (runs relaycost).
    Rtpengine,
    /// Stock sipp pair against the sbc-load pair (with --target direct).
    Sipp,
}

/// The caller's scenario with `--pcap` (the benchmark runs from the
/// repository's root).
const PCAP_SCENARIO: &str = "loadtest/scenarios/uac_pcap.xml";

fn fail(msg: &str) -> ! {
    harness::fail("loadbench", msg)
}

/// One step: a fixed offered rate for a fixed time.
#[derive(Debug, Clone)]
struct Step {
    target: Target,
    rate: u32,
    offered: u64,
    ok: u64,
    failed: u64,
    achieved_cps: f64,
    /// INVITE -> 2xx percentiles (ms) of the calls that got one.
    p50: f64,
    p99: f64,
    p999: f64,
    /// Proxy CPU per completed call (NaN without a proxy).
    proxy_us: f64,
    /// Caller and callee CPU per completed call.
    caller_us: f64,
    callee_us: f64,
    proxy_rss_mib: f64,
    responses: Value,
    failures: Value,
    retrans_sent: u64,
    wall_s: f64,
    /// The sbc's shard loop rounds and their working time (seconds) over
    /// the step, from its metrics (None for the other targets).
    rounds: Option<(f64, f64)>,
}

impl Step {
    fn failed_ratio(&self) -> f64 {
        self.failed as f64 / self.offered.max(1) as f64
    }

    fn passes(&self) -> bool {
        self.failed_ratio() < 0.001 && self.ok + self.failed >= self.offered
    }

    fn json(&self) -> Value {
        json!({
            "target": format!("{:?}", self.target).to_lowercase(),
            "rate": self.rate,
            "offered": self.offered,
            "succeeded": self.ok,
            "failed": self.failed,
            "achieved_cps": self.achieved_cps,
            "invite_to_2xx_ms": {"p50": self.p50, "p99": self.p99, "p999": self.p999},
            "proxy_cpu_us_per_call": nan_null(self.proxy_us),
            "caller_cpu_us_per_call": nan_null(self.caller_us),
            "callee_cpu_us_per_call": nan_null(self.callee_us),
            "proxy_rss_mib": nan_null(self.proxy_rss_mib),
            "responses": self.responses,
            "failures": self.failures,
            "retransmissions_sent": self.retrans_sent,
            "wall_s": self.wall_s,
            "sbc_rounds": self.rounds.map(|(n, _)| n),
            "sbc_round_busy_s": self.rounds.map(|(_, s)| s),
        })
    }

    fn row(&self) -> String {
        let f = |v: f64| {
            if v.is_nan() {
                "—".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        let ms = |v: f64| {
            if v.is_nan() {
                "—".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        format!(
            "| {:?} | {} | {} | {} | {:.3} | {:.0} | {} / {} / {} | {} | {} | {} | {} |",
            self.target,
            self.rate,
            self.ok,
            self.failed,
            100.0 * self.failed_ratio(),
            self.achieved_cps,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            f(self.proxy_us),
            f(self.caller_us),
            f(self.callee_us),
            f(self.proxy_rss_mib)
        )
    }
}

fn nan_null(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

const HEADER: &str = "| target | offered calls/s | succeeded | failed | failed % | achieved calls/s | INVITE→2xx ms p50 / p99 / p99.9 | proxy CPU µs/call | caller µs/call | callee µs/call | proxy RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|";

struct Bench {
    a: Args,
    work: PathBuf,
}

impl Bench {
    fn ip(&self, h: u8) -> String {
        format!("127.{}.0.{h}", self.a.net)
    }

    fn start_proxy(&self, target: Target) -> Option<Proc> {
        let dir = self.work.join("proxy");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
        match target {
            Target::Sbc => {
                let config = sbc_config(
                    &self.ip(1),
                    &self.ip(10),
                    &self.ip(20),
                    self.a.shards,
                    self.a.batch_wait_us,
                    "",
                );
                let path = dir.join("bench.toml");
                std::fs::write(&path, config).unwrap_or_else(|e| fail(&e.to_string()));
                let child = Command::new(&self.a.sbc)
                    .arg("--config")
                    .arg(&path)
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        fail(&format!(
                            "cannot start {}: {e} (cargo build --release --workspace)",
                            self.a.sbc.display()
                        ))
                    });
                let p = Proc::new(child);
                let metrics = format!("{}:9090", self.ip(1));
                if !wait_healthy(&metrics, Duration::from_secs(10)) {
                    fail("sbc did not start (is the media port range free?)");
                }
                Some(p)
            }
            Target::Kamailio => {
                let kcfg = dir.join("kamailio.cfg");
                std::fs::write(
                    &kcfg,
                    include_str!("../../kamailio/proxy.cfg")
                        .replace("@LISTEN@", &self.ip(1))
                        .replace("@TARGET@", &self.ip(20)),
                )
                .unwrap_or_else(|e| fail(&e.to_string()));
                let child = Command::new(&self.a.kamailio)
                    .args(["-DD", "-E", "-m", "512", "-M", "32"])
                    .args(KAMAILIO_FAST_ALLOCATOR)
                    .arg("-f")
                    .arg(&kcfg)
                    .arg("-Y")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        fail(&format!(
                            "cannot start {} (apt-get install kamailio): {e}",
                            self.a.kamailio.display()
                        ))
                    });
                std::thread::sleep(Duration::from_millis(1500));
                Some(Proc::new(child))
            }
            Target::Direct | Target::Sipp => None,
        }
    }

    /// A load generator process: sbc-load, or stock sipp for `Sipp`.
    fn loadgen(&self, sipp: bool, name: &str, args: &[String]) -> Proc {
        let dir = self.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
        // With --split-cores, through taskset onto the last CPU.
        let program = |p: &std::ffi::OsStr| {
            if self.a.split_cores {
                let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
                let mut c = Command::new("taskset");
                c.args(["-c", &last.to_string()]).arg(p);
                c
            } else {
                Command::new(p)
            }
        };
        let mut cmd = if sipp {
            let mut c = program("sipp".as_ref());
            c.args(["-trace_stat", "-stf", "stat.csv", "-fd", "1"]);
            c
        } else {
            let mut c = program(self.a.sbc_load.as_os_str());
            c.args(["--quiet", "--json", "report.json", "--threads"])
                .arg(self.a.load_threads.to_string());
            if name == "caller" {
                // The caller hears only from the address it calls.
                c.arg("--connect");
            }
            c
        };
        let child = cmd
            .current_dir(&dir)
            .args(["-t", "u1", "-nostdin"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start the load generator: {e}")));
        Proc::new(child)
    }

    /// The load generator's report: sbc-load's JSON, or the figures of
    /// sipp's statistics file in the same shape.
    fn report(&self, sipp: bool, name: &str) -> Value {
        let dir = self.work.join(name);
        if !sipp {
            return std::fs::read_to_string(dir.join("report.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
        }
        let get = |column: &str| sipp_stat(&dir, column);
        json!({
            "calls_succeeded": get("SuccessfulCall(C)"),
            "calls_failed": get("FailedCall(C)"),
            "retransmissions_sent": get("Retransmissions(C)"),
        })
    }

    fn step(&self, target: Target, rate: u32) -> Step {
        let offered = u64::from(rate) * u64::from(self.a.seconds);
        let proxy = self.start_proxy(target);
        let sipp = target == Target::Sipp;
        let (callee_ip, dest) = match target {
            Target::Sbc | Target::Kamailio => (self.ip(20), format!("{}:5060", self.ip(1))),
            Target::Direct | Target::Sipp => (self.ip(20), format!("{}:5060", self.ip(20))),
        };
        let s = |v: &str| v.to_string();
        let limit = u64::from(self.a.seconds) * 3 + 60 + if self.a.pcap { 10 } else { 0 };
        let scenario = if self.a.pcap {
            // The load generators run in their own directories.
            let path = std::fs::canonicalize(PCAP_SCENARIO).unwrap_or_else(|e| {
                fail(&format!("{PCAP_SCENARIO}: {e} (run from the repository)"))
            });
            vec![s("-sf"), path.display().to_string()]
        } else {
            vec![s("-sn"), s("uac")]
        };
        let callee = self.loadgen(
            sipp,
            "callee",
            &[
                s("-sn"),
                s("uas"),
                s("-i"),
                callee_ip,
                s("-p"),
                s("5060"),
                s("-m"),
                offered.to_string(),
                s("-mp"),
                s("40100"),
                s("-cp"),
                s("40110"),
                s("-timeout"),
                limit.to_string(),
            ],
        );
        std::thread::sleep(Duration::from_millis(400));
        let proxy_pid = proxy.as_ref().map(|p| p.0.id());
        let proxy_cpu0 = proxy_pid.map_or(0.0, tree_cpu_seconds);
        let callee_cpu0 = cpu_seconds(callee.0.id());
        let rounds0 = (target == Target::Sbc).then(|| self.sbc_rounds()).flatten();
        let start = Instant::now();
        let mut caller = self.loadgen(
            sipp,
            "caller",
            &[scenario, vec![s("-s")]]
                .concat()
                .into_iter()
                .chain([
                    s("+15550100"),
                    s("-i"),
                    self.ip(10),
                    s("-p"),
                    s("5060"),
                    dest,
                    s("-r"),
                    rate.to_string(),
                    s("-m"),
                    offered.to_string(),
                    s("-d"),
                    self.a.hold_ms.to_string(),
                    s("-recv_timeout"),
                    s("10000"),
                    s("-mp"),
                    s("40120"),
                    s("-cp"),
                    s("40130"),
                    s("-timeout"),
                    limit.to_string(),
                ])
                .collect::<Vec<_>>(),
        );
        let (mut caller_cpu, mut callee_cpu, mut proxy_cpu) = (0.0f64, 0.0f64, proxy_cpu0);
        let mut rss_kb = 0;
        loop {
            caller_cpu = caller_cpu.max(cpu_seconds(caller.0.id()));
            callee_cpu = callee_cpu.max(cpu_seconds(callee.0.id()) - callee_cpu0);
            if let Some(pid) = proxy_pid {
                proxy_cpu = proxy_cpu.max(tree_cpu_seconds(pid));
                rss_kb = rss_kb.max(status_kb(pid, "VmRSS:"));
            }
            if let Ok(Some(_)) = caller.0.try_wait() {
                break;
            }
            if start.elapsed() > Duration::from_secs(limit + 30) {
                fail("the caller did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let wall_s = start.elapsed().as_secs_f64();
        // Rounds over the same span as wall_s (not the callee's wait).
        let rounds = rounds0
            .zip(self.sbc_rounds())
            .map(|((n0, s0), (n1, s1))| (n1 - n0, s1 - s0));
        // Let the callee see the last BYEs, then stop it.
        let callee_deadline = Instant::now() + Duration::from_secs(5);
        let mut callee = callee;
        while Instant::now() < callee_deadline {
            callee_cpu = callee_cpu.max(cpu_seconds(callee.0.id()) - callee_cpu0);
            if let Ok(Some(_)) = callee.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(pid) = proxy_pid {
            proxy_cpu = proxy_cpu.max(tree_cpu_seconds(pid));
        }
        // SIGINT: sbc-load and sipp print their reports on a signal.
        // SAFETY: kill(2) with a pid this process spawned and still owns.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(callee.0.id() as i32, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(callee);
        drop(proxy);
        let r = self.report(sipp, "caller");
        let ok = r["calls_succeeded"].as_u64().unwrap_or(0);
        let failed = r["calls_failed"].as_u64().unwrap_or(0);
        let per_call = |cpu: f64| {
            if ok > 0 {
                cpu * 1e6 / ok as f64
            } else {
                f64::NAN
            }
        };
        let p = |q: &str| r["invite_to_200"][q].as_f64().unwrap_or(f64::NAN);
        Step {
            target,
            rate,
            offered,
            ok,
            failed,
            // Completions per second of offered load (failed calls can
            // keep a caller running after it, up to its receive timeout).
            achieved_cps: ok as f64 / f64::from(self.a.seconds.max(1)),
            p50: p("p50_ms"),
            p99: p("p99_ms"),
            p999: p("p999_ms"),
            proxy_us: if proxy_pid.is_some() {
                per_call(proxy_cpu - proxy_cpu0)
            } else {
                f64::NAN
            },
            caller_us: per_call(caller_cpu),
            callee_us: per_call(callee_cpu),
            proxy_rss_mib: if proxy_pid.is_some() {
                rss_kb as f64 / 1024.0
            } else {
                f64::NAN
            },
            responses: r["responses"].clone(),
            failures: r["failures"].clone(),
            retrans_sent: r["retransmissions_sent"].as_u64().unwrap_or(0),
            wall_s,
            rounds,
        }
    }

    /// The sbc's shard loop rounds so far and the seconds they worked,
    /// summed over shards (`sbc_shard_loop_iterations_total`,
    /// `sbc_shard_busy_seconds_total`).
    fn sbc_rounds(&self) -> Option<(f64, f64)> {
        let text = scrape(&format!("{}:9090", self.ip(1)))?;
        Some((
            metric_sum(&text, "sbc_shard_loop_iterations_total{"),
            metric_sum(&text, "sbc_shard_busy_seconds_total{"),
        ))
    }

    /// RFC 7502-style search: from the series' best passing rate, double
    /// until a step fails, then bisect to within 5 %, at most `max_steps`.
    fn search(&self, target: Target, series: &[Step], log: &mut Vec<Step>) -> Option<u32> {
        let mut lo = series
            .iter()
            .filter(|s| s.target == target && s.passes())
            .map(|s| s.rate)
            .max();
        let mut hi = series
            .iter()
            .filter(|s| s.target == target && !s.passes())
            .map(|s| s.rate)
            .filter(|r| lo.is_none_or(|l| *r > l))
            .min();
        for _ in 0..self.a.max_steps {
            let next = match (lo, hi) {
                (Some(l), Some(h)) if f64::from(h - l) <= 0.05 * f64::from(l) => break,
                (Some(l), Some(h)) => (l + h) / 2,
                (Some(l), None) => l * 2,
                (None, Some(h)) if h <= 100 => break,
                (None, Some(h)) => h / 2,
                (None, None) => self.a.rates.first().copied().unwrap_or(1000),
            };
            let s = self.step(target, next);
            eprintln!("{}", s.row());
            if s.passes() {
                lo = Some(next);
            } else {
                hi = Some(next);
            }
            log.push(s);
        }
        lo
    }
}

fn main() {
    let mut a = Args::parse();
    // The load generators run in their own directories: absolute paths.
    for p in [&mut a.sbc, &mut a.sbc_load, &mut a.relaycost] {
        if let Ok(abs) = std::fs::canonicalize(&*p) {
            *p = abs;
        }
    }
    if a.rates.is_empty() || a.rates.contains(&0) {
        fail("--rates: give positive calls/s, comma separated");
    }
    let work = std::env::temp_dir().join(format!("sbc-loadbench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap_or_else(|e| fail(&e.to_string()));
    let mut targets = vec![a.target];
    match a.compare {
        Some(Compare::Kamailio) => targets.push(Target::Kamailio),
        Some(Compare::Sipp) => targets.push(Target::Sipp),
        Some(Compare::Rtpengine) | None => {}
    }
    let b = Bench { a, work };
    let mut md = String::new();
    let _ = writeln!(md, "# loadbench\n\nMachine: {}\n", machine());
    let _ = writeln!(
        md,
        "{}, UDP, {} s per step, sbc shards: {}, sbc-load threads: {}. CPU is utime+stime over the step; per completed call.\n",
        if b.a.pcap {
            format!("Calls with media (caller {PCAP_SCENARIO}, callee -sn uas)")
        } else {
            format!(
                "Basic call (sbc-load -sn uac / -sn uas, hold {} ms)",
                b.a.hold_ms
            )
        },
        b.a.seconds,
        b.a.shards,
        b.a.load_threads
    );
    let _ = writeln!(md, "## Series\n\n{HEADER}");
    println!("{HEADER}");
    let mut series = Vec::new();
    for &rate in &b.a.rates {
        for &t in &targets {
            let s = b.step(t, rate);
            println!("{}", s.row());
            let _ = writeln!(md, "{}", s.row());
            series.push(s);
        }
    }
    let mut loops = String::from(
        "\n## sbc shard rounds (from its metrics, over each step)\n\n| rate | rounds/s | working µs per round | working µs per call |\n|---|---|---|---|",
    );
    let mut rows = 0;
    for s in series.iter().filter(|s| s.target == Target::Sbc) {
        if let Some((n, busy)) = s.rounds.filter(|(n, _)| *n > 0.0) {
            // Per completed call, like the CPU columns (none: no figure).
            let per_call = if s.ok > 0 {
                format!("{:.1}", busy * 1e6 / s.ok as f64)
            } else {
                "—".to_string()
            };
            let _ = write!(
                loops,
                "\n| {} | {:.0} | {:.1} | {per_call} |",
                s.rate,
                n / s.wall_s.max(1e-9),
                busy * 1e6 / n,
            );
            rows += 1;
        }
    }
    if rows > 0 {
        loops.push('\n');
        print!("{loops}");
        md.push_str(&loops);
    }
    let mut ratios = String::new();
    if targets.len() == 2 {
        let _ = writeln!(
            ratios,
            "\n## Ratios ({:?} / {:?}, same rates)\n\n| rate | CPU per call (proxy, or caller+callee without one) | achieved calls/s |\n|---|---|---|",
            targets[0], targets[1]
        );
        for &rate in &b.a.rates {
            let find = |t: Target| series.iter().find(|s| s.target == t && s.rate == rate);
            if let (Some(x), Some(y)) = (find(targets[0]), find(targets[1])) {
                let cost = |s: &Step| {
                    if s.proxy_us.is_finite() {
                        s.proxy_us
                    } else {
                        s.caller_us + s.callee_us
                    }
                };
                let _ = writeln!(
                    ratios,
                    "| {rate} | {:.2} | {:.2} |",
                    cost(x) / cost(y),
                    x.achieved_cps / y.achieved_cps.max(1e-9)
                );
            }
        }
        print!("{ratios}");
        md.push_str(&ratios);
    }
    if b.a.floor {
        let mut floor = String::from(
            "\n## Kernel floor (batched minimal relay at 13 datagrams a call, measured in this run)\n\n| rate | floor µs/call | proxy / floor |\n|---|---|---|",
        );
        for &rate in &b.a.rates {
            let Some(f) = call_floor_us(&b.a.relaycost, rate, b.a.seconds) else {
                let _ = writeln!(floor, "\n| {rate} | relaycost did not run | |");
                continue;
            };
            let ratios: Vec<String> = targets
                .iter()
                .filter_map(|t| series.iter().find(|s| s.target == *t && s.rate == rate))
                .map(|s| format!("{:?} {:.2}", s.target, s.proxy_us / f))
                .collect();
            let _ = write!(floor, "\n| {rate} | {f:.1} | {} |", ratios.join(", "));
        }
        floor.push('\n');
        print!("{floor}");
        md.push_str(&floor);
    }
    let mut searched = Vec::new();
    let mut capacity = Vec::new();
    if b.a.search {
        for &t in &targets {
            let cap = b.search(t, &series, &mut searched);
            let line = format!(
                "{t:?}: highest rate with < 0.1 % failed calls: {}",
                cap.map_or("none found".to_string(), |c| format!("{c} calls/s"))
            );
            println!("{line}");
            capacity.push((t, cap));
        }
        let _ = writeln!(
            md,
            "\n## Capacity search (RFC 7502 style, < 0.1 % failed)\n\n{HEADER}"
        );
        for s in &searched {
            let _ = writeln!(md, "{}", s.row());
        }
        let _ = writeln!(md);
        for (t, cap) in &capacity {
            let _ = writeln!(
                md,
                "- {t:?}: {}",
                cap.map_or("none found".to_string(), |c| format!("{c} calls/s"))
            );
        }
    }
    let mut overload = Vec::new();
    if b.a.overload {
        for (t, cap) in &capacity {
            let Some(cap) = cap else { continue };
            let s = b.step(*t, cap * 2);
            println!("overload {}", s.row());
            overload.push(s);
        }
        if !overload.is_empty() {
            let _ = writeln!(md, "\n## Overload: twice the capacity\n\n{HEADER}");
            for s in &overload {
                let _ = writeln!(md, "{}", s.row());
            }
            for s in &overload {
                let _ = writeln!(
                    md,
                    "\n{:?} at {} calls/s offered: goodput {:.0} calls/s; responses received by the caller {}; failures {}; caller retransmissions {}.",
                    s.target, s.rate, s.achieved_cps, s.responses, s.failures, s.retrans_sent
                );
            }
        }
    }
    let mut media = String::new();
    if b.a.compare == Some(Compare::Rtpengine) {
        for (streams, pps) in [(200u32, 50u32), (400, 100)] {
            let out = Command::new(&b.a.relaycost)
                .args(["--targets", "sbc", "rtpengine"])
                .args(["--streams", &streams.to_string(), "--pps", &pps.to_string()])
                .args(["--seconds", &b.a.seconds.min(10).to_string()])
                .output()
                .unwrap_or_else(|e| fail(&format!("relaycost: {e}")));
            media.push_str(&String::from_utf8_lossy(&out.stdout));
            media.push('\n');
        }
        print!("{media}");
        let _ = writeln!(
            md,
            "\n## Media relay: sbc vs rtpengine (relaycost)\n\n{media}"
        );
    }
    let report = json!({
        "machine": machine(),
        "seconds_per_step": b.a.seconds,
        "hold_ms": b.a.hold_ms,
        "shards": b.a.shards,
        "load_threads": b.a.load_threads,
        "series": series.iter().map(Step::json).collect::<Vec<_>>(),
        "search": searched.iter().map(Step::json).collect::<Vec<_>>(),
        "capacity": capacity.iter().map(|(t, c)| json!({"target": format!("{t:?}").to_lowercase(), "calls_per_s": c})).collect::<Vec<_>>(),
        "overload": overload.iter().map(Step::json).collect::<Vec<_>>(),
        "media": media,
    });
    if let Some(dir) = &b.a.out {
        let _ = std::fs::create_dir_all(dir);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = dir.join(format!("loadbench-{stamp}"));
        let _ = std::fs::write(base.with_extension("md"), &md);
        let _ = std::fs::write(
            base.with_extension("json"),
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        );
        println!("written: {}.{{md,json}}", base.display());
    }
    let _ = std::fs::remove_dir_all(&b.work);
}
