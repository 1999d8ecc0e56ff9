//! Heap bytes held per call by the B2BUA engine, at each stage of a call's
//! life (ringing, answered, confirmed, ended and resting), measured with a
//! counting allocator on the sans-IO engine (no sockets); then the process
//! RSS and live heap under a steady 10,000 zero-second calls per second of
//! simulated time (each ended call rests for 64*T1 = 32 s).
//! `cargo run --release -p sbc-bench --bin callmem` (both), or with
//! `-- steady` (the steady state alone, in a fresh process), or with
//! `-- allocs` (heap allocations the engine makes per zero-second call;
//! `-- allocs sites` also names the code that makes them; `-- allocs media`
//! or `-- allocs sites media` with media anchored, as `cpu` runs), or with `-- cpu`
//! (the time the engine itself spends per zero-second call: no sockets, no
//! kernel; the user-space share of a call's cost, for profiling), or with
//! `-- live` (what a confirmed call holds, by the code that allocated it),
//! or with `-- register` (the engine's time and allocations per digest
//! registration, as `regcost` offers them; `-- register sites` also names
//! the code that makes the allocations), or with `-- keepalive` (the
//! engine's time per keepalive tick with 100,000 phones bound, CRLF
//! keepalives every 30 s: what keeping them alive costs a shard).
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use sbc_core::b2bua::{Engine, Secrets, ShardId};
use sbc_core::net::{Flow, LocalId};
use sbc_core::policy::{
    Acl, CallTimers, Failover, Listener, NumberPattern, Policy, Route, Target, Trunk, TrunkId,
};
use sbc_core::sip::{HeaderName, Message};
use sbc_core::stats::ShardStats;
use sbc_core::transaction::TimerConfig;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Allocations made while `COUNTING` is set (inside engine calls).
static ALLOCS: AtomicIsize = AtomicIsize::new(0);
/// Where those allocations were made, when `SITES` is set.
static SITES: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
/// Set by `callmem cpu`: the allocator only forwards, so that the time
/// measured is the engine's with the system allocator alone.
static TIMING: AtomicBool = AtomicBool::new(false);
/// Set by `callmem live` while `HELD` records.
static HOLDING: AtomicBool = AtomicBool::new(false);
/// Set when `SITES` is wanted (saves the lock on every allocation otherwise).
static SITES_ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static IN_SITE: Cell<bool> = const { Cell::new(false) };
}

/// Nanoseconds spent inside engine calls (`counted`), for `callmem cpu`.
static ENGINE_NS: AtomicIsize = AtomicIsize::new(0);

/// Runs `f` (an engine call) with its allocations and its time counted.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.with(|c| c.set(true));
    let t = Instant::now();
    let r = f();
    ENGINE_NS.fetch_add(t.elapsed().as_nanos() as isize, Ordering::Relaxed);
    COUNTING.with(|c| c.set(false));
    r
}

/// Counts one engine allocation and, when sites are asked for, where it
/// came from (see [`site`]).
fn count_allocation() {
    if !COUNTING.with(Cell::get) || IN_SITE.with(Cell::get) {
        return;
    }
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if !SITES_ON.load(Ordering::Relaxed) {
        return;
    }
    let Ok(mut sites) = SITES.try_lock() else {
        return;
    };
    let Some(sites) = sites.as_mut() else { return };
    IN_SITE.with(|c| c.set(true));
    *sites.entry(site()).or_default() += 1;
    IN_SITE.with(|c| c.set(false));
}

/// The code making an allocation: the innermost three `sbc_core` frames
/// of its backtrace.
fn site() -> String {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    // Frames read "N: function" then "at path:line:column".
    let mut function = "";
    let mut frames: Vec<String> = Vec::new();
    for line in trace.lines().map(str::trim) {
        if let Some(path) = line.strip_prefix("at ./dataplane/core/src/") {
            let at = path.rsplit_once(':').map_or(path, |(p, _)| p);
            frames.push(format!("{function} ({at})"));
            if frames.len() == 3 {
                break;
            }
        } else if let Some((_, f)) = line.split_once(": ") {
            function = f;
        }
    }
    frames.join(" <- ")
}

/// `callmem live`: the engine's allocations still held, by address, with
/// where they were made and their size.
static HELD: Mutex<Option<HashMap<usize, (String, usize)>>> = Mutex::new(None);

