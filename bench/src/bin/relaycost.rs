//! Media relay cost: CPU nanoseconds per relayed 160-byte RTP packet at a
//! fixed offered rate over many streams on loopback, for
//!   (a) a minimal relay calling recv_from/send_to once per packet,
//!   (b) a minimal batched relay (recvmmsg/sendmmsg, 32 per call) that
//!       takes every stream on one port,
//!   (b′) the same with one port (socket) per stream, as a relay that
//!       tells streams apart must have (epoll, then recvmmsg/sendmmsg),
//!   (c) the sbc (one shard, calls set up over SIP), on its io_uring
//!       sockets and (sbc-xdp) on its AF_XDP path (generic XDP on lo),
//!   (d) rtpengine in userspace mode (Debian's rtpengine-daemon), driven
//!       over its ng protocol, when installed,
//! side by side in one run, `--rounds` times in turn (the median is
//! reported). With the sbc-xdp target (or `--netns`) everything runs in a
//! network namespace of its own, where lo may take the frames AF_XDP
//! sends (`route_localnet`) without touching the host's settings.
//!
//! `cargo build --release -p sbc-controlplane -p sbc-bench &&
//!  target/release/relaycost --streams 200 --pps 50 --seconds 10`
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use sbc_bench::harness::{Proc, sbc_config};
use sbc_bench::procstat::cpu_seconds;
use sbc_bench::relay::{minimal, setup};

#[derive(Parser, Debug)]
#[command(about = "CPU per relayed RTP packet: minimal relays, sbc and rtpengine")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Concurrent streams (calls).
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Packets per second per stream (50 = 20 ms ptime).
    #[arg(long, default_value_t = 50)]
    pps: u32,
    /// Seconds of traffic per target.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// What to measure (default: all that are available).
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Target>,
    #[arg(long, default_value = "target/release/sbc")]
    sbc: PathBuf,
    #[arg(long, default_value = "/usr/bin/rtpengine")]
    rtpengine: PathBuf,
    /// sbc wake-up coalescing, media or not (shards.batch_wait_us and
    /// media_batch_wait_us; default: the sbc's).
    #[arg(long)]
    batch_wait_us: Option<u32>,
    /// Second octet of the loopback network used (127.N.0.0/24).
    #[arg(long, default_value_t = 220)]
    net: u8,
    /// Run every target this many times, in turn; report the median.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Run in a new network namespace (implied by the sbc-xdp target).
    #[arg(long)]
    netns: bool,
    /// Put the relays in a second namespace behind a veth pair
    /// (10.78.0.0/24) instead of on lo: traffic crosses an Ethernet link,
    /// and the sbc's AF_XDP path runs in native (driver) mode.
    #[arg(long)]
    veth: bool,
    /// Spread the packets evenly (one every 1/rate seconds) instead of
    /// sending each millisecond's packets in one burst. A burst lets a
    /// relay take a dozen packets per wake-up; paced, it wakes for each
    /// packet, as a SIP proxy does for the messages of calls.
    #[arg(long)]
    paced: bool,
}

/// Where the relays and the driver sit.
struct Topology {
    relay_ip: String,
    caller_ip: String,
    sink_ip: String,
    /// The process holding the relays' namespace (`--veth`).
    relays_in: Option<u32>,
    /// The sbc's `[media.xdp]` interface and mode.
    xdp: (&'static str, &'static str),
}

