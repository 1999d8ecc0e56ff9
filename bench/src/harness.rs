//! Process helpers the whole-system benchmarks share.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process, stopped and reaped when dropped: SIGTERM first (so
/// Kamailio takes its worker processes down with it, and no port stays
/// bound for the next pass), SIGKILL after 3 s.
#[derive(Debug)]
pub struct Proc(pub Child);

/// Processes started and not yet reaped, killed by [`fail`] (which exits
/// without running destructors).
static LIVE: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

impl Proc {
    pub fn new(child: Child) -> Self {
        if let Ok(mut l) = LIVE.lock() {
            l.push(child.id());
        }
        Proc(child)
    }
}

/// Sends `signal` to our child `pid`.
fn signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on a child this process started and has not reaped
    // (callers hold it in a Proc or in LIVE), so the pid is still ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal(self.0.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|p| *p != self.0.id());
        }
    }
}

/// Prints `tool: msg`, kills every process still running, exits 2.
pub fn fail(tool: &str, msg: &str) -> ! {
    eprintln!("{tool}: {msg}");
    if let Ok(l) = LIVE.lock() {
        for &pid in l.iter() {
            signal(pid, libc::SIGKILL);
        }
    }
    std::process::exit(2)
}

/// The path of a SIPp scenario in `loadtest/scenarios`.
pub fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../loadtest/scenarios")
        .join(name)
        .display()
        .to_string()
}

/// Starts stock `sipp` over UDP in `dir` (it writes its files there), with
/// its statistics in `stat.csv` (read them with [`sipp_stat`]); `args`
/// come after the common flags.
pub fn spawn_sipp(dir: &Path, args: &[String]) -> std::io::Result<Proc> {
    std::process::Command::new("sipp")
        .current_dir(dir)
        .args(["-t", "u1", "-nostdin", "-timeout", "600", "-timeout_error"])
        .args(["-trace_stat", "-stf", "stat.csv"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Proc::new)
}

/// Starts the `sbc` binary with `config`, logging at warn to our stderr.
pub fn spawn_sbc(sbc: &Path, config: &Path) -> std::io::Result<Proc> {
    std::process::Command::new(sbc)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map(Proc::new)
}

/// Starts Kamailio the way its users run it for speed (TLSF allocator,
/// see [`KAMAILIO_FAST_ALLOCATOR`]) in the foreground, with `config`,
/// `shm_mb` of shared memory and its runtime files in `dir`.
pub fn spawn_kamailio(
    kamailio: &Path,
    config: &Path,
    dir: &Path,
    shm_mb: u32,
) -> std::io::Result<Proc> {
    std::process::Command::new(kamailio)
        .args(["-DD", "-E", "-m", &shm_mb.to_string(), "-M", "32"])
        .args(KAMAILIO_FAST_ALLOCATOR)
        .arg("-f")
        .arg(config)
        .arg("-Y")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Proc::new)
}

/// How a run's `shards.batch_wait_us` reads in a report.
pub fn wait_label(batch_wait_us: Option<u32>) -> String {
    batch_wait_us.map_or_else(
        || "the sbc's default".to_string(),
        |us| format!("{us} µs, media or not"),
    )
}

/// The `[shards]` lines of a benchmark's `--batch-wait-us`: one window,
/// with media or without (`batch_wait_us` and `media_batch_wait_us`).
pub fn wait_lines(batch_wait_us: Option<u32>) -> String {
    batch_wait_us.map_or(String::new(), |us| {
        format!("batch_wait_us = {us}\nmedia_batch_wait_us = {us}\n")
    })
}

/// The sbc configuration of the benchmarks: listening on `sbc`:5060 with
/// metrics on `sbc`:9090, calls from the `pbx` trunk routed to the
/// `carrier` trunk; `extra` (e.g. a `[media]` section) goes before the
/// trunks.
pub fn sbc_config(
    sbc: &str,
    pbx: &str,
    carrier: &str,
    shards: usize,
    batch_wait_us: Option<u32>,
    extra: &str,
) -> String {
    let wait = wait_lines(batch_wait_us);
    format!(
        "[sip]\nlisten = [\"{sbc}:5060\"]\n[shards]\ncount = {shards}\n{wait}[metrics]\nlisten = \"{sbc}:9090\"\n{extra}\
         [[trunks]]\nname = \"pbx\"\nsources = [\"{pbx}\"]\naddress = \"{pbx}:5060\"\n\
         [[trunks]]\nname = \"carrier\"\nsources = [\"{carrier}\"]\naddress = \"{carrier}:5060\"\n\
         [[routes]]\nname = \"out\"\nfrom = [\"pbx\"]\nnumbers = [\"*\"]\ntargets = [{{ trunk = \"carrier\" }}]\n"
    )
}