/// Records a live engine allocation for `callmem live`.
fn hold(ptr: *mut u8, size: usize) {
    if !COUNTING.with(Cell::get) || IN_SITE.with(Cell::get) {
        return;
    }
    let Ok(mut held) = HELD.try_lock() else {
        return;
    };
    let Some(held) = held.as_mut() else { return };
    IN_SITE.with(|c| c.set(true));
    held.insert(ptr as usize, (site(), size));
    IN_SITE.with(|c| c.set(false));
}

/// Forgets a freed allocation for `callmem live`.
fn release(ptr: *mut u8) {
    if IN_SITE.with(Cell::get) {
        return;
    }
    let Ok(mut held) = HELD.try_lock() else {
        return;
    };
    let Some(held) = held.as_mut() else { return };
    IN_SITE.with(|c| c.set(true));
    held.remove(&(ptr as usize));
    IN_SITE.with(|c| c.set(false));
}

// SAFETY: forwards to the system allocator; only tracks live bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TIMING.load(Ordering::Relaxed) {
            // SAFETY: same contract as the caller's.
            return unsafe { System.alloc(layout) };
        }
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        count_allocation();
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if HOLDING.load(Ordering::Relaxed) {
            hold(ptr, layout.size());
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if TIMING.load(Ordering::Relaxed) {
            // SAFETY: same contract as the caller's.
            return unsafe { System.dealloc(ptr, layout) };
        }
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        if HOLDING.load(Ordering::Relaxed) {
            release(ptr);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Two trunks and a route between them; with `media`, calls' media
/// anchored as the sbc does by default (the memory figures are for
/// signalling-only calls, the CPU figure for calls as the sbc runs them).
fn policy(media: bool) -> Policy {
    let trunk = |name: &str, ip: &str| Trunk {
        name: name.into(),
        sources: vec![
            format!("{ip}/32")
                .parse()
                .unwrap_or_else(|_| std::process::exit(2)),
        ],
        source_port: None,
        address: format!("{ip}:5060")
            .parse()
            .unwrap_or_else(|_| std::process::exit(2)),
        transport: sbc_core::net::Transport::Udp,
        media: sbc_core::policy::MediaMode::Anchor,
        codecs: None,
        strict_latch: false,
        probe: None,
        max_calls: None,
        max_cps: None,
        public: false,
        follow_contact: false,
        media_share: None,
        tls_only: false,
        registration: None,
        dynamic: false,
        stats: Arc::default(),
    };
    Policy {
        version: 1,
        listeners: vec![Listener {
            transport: sbc_core::net::Transport::Udp,
            bind: "192.0.2.1:5060"
                .parse()
                .unwrap_or_else(|_| std::process::exit(2)),
            advertise: "192.0.2.1:5060".into(),
        }],
        timers: TimerConfig::default(),
        call_timers: CallTimers::default(),
        limits: Default::default(),
        acl: Acl::default(),
        trunks: vec![trunk("pbx", "10.0.0.10"), trunk("carrier", "10.0.0.20")],
        routes: vec![Route {
            name: "out".into(),
            from: vec![TrunkId(0)],
            numbers: vec![NumberPattern::Prefix(String::new())],
            targets: vec![Target {
                trunk: TrunkId(1),
                priority: 1,
                weight: 1,
            }],
            failover: Failover::standard(),
            extension: None,
        }],
        media: media.then(|| sbc_core::policy::MediaPolicy {
            bind: [192, 0, 2, 1].into(),
            advertise: [192, 0, 2, 1].into(),
            bind_other: None,
            advertise_other: None,
            first_port: 10_000,
            last_port: 59_999,
            timeout: Duration::from_secs(60),
            forbidden: Vec::new(),
            xdp: None,
        }),
        accounts: Default::default(),
    }
}

/// The callee's 200 (with SDP) to the INVITE `m` the engine sent it.
fn answer_invite(m: &Message<'_>, body: &str) -> String {
    let mut r = String::from("SIP/2.0 200 OK\r\n");
    for h in m.all(HeaderName::Via) {
        r.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(h.value)));
    }
    r.push_str(&format!(
        "From: {}\r\nTo: {};tag=c\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.0.0.20>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        header(m, HeaderName::From),
        header(m, HeaderName::To),
        header(m, HeaderName::CallId),
        body.len()
    ));
    r
}