impl Topology {
    /// A command for a relay, run in the relays' namespace.
    fn relay(&self, program: &std::ffi::OsStr) -> Command {
        match self.relays_in {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-n", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// The subcommands are the CLI's `relay-*` names.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Internal: run the minimal per-packet relay.
    RelayNaive { listen: SocketAddr, to: SocketAddr },
    /// Internal: run the minimal batched relay.
    RelayBatched { listen: SocketAddr, to: SocketAddr },
    /// Internal: run the minimal batched relay with a socket per stream.
    RelayBatchedPorts {
        ip: std::net::IpAddr,
        first: u16,
        count: u16,
        to: SocketAddr,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Naive,
    Batched,
    /// The batched relay with one socket (port) per stream.
    BatchedPorts,
    Sbc,
    /// The sbc with its AF_XDP media path on lo (generic XDP).
    SbcXdp,
    Rtpengine,
}

fn fail(msg: &str) -> ! {
    sbc_bench::harness::fail("relaycost", msg)
}

#[derive(Clone)]
struct Outcome {
    target: Target,
    sent: u64,
    received: u64,
    cpu_ns_per_packet: f64,
    /// sbc targets: the share of relayed packets that took the AF_XDP
    /// path (from the sbc's metrics).
    xdp_share: Option<f64>,
}

fn rtp_packet(seq: u16, stream: u32) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&stream.to_be_bytes());
    for b in &mut p[12..] {
        *b = 0xd5;
    }
    p
}

/// Offers `streams * pps` packets/s round-robin over `ports` for `seconds`,
/// counting what reaches `sink`; measures `pid`'s CPU meanwhile.
fn drive(
    a: &Args,
    relay_ip: &str,
    ports: &[u16],
    source: &UdpSocket,
    sink: UdpSocket,
    pid: u32,
    target: Target,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    sink.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let counter = {
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let dests: Vec<SocketAddr> = ports
        .iter()
        .map(|p| {
            format!("{relay_ip}:{p}")
                .parse()
                .unwrap_or_else(|_| fail("bad address"))
        })
        .collect();
    let total_pps = a.streams as u64 * u64::from(a.pps);
    let per_tick = (total_pps / 1000).max(1);
    let ticks = u64::from(a.seconds) * 1000;
    // Warm up (latching, caches) for half a second, then measure.
    let mut seq: u16 = 0;
    let mut next = 0usize;
    let send_tick = |seq: &mut u16, next: &mut usize| {
        for _ in 0..per_tick {
            let stream = *next % a.streams;
            let dest = dests[stream % dests.len()];
            let _ = source.send_to(&rtp_packet(*seq, stream as u32), dest);
            *next += 1;
            if (*next).is_multiple_of(a.streams) {
                *seq = seq.wrapping_add(1);
            }
        }
    };
    let start = Instant::now();
    for t in 0..500u64 {
        send_tick(&mut seq, &mut next);
        sleep_until(start + Duration::from_millis(t + 1));
    }
    std::thread::sleep(Duration::from_millis(200));
    received.store(0, Ordering::Relaxed);
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let mut sent = 0;
    if a.paced {
        fine_timer_slack();
        let gap = Duration::from_nanos(1_000_000_000 / total_pps.max(1));
        let total = total_pps * u64::from(a.seconds);
        while sent < total {
            let stream = next % a.streams;
            let dest = dests[stream % dests.len()];
            let _ = source.send_to(&rtp_packet(seq, stream as u32), dest);
            next += 1;
            if next.is_multiple_of(a.streams) {
                seq = seq.wrapping_add(1);
            }
            sent += 1;
            sleep_until(start + gap * u32::try_from(sent).unwrap_or(u32::MAX));
        }
    } else {
        for t in 0..ticks {
            send_tick(&mut seq, &mut next);
            sent += per_tick;
            sleep_until(start + Duration::from_millis(t + 1));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu1 = cpu_seconds(pid);
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    let got = received.load(Ordering::Relaxed);
    Outcome {
        target,
        sent,
        received: got,
        cpu_ns_per_packet: if got > 0 {
            (cpu1 - cpu0) * 1e9 / got as f64
        } else {
            f64::NAN
        },
        xdp_share: None,
    }
}

/// The sink's socket, with as large a receive buffer as the kernel allows
/// (net.core.rmem_max), so bursts are not lost in the benchmark itself.
fn sink_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(16 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Lets this thread's sleeps end within a microsecond of their deadline
/// (the default timer slack is 50 µs, coarser than a paced gap).
fn fine_timer_slack() {
    #[allow(unsafe_code)]
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer argument and changes
    // only the calling thread's timer slack; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    if rc != 0 {
        eprintln!("relaycost: cannot set the timer slack; paced gaps will be coarser");
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn spawn(cmd: &mut Command, what: &str) -> Proc {
    Proc::new(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start {what}: {e}"))),
    )
}

fn run_target(a: &Args, topo: &Topology, t: Target) -> Option<Outcome> {
    let relay_ip = topo.relay_ip.clone();
    let source = UdpSocket::bind(format!("{}:9000", topo.caller_ip))
        .unwrap_or_else(|e| fail(&e.to_string()));
    let sink_addr: SocketAddr = format!("{}:7000", topo.sink_ip)
        .parse()
        .unwrap_or_else(|_| fail("bad sink"));
    let sink = sink_socket(sink_addr).unwrap_or_else(|e| fail(&e.to_string()));
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&e.to_string()));
    let work = std::env::temp_dir().join(format!("sbc-relaycost-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&work);
    let listen = format!("{relay_ip}:20000");
    let (proc_, ports) = match t {
        Target::Naive | Target::Batched => {
            let sub = if t == Target::Naive {
                "relay-naive"
            } else {
                "relay-batched"
            };
            let p = spawn(
                topo.relay(exe.as_os_str())
                    .args([sub, &listen, &sink_addr.to_string()]),
                sub,
            );
            std::thread::sleep(Duration::from_millis(300));
            (p, vec![20000])
        }
        Target::BatchedPorts => {
            let count = u16::try_from(a.streams).unwrap_or_else(|_| fail("too many streams"));
            let p = spawn(
                topo.relay(exe.as_os_str()).args([
                    "relay-batched-ports",
                    &relay_ip,
                    "20000",
                    &count.to_string(),
                    &sink_addr.to_string(),
                ]),
                "relay-batched-ports",
            );
            std::thread::sleep(Duration::from_millis(500));
            (p, (0..count).map(|i| 20000 + i).collect())
        }
        Target::Sbc | Target::SbcXdp => {
            let xdp = if t == Target::SbcXdp {
                format!(
                    "[media.xdp]\ninterface = \"{}\"\nmode = \"{}\"\n",
                    topo.xdp.0, topo.xdp.1
                )
            } else {
                String::new()
            };
            let media = format!("[media]\nlisten = \"{relay_ip}\"\nports = \"30000-31999\"\n{xdp}");
            let cfg = sbc_config(
                &relay_ip,
                &topo.caller_ip,
                &topo.sink_ip,
                1,
                a.batch_wait_us,
                &media,
            );
            let path = work.join("sbc.toml");
            std::fs::write(&path, cfg).unwrap_or_else(|e| fail(&e.to_string()));
            let p = spawn(
                topo.relay(a.sbc.as_os_str())
                    .arg("--config")
                    .arg(&path)
                    .env("RUST_LOG", "warn"),
                "sbc",
            );
            if !sbc_bench::harness::wait_healthy(
                &format!("{relay_ip}:9090"),
                Duration::from_secs(10),
            ) {
                fail("sbc did not start (is the media port range free?)");
            }
            let sbc: SocketAddr = format!("{relay_ip}:5060")
                .parse()
                .unwrap_or_else(|_| fail("bad address"));
            let calls = setup::sbc_calls(sbc, &topo.caller_ip, &topo.sink_ip, sink_addr, a.streams)
                .unwrap_or_else(|e| fail(&format!("sbc calls: {e}")));
            // As in a real call, the callee's side sends too: one packet
            // per call, before the measurement (it latches that side).
            for port in &calls.callee_ports {
                let _ = sink.send_to(&rtp_packet(0, 0), format!("{relay_ip}:{port}"));
            }
            (p, calls.caller_ports)
        }
        Target::Rtpengine => {
            if !Path::new(&a.rtpengine).exists() {
                eprintln!(
                    "relaycost: {} not installed (apt-get install rtpengine-daemon): skipped",
                    a.rtpengine.display()
                );
                return None;
            }
            let ng = format!("{relay_ip}:2223");
            let p = spawn(
                topo.relay(a.rtpengine.as_os_str()).args([
                    "--foreground",
                    "--log-stderr",
                    "--table=-1",
                    "--interface",
                    &relay_ip,
                    "--listen-ng",
                    &ng,
                    "--port-min",
                    "32000",
                    "--port-max",
                    "33999",
                    "--log-level",
                    "3",
                ]),
                "rtpengine",
            );
            std::thread::sleep(Duration::from_millis(1000));
            let ng: SocketAddr = ng.parse().unwrap_or_else(|_| fail("bad address"));
            let ports = setup::rtpengine_streams(ng, &topo.caller_ip, sink_addr, a.streams)
                .unwrap_or_else(|e| fail(&format!("rtpengine: {e}")));
            (p, ports)
        }
    };
    let pid = proc_.0.id();
    let mut out = drive(a, &relay_ip, &ports, &source, sink, pid, t);
    if matches!(t, Target::Sbc | Target::SbcXdp) {
        let metrics = sbc_bench::harness::scrape(&format!("{relay_ip}:9090")).unwrap_or_default();
        let value = |name: &str| sbc_bench::harness::metric_sum(&metrics, name);
        let relayed = value("sbc_media_packets_total");
        let kernel_drops = value("sbc_media_xdp_kernel_dropped_total");
        let media_drops = value("sbc_media_dropped_total");
        if kernel_drops + media_drops > 0.0 {
            eprintln!(
                "{t:?}: the sbc dropped {media_drops} packets (sbc_media_dropped_total), the kernel {kernel_drops} frames on its AF_XDP socket"
            );
        }
        out.xdp_share = Some(if relayed > 0.0 {
            value("sbc_media_xdp_sent_total") / relayed
        } else {
            0.0
        });
    }
    drop(proc_);
    let _ = std::fs::remove_dir_all(&work);
    Some(out)
}

fn main() {
    let a = Args::parse();
    match a.cmd {
        Some(Cmd::RelayNaive { listen, to }) => {
            if let Err(e) = minimal::naive(listen, to) {
                fail(&e.to_string());
            }
            return;
        }
        Some(Cmd::RelayBatched { listen, to }) => {
            if let Err(e) = minimal::batched(listen, to) {
                fail(&e.to_string());
            }
            return;
        }
        Some(Cmd::RelayBatchedPorts {
            ip,
            first,
            count,
            to,
        }) => {
            if let Err(e) = minimal::batched_ports(ip, first, count, to) {
                fail(&e.to_string());
            }
            return;
        }
        None => {}
    }
    let targets = if a.targets.is_empty() {
        vec![
            Target::Naive,
            Target::Batched,
            Target::BatchedPorts,
            Target::Sbc,
            Target::SbcXdp,
            Target::Rtpengine,
        ]
    } else {
        a.targets.clone()
    };
    if a.netns || a.veth || targets.contains(&Target::SbcXdp) {
        if std::env::var_os(IN_NETNS).is_none() {
            // Run again inside a new network namespace (util-linux's
            // unshare), and end with its status.
            let exe = std::env::current_exe().unwrap_or_else(|e| fail(&e.to_string()));
            let status = Command::new("unshare")
                .arg("--net")
                .arg("--")
                .arg(exe)
                .args(std::env::args_os().skip(1))
                .env(IN_NETNS, "1")
                .status()
                .unwrap_or_else(|e| fail(&format!("cannot run unshare: {e}")));
            std::process::exit(status.code().unwrap_or(2));
        }
        if let Err(e) = prepare_network_namespace() {
            fail(&format!("cannot set up the network namespace: {e}"));
        }
    }
    let ip = |h: u8| format!("127.{}.0.{h}", a.net);
    // The holder of the relays' namespace lives as long as the run.
    let (topo, _holder) = if a.veth {
        let h = relays_namespace().unwrap_or_else(|e| fail(&format!("veth setup: {e}")));
        let pid = h.0.id();
        let topo = Topology {
            relay_ip: "10.78.0.1".into(),
            caller_ip: "10.78.0.10".into(),
            sink_ip: "10.78.0.20".into(),
            relays_in: Some(pid),
            xdp: ("va", "native"),
        };
        (topo, Some(h))
    } else {
        let topo = Topology {
            relay_ip: ip(1),
            caller_ip: ip(10),
            sink_ip: ip(20),
            relays_in: None,
            xdp: ("lo", "generic"),
        };
        (topo, None)
    };
    // Every target once per round, in turn, so drifts of a shared machine
    // spread over all of them.
    let mut runs: Vec<Outcome> = Vec::new();
    for round in 0..a.rounds.max(1) {
        for t in &targets {
            if let Some(o) = run_target(&a, &topo, *t) {
                if a.rounds > 1 {
                    eprintln!(
                        "round {}: {:?} {:.0} ns/packet",
                        round + 1,
                        o.target,
                        o.cpu_ns_per_packet
                    );
                }
                runs.push(o);
            }
        }
    }
    let results: Vec<Outcome> = targets
        .iter()
        .filter_map(|t| median(runs.iter().filter(|r| r.target == *t).collect()))
        .collect();
    let cost_of = |t: Target| {
        results
            .iter()
            .find(|r| r.target == t)
            .map(|r| r.cpu_ns_per_packet)
    };
    let (batched, per_port) = (cost_of(Target::Batched), cost_of(Target::BatchedPorts));
    println!(
        "{} streams x {} packets/s = {} packets/s of 172-byte RTP, {} s per target, median of {} round(s)\n",
        a.streams,
        a.pps,
        a.streams as u64 * u64::from(a.pps),
        a.seconds,
        a.rounds.max(1)
    );
    println!(
        "| relay | sent | relayed | lost % | CPU ns/packet | vs batched, one port | vs batched, port per stream | via AF_XDP |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        let lost = 100.0 * (r.sent.saturating_sub(r.received)) as f64 / r.sent.max(1) as f64;
        let ratio = |base: Option<f64>| {
            base.map_or(String::from("—"), |b| {
                format!("{:.2}", r.cpu_ns_per_packet / b)
            })
        };
        let all: Vec<String> = runs
            .iter()
            .filter(|x| x.target == r.target)
            .map(|x| format!("{:.0}", x.cpu_ns_per_packet))
            .collect();
        println!(
            "| {:?} | {} | {} | {lost:.2} | {:.0}{} | {} | {} | {} |",
            r.target,
            r.sent,
            r.received,
            r.cpu_ns_per_packet,
            if all.len() > 1 {
                format!(" ({})", all.join(", "))
            } else {
                String::new()
            },
            ratio(batched),
            ratio(per_port),
            r.xdp_share
                .map_or(String::from("—"), |x| format!("{:.1} %", 100.0 * x))
        );
    }
}

/// The run of median cost among `runs` (the lower middle one for an even
/// count).
fn median(mut runs: Vec<&Outcome>) -> Option<Outcome> {
    runs.sort_by(|x, y| x.cpu_ns_per_packet.total_cmp(&y.cpu_ns_per_packet));
    runs.get(runs.len().saturating_sub(1) / 2)
        .map(|m| (*m).clone())
}

/// A second namespace for the relays, held by a sleeping process, joined
/// to ours by a veth pair: va 10.78.0.1 there, vb 10.78.0.10 (the caller)
/// and .20 (the sink) here.
fn relays_namespace() -> std::io::Result<Proc> {
    let holder = Proc::new(
        Command::new("unshare")
            .args(["--net", "--", "sleep", "100000"])
            .spawn()?,
    );
    let pid = holder.0.id().to_string();
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    let t0 = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&ours)
    {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(std::io::Error::other("the namespace did not appear"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let there = ["nsenter", "-t", pid.as_str(), "-n", "--"];
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb",
        ],
        vec!["ip", "link", "set", "va", "netns", pid.as_str()],
        [&there[..], &["ip", "link", "set", "lo", "up"]].concat(),
        [
            &there[..],
            &["ip", "addr", "add", "10.78.0.1/24", "dev", "va"],
        ]
        .concat(),
        [&there[..], &["ip", "link", "set", "va", "up"]].concat(),
        vec!["ip", "addr", "add", "10.78.0.10/24", "dev", "vb"],
        vec!["ip", "addr", "add", "10.78.0.20/24", "dev", "vb"],
        vec!["ip", "link", "set", "vb", "up"],
    ];
    for step in steps {
        let ok = Command::new(step[0]).args(&step[1..]).status()?.success();
        if !ok {
            return Err(std::io::Error::other(format!("{} failed", step.join(" "))));
        }
    }
    Ok(holder)
}

/// Set in the environment of the run inside the network namespace.
const IN_NETNS: &str = "RELAYCOST_IN_NETNS";

/// In the new network namespace: lo up, and lo taking frames AF_XDP sends
/// to 127.0.0.0/8 (`route_localnet`).
fn prepare_network_namespace() -> std::io::Result<()> {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !up.success() {
        return Err(std::io::Error::other("ip link set lo up failed"));
    }
    for conf in ["all", "lo"] {
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{conf}/route_localnet"),
            "1",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fine_timer_slack_sets_this_threads_slack() {
        let slack = std::thread::spawn(|| {
            super::fine_timer_slack();
            #[allow(unsafe_code)]
            // SAFETY: PR_GET_TIMERSLACK reads the calling thread's slack;
            // no memory is passed.
            unsafe {
                libc::prctl(libc::PR_GET_TIMERSLACK)
            }
        })
        .join()
        .expect("thread");
        assert_eq!(slack, 1000);
    }
}