/// The last value of `column` in the statistics file (`stat.csv`) sipp
/// wrote in `dir` with `-trace_stat -stf stat.csv`; 0 when absent.
pub fn sipp_stat(dir: &Path, column: &str) -> u64 {
    let csv = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
    let mut lines = csv.lines().filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or("").split(';').collect();
    header
        .iter()
        .position(|h| *h == column)
        .and_then(|i| last.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `GET path` from the sbc's metrics listener at `addr`: the whole
/// response, or `None` when nothing answered.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    Some(b)
}

/// Whether the sbc's metrics listener at `addr` answers `/health` with 200
/// (it does once every shard is running).
pub fn healthy(addr: &str) -> bool {
    get(addr, "/health").is_some_and(|b| b.starts_with("HTTP/1.1 200"))
}

/// The sbc's `/metrics` text (without the HTTP head), when it answered 200.
pub fn scrape(addr: &str) -> Option<String> {
    let b = get(addr, "/metrics")?;
    if !b.starts_with("HTTP/1.1 200") {
        return None;
    }
    b.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The sum of the samples in metrics `text` whose line starts with
/// `prefix` (a family name, or a name and the start of its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits up to `limit` for [`healthy`]; false when it never was.
pub fn wait_healthy(addr: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !healthy(addr) {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Kamailio as it is run for speed: the TLSF allocator for shared (`-x`)
/// and private (`-X`) memory. Debian's default allocator costs 3-4x more
/// CPU per call, which would flatter any comparison with it.
pub const KAMAILIO_FAST_ALLOCATOR: [&str; 4] = ["-x", "tlsf", "-X", "tlsf"];

/// Datagrams of a basic call through a B2BUA without 100 Trying to the
/// caller: INVITE, 180, 200, ACK, BYE, 200 on each leg, and the callee's
/// 100 Trying.
pub const DATAGRAMS_PER_CALL: f64 = 13.0;

/// The kernel floor: CPU ns per relayed packet of the batched minimal
/// relay at `pps` packets/s, measured now by `relaycost --targets batched`
/// (its Markdown row), or `None` when it did not run. `paced` sends the
/// packets evenly spread (`relaycost --paced`), so the relay wakes for each
/// one as a proxy does for call messages, instead of in 1 ms bursts.
pub fn relay_floor_ns(
    relaycost: &std::path::Path,
    pps: u32,
    seconds: u32,
    paced: bool,
) -> Option<f64> {
    let streams = pps.div_ceil(100).max(1);
    let out = std::process::Command::new(relaycost)
        .args(["--targets", "batched", "--pps", "100", "--net", "221"])
        .args(paced.then_some("--paced"))
        .args(["--streams", &streams.to_string()])
        .args(["--seconds", &seconds.clamp(5, 20).to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("| Batched |"))?;
    // | relay | sent | relayed | lost % | CPU ns/packet | ...
    row.split('|').nth(5)?.trim().parse().ok()
}

/// The floor per call at `rate` calls/s: half the call's datagrams are
/// received and half sent, so a call is 6.5 relayed packets. µs.
pub fn call_floor_us(relaycost: &std::path::Path, rate: u32, seconds: u32) -> Option<f64> {
    let pps = (f64::from(rate) * DATAGRAMS_PER_CALL).round() as u32;
    relay_floor_ns(relaycost, pps, seconds, false).map(|ns| ns * DATAGRAMS_PER_CALL / 2.0 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_proc_is_stopped_and_forgotten() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = Instant::now();
        drop(Proc::new(child));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "SIGTERM stops it"
        );
        assert!(!LIVE.lock().unwrap().contains(&pid));
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
    }
}