/// The callee's 200 to the BYE `m` the engine sent it.
fn answer_bye(m: &Message<'_>) -> String {
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(m, HeaderName::Via),
        header(m, HeaderName::From),
        header(m, HeaderName::To),
        header(m, HeaderName::CallId),
        header(m, HeaderName::CSeq)
    )
}

fn header(m: &Message<'_>, h: HeaderName) -> String {
    String::from_utf8_lossy(m.value(h).unwrap_or(b"")).into_owned()
}

fn main() {
    const N: usize = 20_000;
    let flow = |a: &str| {
        Flow::udp(
            a.parse().unwrap_or_else(|_| std::process::exit(2)),
            LocalId(0),
        )
    };
    let (pbx, carrier) = (flow("10.0.0.10:5060"), flow("10.0.0.20:5060"));
    let mut engine = Engine::new(
        ShardId(0),
        1,
        Secrets::from_bytes([7; 48]),
        // `cpu` anchors media; `allocs` does when asked (`allocs media`).
        Arc::new(policy(
            std::env::args().nth(1).as_deref() == Some("cpu")
                || std::env::args().skip(2).any(|a| a == "media"),
        )),
        Arc::new(ShardStats::default()),
    );
    let mut now = Instant::now();
    let mut buf = vec![0u8; 65536];
    let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\n";
    // `callmem steady`: only the steady-state run, in a fresh process (its
    // RSS then is that load's alone).
    if std::env::args().nth(1).as_deref() == Some("steady") {
        steady(&mut engine, now, pbx, carrier, body, &mut buf);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("allocs") {
        allocations(&mut engine, now, pbx, carrier, body, &mut buf);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("live") {
        live(&mut engine, now, pbx, carrier, body, &mut buf);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("register") {
        registrations(now, &mut buf);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("keepalive") {
        keepalive_ticks(now, &mut buf);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("cpu") {
        TIMING.store(true, Ordering::Relaxed);
        cpu(&mut engine, now, pbx, carrier, body, &mut buf);
        return;
    }
    let base = LIVE.load(Ordering::Relaxed);
    let mut b_invites = Vec::with_capacity(N);
    let mut tos = Vec::with_capacity(N);
    // What this harness itself holds (the B-leg INVITEs it answers, the
    // To values it ACKs and BYEs with) is not the engine's: left out.
    let held = |b: &Vec<Vec<u8>>, t: &Vec<(String, String)>| -> isize {
        let inner: usize = b.iter().map(Vec::capacity).sum();
        let strings: usize = t.iter().map(|(c, to)| c.capacity() + to.capacity()).sum();
        let outer = b.capacity() * std::mem::size_of::<Vec<u8>>()
            + t.capacity() * std::mem::size_of::<(String, String)>();
        (inner + strings + outer) as isize
    };
    let report = |stage: &str, live: isize| {
        println!("| {stage} | {:.0} |", (live - base) as f64 / N as f64);
    };
    println!("| stage ({N} calls) | heap bytes per call |");
    println!("|---|---|");
    for i in 0..N {
        let inv = format!(
            "INVITE sip:+15550{i}@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@10.0.0.10>;tag=a{i}\r\nTo: <sip:+15550{i}@192.0.2.1>\r\nCall-ID: {i}@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.10:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        engine.handle_datagram(now, pbx, inv.as_bytes());
        while let Some(t) = engine.poll_transmit(&mut buf) {
            if t.dest.remote == carrier.remote {
                b_invites.push(buf[..t.len].to_vec());
            }
        }
    }
    // The shard drains the engine's events (logs, CDRs); so does this.
    while engine.poll_event().is_some() {}
    report(
        "INVITE relayed, waiting",
        LIVE.load(Ordering::Relaxed) - held(&b_invites, &tos),
    );
    for b in &b_invites {
        let Ok(m) = Message::parse(b) else { continue };
        engine.handle_datagram(now, carrier, answer_invite(&m, body).as_bytes());
        while let Some(t) = engine.poll_transmit(&mut buf) {
            if t.dest.remote == pbx.remote
                && let Ok(m) = Message::parse(&buf[..t.len])
            {
                tos.push((header(&m, HeaderName::CallId), header(&m, HeaderName::To)));
            }
        }
    }
    while engine.poll_event().is_some() {}
    report(
        "answered (200 relayed)",
        LIVE.load(Ordering::Relaxed) - held(&b_invites, &tos),
    );
    let in_dialog = |m: &str, cseq: u32, extra: &str, i: usize, call_id: &str, to: &str| {
        format!(
            "{m} sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK{extra}{i}\r\nFrom: <sip:alice@10.0.0.10>;tag=a{i}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {m}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (i, (call_id, to)) in tos.iter().enumerate() {
        engine.handle_datagram(
            now,
            pbx,
            in_dialog("ACK", 1, "a", i, call_id, to).as_bytes(),
        );
        while engine.poll_transmit(&mut buf).is_some() {}
        while engine.poll_event().is_some() {}
    }
    report(
        "confirmed (ACKed: a live call)",
        LIVE.load(Ordering::Relaxed) - held(&b_invites, &tos),
    );
    for (i, (call_id, to)) in tos.iter().enumerate() {
        engine.handle_datagram(
            now,
            pbx,
            in_dialog("BYE", 2, "b", i, call_id, to).as_bytes(),
        );
        while let Some(t) = engine.poll_transmit(&mut buf) {
            if t.dest.remote == carrier.remote
                && let Ok(m) = Message::parse(&buf[..t.len])
                && m.request_line().is_some_and(|l| l.method_raw == b"BYE")
            {
                let ok = answer_bye(&m);
                engine.handle_datagram(now, carrier, ok.as_bytes());
            }
        }
        while engine.poll_transmit(&mut buf).is_some() {}
        while engine.poll_event().is_some() {}
    }
    report(
        "ended, resting (64*T1)",
        LIVE.load(Ordering::Relaxed) - held(&b_invites, &tos),
    );
    println!(
        "\nresting as tombstones: {} (of {N})",
        engine.resting_calls()
    );
    now += Duration::from_secs(40);
    engine.handle_timeout(now);
    while engine.poll_event().is_some() {}
    println!("\ncalls left after 40 s: {} (of {N})", engine.calls());
    report(
        "after linger",
        LIVE.load(Ordering::Relaxed) - held(&b_invites, &tos),
    );
    steady(
        &mut engine,
        now + Duration::from_secs(60),
        pbx,
        carrier,
        body,
        &mut buf,
    );
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Call `n`'s INVITE (SDP offer) from the PBX and the carrier's 200 (SDP
/// answer) to what the engine relays; the To value the caller got (for
/// its ACK and BYE), `None` when something did not go out.
fn answered_call(
    engine: &mut Engine,
    now: Instant,
    n: u64,
    (pbx, carrier): (Flow, Flow),
    body: &str,
    buf: &mut [u8],
) -> Option<String> {
    let inv = format!(
        "INVITE sip:+1555{n}@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKs{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@10.0.0.10>;tag=s{n}\r\nTo: <sip:+1555{n}@192.0.2.1>\r\nCall-ID: s{n}@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.10:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    counted(|| engine.handle_datagram(now, pbx, inv.as_bytes()));
    let mut b_invite = None;
    while let Some(t) = counted(|| engine.poll_transmit(buf)) {
        if t.dest.remote == carrier.remote {
            b_invite = Some(buf[..t.len].to_vec());
        }
    }
    let b = b_invite?;
    let m = Message::parse(&b).ok()?;
    let answer = answer_invite(&m, body);
    counted(|| engine.handle_datagram(now, carrier, answer.as_bytes()));
    let mut to = None;
    while let Some(t) = counted(|| engine.poll_transmit(buf)) {
        if t.dest.remote == pbx.remote
            && let Ok(m) = Message::parse(&buf[..t.len])
        {
            to = Some(header(&m, HeaderName::To));
        }
    }
    to
}

/// One zero-second call, start to end, at `now`: INVITE, 200, ACK, BYE, 200.
fn zero_second_call(
    engine: &mut Engine,
    now: Instant,
    n: u64,
    pbx: Flow,
    carrier: Flow,
    body: &str,
    buf: &mut [u8],
) {
    let Some(to) = answered_call(engine, now, n, (pbx, carrier), body, buf) else {
        return;
    };
    for (m, cseq, extra) in [("ACK", 1, "a"), ("BYE", 2, "b")] {
        let req = format!(
            "{m} sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK{extra}s{n}\r\nFrom: <sip:alice@10.0.0.10>;tag=s{n}\r\nTo: {to}\r\nCall-ID: s{n}@pbx\r\nCSeq: {cseq} {m}\r\nContent-Length: 0\r\n\r\n"
        );
        counted(|| engine.handle_datagram(now, pbx, req.as_bytes()));
    }
    let mut ok = None;
    while let Some(t) = counted(|| engine.poll_transmit(buf)) {
        if t.dest.remote == carrier.remote
            && let Ok(m) = Message::parse(&buf[..t.len])
            && m.request_line().is_some_and(|l| l.method_raw == b"BYE")
        {
            ok = Some(answer_bye(&m));
        }
    }
    if let Some(ok) = ok {
        counted(|| engine.handle_datagram(now, carrier, ok.as_bytes()));
    }
    while counted(|| engine.poll_transmit(buf)).is_some() {}
    while counted(|| engine.poll_event()).is_some() {}
}

/// 10,000 zero-second calls per simulated second for 40 s: the calls of
/// the last 32 s rest at once. Reports live heap and RSS at the end.
fn steady(
    engine: &mut Engine,
    start: Instant,
    pbx: Flow,
    carrier: Flow,
    body: &str,
    buf: &mut [u8],
) {
    const RATE: u64 = 10_000;
    const SECONDS: u64 = 40;
    let rss_before = rss_kib();
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut now = start;
    let mut n = 0;
    for _ms in 0..SECONDS * 1000 {
        for _ in 0..RATE / 1000 {
            zero_second_call(engine, now, n, pbx, carrier, body, buf);
            n += 1;
        }
        now += Duration::from_millis(1);
        engine.handle_timeout(now);
        while engine.poll_transmit(buf).is_some() {}
        while engine.poll_event().is_some() {}
    }
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    println!("\n| steady state: {RATE} zero-second calls/s, {SECONDS} s simulated | value |");
    println!("|---|---|");
    println!("| calls made | {n} |");
    println!(
        "| calls held (resting) | {} ({}) |",
        engine.calls(),
        engine.resting_calls()
    );
    println!("| live heap MiB | {:.1} |", heap as f64 / 1048576.0);
    println!(
        "| heap bytes per held call | {:.0} |",
        heap as f64 / engine.calls().max(1) as f64
    );
    println!(
        "| process RSS MiB (before) | {:.1} ({:.1}) |",
        rss_kib() as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}

/// Heap allocations the engine makes per zero-second call (INVITE, 200,
/// ACK, BYE, 200, and the events), after 1,000 calls to warm up; with
/// `sites`, the code that makes them, most frequent first.
fn allocations(
    engine: &mut Engine,
    start: Instant,
    pbx: Flow,
    carrier: Flow,
    body: &str,
    buf: &mut [u8],
) {
    const WARM: u64 = 1_000;
    const CALLS: u64 = 2_000;
    let mut now = start;
    for n in 0..WARM {
        zero_second_call(engine, now, n, pbx, carrier, body, buf);
        now += Duration::from_micros(100);
    }
    if std::env::args().nth(2).as_deref() == Some("sites")
        && let Ok(mut s) = SITES.lock()
    {
        *s = Some(HashMap::new());
        SITES_ON.store(true, Ordering::Relaxed);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for n in WARM..WARM + CALLS {
        zero_second_call(engine, now, n, pbx, carrier, body, buf);
        now += Duration::from_micros(100);
    }
    let made = ALLOCS.load(Ordering::Relaxed) - before;
    println!(
        "engine allocations per zero-second call: {:.2}",
        made as f64 / CALLS as f64
    );
    let sites = SITES.lock().ok().and_then(|mut s| s.take());
    if let Some(sites) = sites {
        let mut sites: Vec<_> = sites.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (site, n) in sites {
            println!("{:6.2}  {site}", n as f64 / CALLS as f64);
        }
    }
}

/// The time spent inside the engine per zero-second call (INVITE, 200, ACK,
/// BYE, 200 and the events, each message parsed, decided and written), at
/// 10,000 calls per simulated second so that ended calls rest and expire as
/// under load; the best of five rounds of 20,000 calls after a warm-up.
fn cpu(engine: &mut Engine, start: Instant, pbx: Flow, carrier: Flow, body: &str, buf: &mut [u8]) {
    // `CALLMEM_CALLS` shortens the rounds (e.g. under valgrind, whose
    // instruction counts do not depend on the machine's noise).
    let calls: u64 = std::env::var("CALLMEM_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut now = start;
    let mut n = 0;
    let mut round = |engine: &mut Engine| {
        let before = ENGINE_NS.load(Ordering::Relaxed);
        for _ in 0..calls {
            zero_second_call(engine, now, n, pbx, carrier, body, buf);
            n += 1;
            now += Duration::from_micros(100);
            if n % 10 == 0 {
                counted(|| engine.handle_timeout(now));
                while counted(|| engine.poll_transmit(buf)).is_some() {}
            }
        }
        (ENGINE_NS.load(Ordering::Relaxed) - before) as f64 / calls as f64
    };
    // Warm-up: 32 s of simulated calls fill the resting set.
    for _ in 0..16 {
        round(engine);
    }
    let rounds: Vec<f64> = (0..5).map(|_| round(engine)).collect();
    let best = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "engine time per zero-second call: {:.2} µs (best of {:?} ns)",
        best / 1000.0,
        rounds.iter().map(|r| r.round() as i64).collect::<Vec<_>>()
    );
}

/// What the engine holds per confirmed call (INVITE, 200, ACK; the call
/// up), by the code that allocated it, largest first.
fn live(engine: &mut Engine, now: Instant, pbx: Flow, carrier: Flow, body: &str, buf: &mut [u8]) {
    const CALLS: u64 = 1_000;
    if let Ok(mut h) = HELD.lock() {
        *h = Some(HashMap::new());
    }
    HOLDING.store(true, Ordering::Relaxed);
    for n in 0..CALLS {
        let Some(to) = answered_call(engine, now, n, (pbx, carrier), body, buf) else {
            continue;
        };
        let ack = format!(
            "ACK sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKas{n}\r\nFrom: <sip:alice@10.0.0.10>;tag=s{n}\r\nTo: {to}\r\nCall-ID: s{n}@pbx\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        counted(|| engine.handle_datagram(now, pbx, ack.as_bytes()));
        while counted(|| engine.poll_transmit(buf)).is_some() {}
        while counted(|| engine.poll_event()).is_some() {}
    }
    HOLDING.store(false, Ordering::Relaxed);
    let held = HELD
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .unwrap_or_default();
    let mut by_site: HashMap<String, (usize, usize)> = HashMap::new();
    for (site, size) in held.into_values() {
        let e = by_site.entry(site).or_default();
        e.0 += 1;
        e.1 += size;
    }
    let mut sites: Vec<_> = by_site.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1.1));
    let total: usize = sites.iter().map(|s| s.1.1).sum();
    println!(
        "held per confirmed call: {:.0} bytes requested ({CALLS} calls; malloc adds its own overhead per block)",
        total as f64 / CALLS as f64
    );
    for (site, (count, bytes)) in sites {
        println!(
            "{:7.0} B {:5.2}x  {site}",
            bytes as f64 / CALLS as f64,
            count as f64 / CALLS as f64
        );
    }
}

/// Accounts of the `register` run: one per extension, `u<i>` / `p<i>`,
/// like `regcost`'s.
const REGISTER_ACCOUNTS: u32 = 20_000;

/// The registrar `regcost` configures (realm "bench", MD5, no lockout, no
/// keepalives) over [`REGISTER_ACCOUNTS`] accounts; every stranger answered.
fn registrar_policy() -> Policy {
    registrar_policy_of(REGISTER_ACCOUNTS)
}

/// [`registrar_policy`] with `n` accounts.
fn registrar_policy_of(n: u32) -> Policy {
    use sbc_core::registrar::{Account, AccountSecret, Accounts, Settings};
    let mut p = policy(false);
    let accounts = (0..n)
        .map(|i| Account {
            username: format!("u{i}").into(),
            extension: (1_000_000 + i).to_string().into(),
            secret: AccountSecret::Password(format!("p{i}").into_bytes().into()),
            networks: Vec::new(),
            transports: Vec::new(),
            trunk: None,
        })
        .collect();
    p.accounts = Accounts::new(
        Some(Settings {
            realm: "bench".into(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![sbc_core::sip::digest::Algorithm::Md5],
            lockout: None,
            lockout_exempt: Vec::new(),
            keepalive: None,
        }),
        accounts,
    );
    p.acl.strangers.per_source = 100_000;
    p.acl.strangers.total = 100_000;
    p
}

/// A REGISTER of account `user` from the phone at 10.1.0.2:5062.
fn register_request(user: u32, call_id: &str, cseq: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:bench SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.2:5062;branch=z9hG4bK{call_id}-{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:u{user}@bench>;tag={call_id}\r\nTo: <sip:u{user}@bench>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:u{user}@10.1.0.2:5062>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// One digest registration: REGISTER, the 401, the REGISTER answering it,
/// the 200. Only the engine's calls are counted. False when an answer
/// is not the one expected.
fn digest_registration(engine: &mut Engine, now: Instant, n: u64, buf: &mut [u8]) -> bool {
    use sbc_core::sip::digest::{self, Challenge, Credentials};
    let phone = Flow::udp(
        "10.1.0.2:5062"
            .parse()
            .unwrap_or_else(|_| std::process::exit(2)),
        LocalId(0),
    );
    let user = u32::try_from(n % u64::from(REGISTER_ACCOUNTS)).unwrap_or(0);
    let call_id = format!("reg{n}");
    let first = register_request(user, &call_id, 1, "");
    counted(|| engine.handle_datagram(now, phone, first.as_bytes()));
    let Some(t) = counted(|| engine.poll_transmit(buf)) else {
        return false;
    };
    let challenge = Message::parse(&buf[..t.len])
        .ok()
        .filter(|m| m.status_line().is_some_and(|s| s.code == 401))
        .and_then(|m| m.value(HeaderName::WwwAuthenticate))
        .and_then(|v| Challenge::parse(v).ok());
    let Some(challenge) = challenge else {
        return false;
    };
    let password = format!("p{user}");
    let username = format!("u{user}");
    let me = Credentials {
        username: username.as_bytes(),
        password: password.as_bytes(),
    };
    let mut auth = Vec::new();
    let written = digest::answer(&challenge, &me, b"REGISTER", b"sip:bench", b"c0ffee", 1)
        .is_ok_and(|a| a.write(&mut auth).is_ok());
    if !written {
        return false;
    }
    let second = register_request(
        user,
        &call_id,
        2,
        &format!("Authorization: {}\r\n", String::from_utf8_lossy(&auth)),
    );
    counted(|| engine.handle_datagram(now, phone, second.as_bytes()));
    let Some(t) = counted(|| engine.poll_transmit(buf)) else {
        return false;
    };
    let ok = Message::parse(&buf[..t.len])
        .ok()
        .and_then(|m| m.status_line().map(|s| s.code))
        == Some(200);
    while counted(|| engine.poll_transmit(buf)).is_some() {}
    while counted(|| engine.poll_event()).is_some() {}
    ok
}

/// `callmem register`: rounds of digest registrations at 2,000 a second
/// of simulated time (`CALLMEM_REGISTRATIONS` a round, 20,000 by
/// default), after 16 rounds of warm-up: the engine's time per
/// registration (best round) and its allocations per registration.
fn registrations(start: Instant, buf: &mut [u8]) {
    let per_round: u64 = std::env::var("CALLMEM_REGISTRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut engine = Engine::new(
        ShardId(0),
        1,
        Secrets::from_bytes([7; 48]),
        Arc::new(registrar_policy()),
        Arc::new(ShardStats::default()),
    );
    let mut now = start;
    let mut n = 0u64;
    let mut failed = 0u64;
    let mut round = |engine: &mut Engine| {
        let (ns, allocs) = (
            ENGINE_NS.load(Ordering::Relaxed),
            ALLOCS.load(Ordering::Relaxed),
        );
        for _ in 0..per_round {
            if !digest_registration(engine, now, n, buf) {
                failed += 1;
            }
            n += 1;
            now += Duration::from_micros(500);
            if n.is_multiple_of(10) {
                counted(|| engine.handle_timeout(now));
                while counted(|| engine.poll_transmit(buf)).is_some() {}
            }
        }
        (
            (ENGINE_NS.load(Ordering::Relaxed) - ns) as f64 / per_round as f64,
            (ALLOCS.load(Ordering::Relaxed) - allocs) as f64 / per_round as f64,
        )
    };
    for _ in 0..16 {
        round(&mut engine);
    }
    let sites = std::env::args().nth(2).as_deref() == Some("sites");
    if sites && let Ok(mut s) = SITES.lock() {
        *s = Some(HashMap::new());
        SITES_ON.store(true, Ordering::Relaxed);
    }
    let rounds: Vec<(f64, f64)> = (0..5).map(|_| round(&mut engine)).collect();
    let best = rounds.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    println!(
        "engine time per digest registration: {:.2} µs (best of {:?} ns)",
        best / 1000.0,
        rounds
            .iter()
            .map(|r| r.0.round() as i64)
            .collect::<Vec<_>>()
    );
    println!(
        "engine allocations per digest registration: {:.2}",
        rounds.last().map_or(0.0, |r| r.1)
    );
    // With `sites`, where they are made (over the five measured rounds;
    // the times above are then not the engine's alone).
    if let Some(sites) = SITES.lock().ok().and_then(|mut s| s.take()) {
        let mut sites: Vec<_> = sites.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (site, n) in sites {
            println!("{:6.2}  {site}", n as f64 / (5 * per_round) as f64);
        }
    }
    if failed > 0 {
        println!("registrations that did not end in 200: {failed}");
        std::process::exit(1);
    }
}

/// `callmem keepalive`: 100,000 bindings on one engine, CRLF keepalives
/// every 30 s; the engine's time per one-second tick (the tick's own work
/// and the 3,333 or so keepalives it sends), over two intervals after one
/// to warm up.
fn keepalive_ticks(start: Instant, buf: &mut [u8]) {
    use sbc_core::registrar::{Binding, Keepalive, KeepaliveMethod};
    const PHONES: u32 = 100_000;
    let mut p = registrar_policy_of(PHONES);
    if let Some(settings) = p.accounts.settings.as_mut() {
        settings.keepalive = Some(Keepalive {
            method: KeepaliveMethod::Crlf,
            interval: Duration::from_secs(30),
            unreachable_after: 2,
        });
    }
    let mut engine = Engine::new(
        ShardId(0),
        1,
        Secrets::from_bytes([7; 48]),
        Arc::new(p),
        Arc::new(ShardStats::default()),
    );
    let bindings = (0..PHONES).map(|i| {
        let flow = Flow::udp(
            std::net::SocketAddr::from((
                [203, 0, 113, (i % 250) as u8],
                1024 + (i % 60_000) as u16,
            )),
            LocalId(0),
        );
        Binding::new(
            (format!("u{i}").into(), (1_000_000 + i).to_string().into()),
            (
                format!("sip:u{i}@10.1.1.2:5062").as_bytes(),
                b"keepalive-bench",
            ),
            flow,
            start + Duration::from_secs(36_000),
            1,
        )
    });
    engine.restore_bindings(bindings.collect::<Vec<_>>());
    // Installing the policy starts the ticks, as a shard does at start.
    let policy = Arc::clone(engine.policy());
    engine.set_policy(start, policy);
    let mut now = start;
    // Engine time per second and keepalives sent per second.
    let mut run = |engine: &mut Engine, seconds: u64| {
        let ns = ENGINE_NS.load(Ordering::Relaxed);
        let mut sent = 0u64;
        let end = now + Duration::from_secs(seconds);
        while let Some(t) = engine.poll_timeout().filter(|t| *t <= end) {
            now = now.max(t);
            counted(|| engine.handle_timeout(now));
            while counted(|| engine.poll_transmit(buf)).is_some() {
                sent += 1;
            }
        }
        now = end;
        (
            (ENGINE_NS.load(Ordering::Relaxed) - ns) as f64 / seconds as f64,
            sent as f64 / seconds as f64,
        )
    };
    run(&mut engine, 30);
    let (per_tick, sent) = run(&mut engine, 60);
    println!(
        "engine time per keepalive tick, {PHONES} phones, CRLF every 30 s: {:.2} ms ({sent:.0} keepalives a tick)",
        per_tick / 1e6,
    );
}
