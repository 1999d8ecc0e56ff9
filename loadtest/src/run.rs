//! A whole run: options -> scenario, sockets and threads -> report.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::{Args, parse_duration_ms, parse_remote, remote_host};
use crate::countfile::CountFile;
use crate::engine::{Config, Quota};
use crate::inject::{Inject, Injection};
use crate::media::{Echo, MediaSockets};
use crate::rate::RatePlan;
use crate::report::Report;
use crate::runtime::{Control, ThreadPlan, bind, run_thread};
use crate::scenario::{LoadContext, Scenario, StepKind, read_text};
use crate::statfile::StatFile;
use crate::stats::Stats;
use crate::steer::{self, Effect, Keyboard, Remote, Steer, Steering};
use crate::template::Keyword;
use crate::tracefile::{Limits, Spec, Specs, TraceFiles};

/// A run that could not be done, with SIPp's exit status for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub code: u8,
    pub message: String,
}

impl RunError {
    fn fatal(message: impl Into<String>) -> Self {
        RunError {
            code: 255,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        RunError::fatal(message)
    }
}

impl From<&str> for RunError {
    fn from(message: &str) -> Self {
        RunError::fatal(message)
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    /// SIPp's exit status.
    pub code: u8,
}

/// Loads the scenario named by `-sf` or `-sn`.
pub fn load_scenario(args: &Args) -> Result<Scenario, String> {
    let ctx = LoadContext {
        keys: args
            .key
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        inf: inf_names(args),
        rtp_payload: args.rtp_payload,
    };
    let mut scn = match (&args.scenario_file, &args.scenario_name) {
        (Some(_), Some(_)) => Err("give either -sf or -sn, not both".into()),
        (None, None) => Err("no scenario: give -sf FILE or -sn uac|uas".into()),
        (Some(path), None) => scenario_file(path, &ctx),
        (None, Some(name)) => builtin_scenario("-sn", name, &ctx),
    }?;
    if let Some(pct) = args.lost {
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("-lost {pct}: a percentage, 0 to 100"));
        }
        scn.set_default_lost(pct);
    }
    Ok(scn)
}

/// `-t ui`: the source addresses field `field` of the first `-inf` file
/// names, each once, in order (SIPp: the file is required).
fn source_addresses(inject: Option<&Injection>, field: usize) -> Result<Vec<IpAddr>, String> {
    let Some(file) = inject.and_then(|i| i.files.first()) else {
        return Err("-t ui: give the source addresses in an injection file (-inf)".into());
    };
    let mut ips = Vec::new();
    let mut text = Vec::new();
    for line in 0..file.lines() {
        text.clear();
        file.write_field(i64::try_from(line).unwrap_or(i64::MAX), field, &mut text);
        let s = String::from_utf8_lossy(&text);
        let ip: IpAddr = s.trim().parse().map_err(|_| {
            format!(
                "-t ui: field {field} of line {} of the -inf file is not an IP address: '{s}'",
                line + 1
            )
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// The built-in scenarios' names, for messages.
pub const BUILTINS: &str = "uac, uas, ooc_default and ooc_dummy";

fn scenario_file(path: &std::path::Path, ctx: &LoadContext) -> Result<Scenario, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("scenario file {}: {e}", path.display()))?;
    Scenario::parse_with(&read_text(&bytes), &path.display().to_string(), ctx)
        .map_err(|e| e.to_string())
}

fn builtin_scenario(flag: &str, name: &str, ctx: &LoadContext) -> Result<Scenario, String> {
    let xml = crate::builtin(name)
        .ok_or_else(|| format!("{flag} {name}: the built-in scenarios are {BUILTINS}"))?;
    Scenario::parse_with(xml, name, ctx).map_err(|e| e.to_string())
}

/// The out-of-call scenario (`-oocsf FILE` or `-oocsn NAME`), if any: a
/// caller's only, as SIPp refuses one in server mode.
fn out_of_call_scenario(args: &Args, caller: bool) -> Result<Option<Scenario>, String> {
    let ctx = LoadContext {
        rtp_payload: args.rtp_payload,
        ..LoadContext::default()
    };
    let scn = match (&args.oocsf, &args.oocsn) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err("give either -oocsf or -oocsn, not both".into()),
        (Some(path), None) => scenario_file(path, &ctx),
        (None, Some(name)) => builtin_scenario("-oocsn", name, &ctx),
    }
    .map_err(|e| format!("out-of-call scenario: {e}"))?;
    if !caller {
        return Err(
            "out-of-call scenarios (-oocsf, -oocsn) are for callers: the callee's own scenario takes the requests of no call"
                .into(),
        );
    }
    Ok(Some(scn))
}

/// Runs the load described by `args`, prints the report and returns it.
pub fn run(args: &Args) -> Result<Outcome, RunError> {
    let scn = Arc::new(load_scenario(args).map_err(|message| RunError { code: 1, message })?);
    // -sleep: SIPp waits before it opens its sockets.
    if let Some(t) = &args.sleep {
        let ms = parse_duration_ms(t).map_err(|e| RunError::fatal(format!("-sleep {e}")))?;
        std::thread::sleep(Duration::from_millis(ms));
    }
    let (tcp, tls) = match args.transport.as_str() {
        // -t un: a caller's calls each on a socket of its own (below); a
        // callee answers from the one it listens on, as SIPp's.
        "u1" | "un" | "ui" => (None, false),
        "t1" => (Some(crate::stream::Mode::One), false),
        "tn" => (Some(crate::stream::Mode::PerCall), false),
        "l1" => (Some(crate::stream::Mode::One), true),
        "ln" => (Some(crate::stream::Mode::PerCall), true),
        t => {
            return Err(RunError::fatal(format!(
                "-t {t}: sbc-load supports u1 / un / ui (UDP, a socket per thread / per call / per source address of the -inf file), t1 / tn (TCP, a connection per thread / per call) and l1 / ln (TLS, likewise)"
            )));
        }
    };
    let caller = scn.starts_with_send();
    let ooc = out_of_call_scenario(args, caller)
        .map_err(|message| RunError { code: 1, message })?
        .map(Arc::new);
    // TLS: a callee answers with its certificate; a caller presents one
    // when it loads.
    let tls = if tls {
        let files = crate::tls::Files {
            cert: &args.tls_cert,
            key: &args.tls_key,
            ca: args.tls_ca.as_deref(),
            crl: args.tls_crl.as_deref(),
        };
        let versions =
            crate::tls::versions(args.tls_version.as_deref()).map_err(RunError::fatal)?;
        Some(Arc::new(
            crate::tls::TlsSetup::load(files, !caller, versions).map_err(RunError::fatal)?,
        ))
    } else {
        None
    };
    // 3PCC's controller B side: its calls start with the twin's message.
    let by_twin = scn.starts_with_recv_cmd();
    if !caller && !by_twin && scn.first_request().is_none() {
        return Err(
            "the scenario starts neither with <send>, <recvCmd> nor with <recv request=...>".into(),
        );
    }
    let sends_sip = scn
        .steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::Send { .. }));
    let remote = match (&args.remote, caller || by_twin) {
        (Some(r), _) => Some(parse_remote(r)?),
        // A 3PCC master that only commands its slaves sends no SIP.
        (None, true) if !sends_sip => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 5060))),
        (None, true) => return Err("a caller scenario needs the remote host:port".into()),
        (None, false) => None,
    };
    let twin = twin_setup(args, &scn).map_err(RunError::fatal)?;
    if args.rate_period_ms == 0 {
        return Err("-rp must be at least 1 ms".into());
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err("-r must be a positive number".into());
    }
    let local_ip = args.local_ip.unwrap_or(match remote {
        Some(r) if r.ip().is_loopback() => r.ip(),
        Some(SocketAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    });
    let inject = load_injection(args)?;
    if inject.is_none() && scn.uses(|k| matches!(k, Keyword::Field { .. })) {
        return Err("the scenario uses [fieldN]: give an injection file with -inf".into());
    }
    if let (Some(users), Some(inj)) = (args.users, &inject) {
        for f in inj
            .files
            .iter()
            .filter(|f| f.order == crate::inject::Order::User)
        {
            if (users as u64) > f.lines() {
                return Err(format!(
                    "{} has only {} lines, yet -users {users} asks for one per user",
                    f.name,
                    f.lines()
                )
                .into());
            }
        }
    }
    let max_retrans = args.max_retrans.unwrap_or(9);
    let mut cfg = Config::new(local_ip);
    cfg.media_ip = args.media_ip.unwrap_or(local_ip);
    cfg.media_port = args.media_port;
    cfg.service = args.service.as_bytes().to_vec();
    cfg.auth_user = Some(
        args.auth_user
            .as_deref()
            .unwrap_or(&args.service)
            .as_bytes()
            .to_vec(),
    );
    cfg.auth_pass = Some(args.auth_pass.as_bytes().to_vec());
    cfg.auth_uri = args.auth_uri.as_ref().map(|u| u.as_bytes().to_vec());
    cfg.call_id_format = args.cid_str.as_deref().map(crate::engine::call_id_format);
    cfg.trace_error_codes = args.trace_error_codes;
    cfg.pause_ms = args.duration_ms;
    cfg.t2_ms = args.t2_ms;
    cfg.max_invite_retrans = args.max_invite_retrans.unwrap_or(5).min(max_retrans);
    cfg.max_non_invite_retrans = args.max_non_invite_retrans.unwrap_or(9).min(max_retrans);
    // As SIPp: retransmissions only over UDP.
    cfg.retrans_enabled = !args.no_retrans && tcp.is_none();
    if tcp.is_some() {
        cfg.transport = if tls.is_some() { "TLS" } else { "TCP" };
    }
    // -t ui: a socket per source address of the -inf file.
    let per_ip = if args.transport == "ui" {
        cfg.ip_field = Some(args.ip_field);
        Some(Arc::new(source_addresses(
            inject.as_deref(),
            args.ip_field,
        )?))
    } else {
        None
    };
    // -max_socket is the run's: each thread opens its share.
    let per_call = if per_ip.is_some() {
        Some(usize::MAX)
    } else {
        (args.transport == "un" && caller).then_some(args.max_socket)
    };
    cfg.report_ended = per_ip.is_some()
        || caller && (tcp == Some(crate::stream::Mode::PerCall) || per_call.is_some());
    cfg.recv_timeout_ms = args.recv_timeout_ms;
    cfg.inject = inject;
    cfg.deadcall_ms = args.deadcall_wait_ms;
    cfg.timewait_ms = args.timewait_ms;
    cfg.base_cseq = args.base_cseq;
    cfg.quota = args.max_calls.map(|m| Arc::new(Quota::new(m)));
    cfg.auto_answer = args.auto_answer;
    cfg.trace_err = args.trace_err;
    cfg.trace_rtt = args.trace_rtt;
    cfg.trace_logs = args.trace_logs;
    cfg.behaviors = match (&args.default_behaviors, args.no_default_behaviors) {
        (_, true) => crate::engine::Behaviors::NONE,
        (Some(list), false) => crate::engine::Behaviors::parse(list)?,
        (None, false) => crate::engine::Behaviors::ALL,
    };
    cfg.remote_host = args
        .remote
        .as_deref()
        .map(|r| remote_host(r).as_bytes().to_vec())
        .unwrap_or_default();
    cfg.users = args.users;
    cfg.dynamic = crate::engine::Dynamic {
        start: args.dynamic_start,
        max: args.dynamic_max,
        step: args.dynamic_step,
    };
    cfg.dynamic_id = Arc::new(std::sync::atomic::AtomicU64::new(args.dynamic_start));
    cfg.rfc3339 = args.rfc3339;
    cfg.pause_msg_ign = args.pause_msg_ign;
    cfg.callid_slash_ign = args.callid_slash_ign;
    cfg.calldebug = args.trace_calldebug;
    cfg.rtcheck_loose = match args.rtcheck.as_str() {
        "full" => false,
        "loose" => true,
        other => return Err(format!("-rtcheck {other}: give full or loose").into()),
    };
    cfg.send_to = args
        .rsa
        .as_deref()
        .map(|a| parse_remote(a).map_err(|e| format!("-rsa: {e}")))
        .transpose()?;
    cfg.files = fixed_files(&scn)?;
    cfg.tdmmap = match &args.tdmmap {
        Some(m) => Some(crate::engine::TdmMap::parse(m).ok_or_else(|| {
            format!("-tdmmap {m}: must be of the form {{0-3}}{{99}}{{5-8}}{{1-31}}")
        })?),
        None => None,
    };
    if cfg.tdmmap.is_none() && scn.uses(|k| matches!(k, Keyword::TdmMap)) {
        return Err("[tdmmap] keyword without the -tdmmap option".into());
    }
    for (i, (name, t)) in [
        ("-audiotolerance", args.audio_tolerance),
        ("-videotolerance", args.video_tolerance),
    ]
    .into_iter()
    .enumerate()
    {
        if !(0.0..=1.0).contains(&t) {
            return Err(format!("{name} {t}: must be from 0.0 to 1.0").into());
        }
        cfg.tolerance[i] = t;
    }
    if args.random_base_ssrc {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).map_err(|e| format!("-random_base_ssrc: {e}"))?;
        cfg.ssrc_base = u32::from_be_bytes(b);
    }
    for pair in args.set.chunks(2) {
        let [name, value] = pair else {
            return Err("-set needs a name and a value".into());
        };
        let global = scn
            .globals
            .iter()
            .any(|id| scn.vars.get(usize::from(id.0)) == Some(name));
        if !global {
            return Err(format!(
                "-set {name}: the scenario declares no <Global> variable of that name"
            )
            .into());
        }
        cfg.set.push((name.clone(), value.as_bytes().to_vec()));
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One thread with a twin (as SIPp: the twin's messages name calls
    // this thread must own).
    // So too when <insert>/<replace> change an -inf file: every call
    // must see the change.
    let threads = if twin.is_some() || scn.changes_injection() || cfg.tdmmap.is_some() {
        1
    } else {
        args.threads.unwrap_or(cores).clamp(1, 256)
    };
    // A caller's threads each bind their own port (so replies come back to
    // the thread that owns the call); a callee's threads share one port.
    let base_port = args.local_port.unwrap_or(if caller { 0 } else { 5060 });
    let per_sec = args.rate * 1000.0 / args.rate_period_ms as f64;
    // -rate_increase and -rate_max count as -r does (per -rp).
    let per_rp = 1000.0 / args.rate_period_ms as f64;
    // -rate_increase applies every -rate_interval (default: every -fd).
    let rate_period_us = match &args.rate_interval {
        Some(t) => parse_duration_ms(t)
            .map_err(|e| format!("-rate_interval {e}"))?
            .max(1)
            .saturating_mul(1000),
        None => args.stat_period_s.clamp(1, 86_400 * 365) * 1_000_000,
    };
    let increase = args.rate_increase.unwrap_or(0.0) * per_rp;
    let rate_max = args.rate_max.map(|m| m * per_rp);
    if !increase.is_finite() || increase < 0.0 {
        return Err("-rate_increase must be a positive number".into());
    }
    // SIPp's default -l follows the rate: with -rate_increase, the rate it
    // rises to (-rate_max, else as many calls as -l may ever hold).
    let peak = match (increase > 0.0, rate_max) {
        (true, Some(m)) => m.max(per_sec),
        (true, None) => 1e6,
        (false, _) => per_sec,
    };
    let total_limit = args
        .limit
        .unwrap_or_else(|| default_limit(&scn, peak, args.duration_ms));
    let limit = total_limit.div_ceil(threads).max(1);
    if args.users == Some(0) {
        return Err("-users must be at least 1".into());
    }
    // The whole run's rate; each thread takes its share.
    let run_plan = if caller {
        RatePlan {
            base: per_sec,
            increase,
            period_us: rate_period_us,
            max: rate_max,
            ..RatePlan::fixed(0.0)
        }
    } else {
        RatePlan::fixed(0.0)
    };
    let mut plans = Vec::with_capacity(threads);
    let mut sockets = Vec::with_capacity(threads);
    for index in 0..threads {
        let port = if caller && base_port != 0 {
            base_port
                .checked_add(u16::try_from(index).unwrap_or(u16::MAX))
                .ok_or_else(|| format!("-p {base_port}: port range overflows"))?
        } else {
            base_port
        };
        let plan = ThreadPlan {
            index,
            threads,
            bind: SocketAddr::new(local_ip, port),
            reuse_port: !caller,
            remote,
            send_to: cfg.send_to,
            rate: run_plan.share(threads),
            users: args.users.map(|u| steer::share(u, threads, index)),
            first_user: args.users.map_or(0, |u| {
                let first = 1 + index * (u / threads) + index.min(u % threads);
                u32::try_from(first).unwrap_or(u32::MAX)
            }),
            quit_at_max: rate_max.is_some() && !args.no_rate_quit,
            limit: Some(limit),
            core: args.pin.then_some(index % cores),
            connect: args.connect && caller,
            tcp,
            tls: tls.clone(),
            per_call: per_call.map(|max| (max / threads).max(1)),
            per_ip: per_ip.clone(),
            reconnect: crate::stream::Reconnect {
                left: args.max_reconnect,
                close_calls: args.reconnect_close,
                sleep: Duration::from_millis(args.reconnect_sleep),
            },
            buffers: args.buff_size,
            batch_wait: Duration::from_micros(args.batch_wait_us),
            watchdog: crate::watchdog::Limits {
                interval_ms: args.watchdog_interval,
                reset_ms: args.watchdog_reset,
                minor_ms: args.watchdog_minor_threshold,
                major_ms: args.watchdog_major_threshold,
                minor_max: args.watchdog_minor_maxtriggers,
                major_max: args.watchdog_major_maxtriggers,
            },
        };
        let sock = bind(&plan).map_err(|e| RunError {
            code: 254,
            message: format!("bind {}: {e}", plan.bind),
        })?;
        sockets.push(sock);
        plans.push(plan);
    }

    // The remote control (SIPp binds it whether or not it is used).
    let remote = Remote::bind(args.control_ip, args.control_port)?;
    // -bg: the sockets are bound (a bind error still reaches the shell);
    // no thread has started yet.
    if args.background {
        crate::runtime::background().map_err(|e| format!("-bg: fork: {e}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let epoch = Instant::now();
    cfg.epoch = epoch;
    // The wall clock at time 0 of the engines (their `now`): the runtime
    // reads the clock, the engines take it.
    cfg.wall_epoch_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let cfg = Arc::new(cfg);
    let timeout = match &args.timeout {
        Some(t) => Some(
            epoch
                + Duration::from_millis(parse_duration_ms(t).map_err(|e| format!("-timeout {e}"))?),
        ),
        None => None,
    };
    let twins = match &twin {
        Some(setup) => Some(
            crate::twin::Twins::open(setup, &stop)
                .map_err(|message| RunError { code: 255, message })?,
        ),
        None => None,
    };
    let media = Arc::new(MediaSockets::new(cfg.media_ip).with_buffers(args.rtp_buffsize));
    // -rtp_echo: the media port (audio) and port + 2 (video), as SIPp.
    let echo = if args.rtp_echo {
        let ports = [cfg.media_port, cfg.media_port.saturating_add(2)];
        Some(
            Echo::start(&media, &ports, args.media_bufsize).map_err(|e| RunError {
                code: 254,
                message: format!("-rtp_echo: bind {}:{:?}: {e}", cfg.media_ip, ports),
            })?,
        )
    } else {
        None
    };
    let ctl = Arc::new(Control {
        epoch,
        stop,
        graceful: AtomicBool::new(false),
        stopped_now: AtomicBool::new(false),
        media,
        snapshots: (args.trace_stat || args.trace_counts)
            .then(|| std::sync::Mutex::new(vec![None; threads])),
        error_codes: args
            .trace_error_codes
            .then(|| std::sync::Mutex::new(Vec::new())),
        steer: Steer::new(
            Steering {
                caller,
                plan: run_plan,
                per_rp,
                users: args.users,
                limit: total_limit,
                limit_set: args.limit.is_some(),
                span_ms: call_span_ms(&scn, args.duration_ms),
                paused_at: None,
                quitting: 0,
                rate_scale: args.rate_scale,
            },
            threads,
        ),
        trace: TraceFiles::new(
            Specs {
                messages: trace_spec(
                    args,
                    args.trace_msg,
                    &args.message_file,
                    "messages",
                    args.message_overwrite,
                ),
                short: trace_spec(
                    args,
                    args.trace_shortmsg,
                    &args.shortmessage_file,
                    "shortmessages",
                    args.shortmessage_overwrite,
                ),
                errors: trace_spec(
                    args,
                    args.trace_err,
                    &args.error_file,
                    "errors",
                    args.error_overwrite,
                ),
                logs: trace_spec(
                    args,
                    args.trace_logs,
                    &args.log_file,
                    "logs",
                    args.log_overwrite,
                ),
                calldebug: trace_spec(
                    args,
                    args.trace_calldebug,
                    &args.calldebug_file,
                    "calldebug",
                    args.calldebug_overwrite,
                ),
            },
            args.trace_rtt
                .then(|| format!("{}_rtt.csv", file_base(args)).into()),
            Limits {
                max_size: args.max_log_size,
                ring_size: args.ringbuffer_size,
                ring_files: args.ringbuffer_files,
            },
        )
        .map_err(|e| RunError::fatal(format!("trace file {e}")))?
        .with_transport(cfg.transport)
        .with_rfc3339(args.rfc3339)
        .with_rtt_every(args.rtt_freq),
        wall_epoch_us: cfg.wall_epoch_us,
        twin: std::sync::Mutex::new(twins),
        out_of_call: ooc,
        soft_stop: if args.timeout_error { None } else { timeout },
        deadline: if args.timeout_error {
            timeout
        } else {
            timeout.map(|t| t + OPEN_CALL_GRACE)
        },
    });
    // Orders from the remote control and the keys, until the threads end.
    let steering_done = Arc::new(AtomicBool::new(false));
    let remote_thread = remote.map(|remote| {
        let (ctl, scn, done) = (
            Arc::clone(&ctl),
            Arc::clone(&scn),
            Arc::clone(&steering_done),
        );
        std::thread::spawn(move || remote.serve(&done, |d| obey(&ctl, &scn, steer::parse(d))))
    });
    let _keyboard = if args.nostdin || args.background {
        None
    } else {
        let (ctl, scn) = (Arc::clone(&ctl), Arc::clone(&scn));
        Keyboard::start(move |k| obey(&ctl, &scn, Ok(steer::key(k))))
    };
    let mut handles = Vec::with_capacity(threads);
    for (plan, sock) in plans.into_iter().zip(sockets) {
        let (cfg, scn, ctl) = (Arc::clone(&cfg), Arc::clone(&scn), Arc::clone(&ctl));
        let h = std::thread::Builder::new()
            .name(format!("sbc-load-{}", plan.index))
            .spawn(move || run_thread(sock, cfg, scn, plan, ctl))
            .map_err(|e| format!("thread: {e}"))?;
        handles.push(h);
    }
    // SIPp's TargetRate: -users, or the rate (as -r counts it) now.
    let target = |elapsed: Duration| -> f64 {
        // Set during the run (remote control, keys)?
        if ctl.steer.version() > 0
            && let Some(s) = ctl.steer.current()
        {
            let now = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            return s.users.map_or_else(|| s.rate(now), |u| u as f64);
        }
        if let Some(u) = args.users {
            return u as f64;
        }
        let periods = elapsed.as_micros() / u128::from(rate_period_us.max(1));
        let r = args.rate + args.rate_increase.unwrap_or(0.0) * periods as f64;
        args.rate_max.map_or(r, |m| r.min(m))
    };
    let mut stat_file = if args.trace_stat {
        let path = args
            .stat_file
            .clone()
            .unwrap_or_else(|| format!("{}_.csv", file_base(args)).into());
        let f = StatFile::create(&path, &scn, caller, cfg.wall_epoch_us)
            .map_err(|e| RunError::fatal(format!("-stf {}: {e}", path.display())))?
            .with_delimiter(&args.stat_delimiter)
            .with_periodic_rtd(args.periodic_rtd);
        Some(f)
    } else {
        None
    };
    let mut count_file = if args.trace_counts {
        let path = format!("{}_counts.csv", file_base(args));
        let f = CountFile::create(
            path.as_ref(),
            &scn,
            cfg.wall_epoch_us,
            args.rfc3339,
            &args.stat_delimiter,
        )
        .map_err(|e| RunError::fatal(format!("-trace_counts {path}: {e}")))?;
        Some(f)
    } else {
        None
    };
    let mut codes_file = if args.trace_error_codes {
        let path = format!("{}_error_codes.csv", file_base(args));
        let f = std::fs::File::create(&path)
            .map_err(|e| RunError::fatal(format!("-trace_error_codes {path}: {e}")))?;
        Some(std::io::BufWriter::new(f))
    } else {
        None
    };
    // SIPp's error codes line: time, elapsed, then each code since the
    // last line, newest first.
    let codes_line = |out: &mut std::io::BufWriter<std::fs::File>| -> Result<(), RunError> {
        use std::io::Write as _;
        let taken = ctl
            .error_codes
            .as_ref()
            .and_then(|c| c.lock().ok().map(|mut c| std::mem::take(&mut *c)))
            .unwrap_or_default();
        let wall = cfg.wall_epoch_us + epoch.elapsed().as_micros() as u64;
        let mut line = format!(
            "{};{};",
            crate::statfile::wall_time(wall),
            crate::statfile::hhmmssus(epoch.elapsed().as_millis() as u64)
        );
        for code in taken.iter().rev() {
            line.push_str(itoa::Buffer::new().format(*code));
            line.push(',');
        }
        writeln!(
            out,
            "{}",
            crate::statfile::delimited(&line, Some(&args.stat_delimiter))
        )
        .and_then(|()| out.flush())
        .map_err(|e| RunError::fatal(format!("error codes file: {e}")))
    };
    if stat_file.is_some() || count_file.is_some() || codes_file.is_some() {
        // A line every -fd seconds while the threads run.
        let period = Duration::from_secs(args.stat_period_s.clamp(1, 86_400 * 365));
        let mut next = epoch + period;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if Instant::now() < next {
                continue;
            }
            next += period;
            let mut merged = Stats::new(scn.steps.len());
            let mut open = 0;
            if let Some(snapshots) = &ctl.snapshots
                && let Ok(v) = snapshots.lock()
            {
                for (s, o) in v.iter().flatten() {
                    merged.merge(s);
                    open += o;
                }
            }
            let wall = cfg.wall_epoch_us + epoch.elapsed().as_micros() as u64;
            if let Some(f) = &mut stat_file {
                f.dump(wall, &merged, open, target(epoch.elapsed()))
                    .map_err(|e| RunError::fatal(format!("statistics file: {e}")))?;
            }
            if let Some(f) = &mut count_file {
                f.dump(wall, &merged)
                    .map_err(|e| RunError::fatal(format!("counts file: {e}")))?;
            }
            if let Some(f) = &mut codes_file {
                codes_line(f)?;
            }
        }
    }
    let mut total = Stats::new(scn.steps.len());
    let mut error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => total.merge(&s),
            Ok(Err(e)) => error = Some(format!("I/O: {e}")),
            Err(_) => error = Some("a load thread panicked".into()),
        }
    }
    steering_done.store(true, Ordering::Relaxed);
    if let Some(t) = remote_thread {
        let _ = t.join();
    }
    if let Some(echo) = echo {
        let (packets, bytes) = echo.stop();
        total.rtp_echoed_packets += packets;
        total.rtp_echoed_bytes += bytes;
    }
    let wall = cfg.wall_epoch_us + epoch.elapsed().as_micros() as u64;
    if let Some(f) = &mut stat_file {
        f.dump(wall, &total, 0, target(epoch.elapsed()))
            .map_err(|e| RunError::fatal(format!("statistics file: {e}")))?;
    }
    if let Some(f) = &mut count_file {
        f.dump(wall, &total)
            .map_err(|e| RunError::fatal(format!("counts file: {e}")))?;
    }
    if let Some(f) = &mut codes_file {
        codes_line(f)?;
    }
    let elapsed = epoch.elapsed().as_secs_f64();
    if let Some(e) = error {
        return Err(RunError::fatal(e));
    }
    let mut report = Report::new(
        &scn,
        if caller { "caller" } else { "callee" },
        threads,
        elapsed,
        &total,
    );
    report.notes = loop_tuning_notes(args);
    if args.send_timeout.is_some() || scn.send_timeouts {
        report.notes.push(
            "send timeouts (-send_timeout, <send timeout>) apply to messages held back by congestion; sbc-load holds none back (UDP sends wait for a send slot, TCP output is queued), so no call timed out on a send"
                .into(),
        );
    }
    if args.rtpcheck_debug || args.srtpcheck_debug {
        report.notes.push(
            "-rtpcheck_debug and -srtpcheck_debug write SIPp's internal traces of its RTP threads; sbc-load has none: each failed RTP check is counted in the report and written to the errors file (-trace_err)".into(),
        );
    }
    if args.sendbuffer_warn.is_some() {
        report.notes.push(
            "-sendbuffer_warn chooses between a warning and an error when SIPp cannot send a message of its own; sbc-load counts such sends as send errors either way".into(),
        );
    }
    if args.quiet {
        println!("{}", report.summary());
    } else {
        println!("{}", report.table());
        println!("{}", report.summary());
    }
    if args.trace_screen {
        // SIPp's -trace_screen: the last screen, into SCENARIO_PID_screen.log.
        let path = args
            .screen_file
            .clone()
            .unwrap_or_else(|| format!("{}_screen.log", file_base(args)).into());
        let text = format!("{}\n{}\n", report.table(), report.summary());
        // -screen_overwrite false: added to what the file holds.
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!args.screen_overwrite)
            .truncate(args.screen_overwrite)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let timed_out = timeout.is_some_and(|t| Instant::now() >= t);
    let code = if ctl.stopped_now.load(Ordering::Relaxed) {
        // <exec int_cmd="stop_now">: SIPp exits 97 at once.
        97
    } else if let Some(message) = &total.fatal {
        // An <error> action: SIPp's fatal error.
        eprintln!("sbc-load: error: {message}");
        255
    } else if timed_out && args.timeout_error {
        eprintln!(
            "sbc-load: timed out after {}",
            args.timeout.as_deref().unwrap_or("")
        );
        255
    } else if timed_out && report.calls_succeeded + report.calls_failed == 0 {
        97
    } else {
        report.exit_code()
    };
    Ok(Outcome { report, code })
}

/// SIPp's event-loop options given: sbc-load takes them and says that
/// they change nothing in its io_uring loop.
fn loop_tuning_notes(args: &Args) -> Vec<String> {
    [
        ("timer_resol", args.timer_resol.is_some()),
        ("max_recv_loops", args.max_recv_loops.is_some()),
        ("max_sched_loops", args.max_sched_loops.is_some()),
        ("f", args.screen_period.is_some()),
        ("rtp_threadtasks", args.rtp_threadtasks.is_some()),
    ]
    .into_iter()
    .filter(|(_, given)| *given)
    .map(|(name, _)| {
        format!("-{name} tunes SIPp's own event loop, screen or RTP threads; sbc-load has no such setting, so it changed nothing")
    })
    .collect()
}

/// The 3PCC mode the command line and the scenario ask for, checked as
/// SIPp checks them: `-3pcc` (classic) or `-master`/`-slave` with
/// `-slave_cfg` (extended), never both; the scenario's first twin step
/// says which side (master or slave) it is; extended mode names every
/// peer.
fn twin_setup(args: &Args, scn: &Scenario) -> Result<Option<crate::twin::Setup>, String> {
    use crate::twin::Setup;
    let extended = match (&args.master, &args.slave) {
        (Some(_), Some(_)) => return Err("-slave and -master options are not compatible".into()),
        (Some(m), None) => Some((m, true)),
        (None, Some(s)) => Some((s, false)),
        (None, None) => None,
    };
    match (args.three_pcc, extended, &args.slave_cfg) {
        (Some(_), Some(_), _) => {
            Err("-3pcc is not compatible with the -master and -slave options".into())
        }
        (Some(_), _, Some(_)) => Err("-3pcc and -slave_cfg options are not compatible".into()),
        (None, Some(_), None) | (None, None, Some(_)) => {
            Err("-slave_cfg must be used with -slave or -master, and they with it".into())
        }
        (None, None, None) if scn.uses_twin() => Err(
            "the scenario talks to a 3PCC twin (<sendCmd>/<recvCmd>): give -3pcc IP:PORT, or -master/-slave with -slave_cfg"
                .into(),
        ),
        (None, None, None) => Ok(None),
        (Some(addr), None, None) => Ok(scn.uses_twin().then(|| Setup::Classic {
            addr,
            connects: scn.sends_first_command(),
        })),
        (None, Some((me, master)), Some(cfg)) => {
            let sends_first = scn.uses_twin() && scn.sends_first_command();
            if master != sends_first {
                return Err(format!(
                    "inconsistency between command line and scenario: {} scenario but -{} given",
                    if sends_first { "master" } else { "slave" },
                    if master { "master" } else { "slave" },
                ));
            }
            if let Some(why) = scn.unnamed_peer() {
                return Err(why.into());
            }
            let text = std::fs::read_to_string(cfg)
                .map_err(|e| format!("-slave_cfg {}: {e}", cfg.display()))?;
            let peers = crate::twin::parse_slave_cfg(&text)
                .map_err(|e| format!("-slave_cfg {}: {e}", cfg.display()))?;
            let find = |name: &str| {
                peers
                    .iter()
                    .find_map(|(n, a)| (n == name).then_some(*a))
                    .ok_or_else(|| format!("-slave_cfg {}: no line for {name}", cfg.display()))
            };
            let listen = find(me)?;
            let dests = scn
                .command_peers()
                .into_iter()
                .map(|d| find(d).map(|a| (d.to_owned(), a)))
                .collect::<Result<_, _>>()?;
            Ok(Some(Setup::Extended {
                me: me.clone(),
                listen,
                dests,
                master,
            }))
        }
    }
}

/// SIPp's base of its files' names: the scenario's file name (or the
/// built-in's), `_`, the pid.
/// The `-inf` files' base names: the first one first, each once.
fn inf_names(args: &Args) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in &args.inject_files {
        let name = crate::inject::base_name(&p.display().to_string()).to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Reads the `-inf` files (a later file of the same base name replaces
/// an earlier one, as in SIPp) and applies `-infindex`.
fn load_injection(args: &Args) -> Result<Option<Arc<Injection>>, String> {
    if args.inject_files.is_empty() {
        if let Some(f) = args.inf_index.first() {
            return Err(format!("-infindex {f}: no -inf file is named so"));
        }
        return Ok(None);
    }
    let names = inf_names(args);
    let mut files: Vec<Option<Inject>> = vec![None; names.len()];
    for p in &args.inject_files {
        let path = p.display().to_string();
        let bytes = std::fs::read(p).map_err(|e| format!("injection file {path}: {e}"))?;
        let f = Inject::parse(&bytes, &path).map_err(|e| e.to_string())?;
        if let Some(i) = names.iter().position(|n| *n == f.name) {
            files[i] = Some(f);
        }
    }
    let mut inj = Injection {
        files: files.into_iter().flatten().collect(),
    };
    for pair in args.inf_index.chunks(2) {
        let [name, field] = pair else {
            return Err("-infindex needs a file and a field".into());
        };
        let Some(i) = inj.position(name) else {
            return Err(format!(
                "-infindex {name}: no -inf file is named so (files are named by their base name)"
            ));
        };
        let field: usize = field
            .parse()
            .map_err(|_| format!("-infindex {name} {field}: the field is a number"))?;
        inj.files[i].set_index(field)?;
    }
    Ok(Some(Arc::new(inj)))
}

/// The files `[file name="..."]` names without keywords, read now: a
/// missing one is an error before any call (SIPp finds it at the first
/// message that needs it, and stops there).
fn fixed_files(scn: &Scenario) -> Result<std::collections::HashMap<String, Vec<u8>>, String> {
    let mut files = std::collections::HashMap::new();
    for t in scn.templates() {
        for k in t.keywords() {
            if let Keyword::File(name) = k
                && let Some(name) = name.literal()
            {
                let name = String::from_utf8_lossy(&name).into_owned();
                let bytes =
                    std::fs::read(&name).map_err(|e| format!("[file name=\"{name}\"]: {e}"))?;
                files.insert(name, bytes);
            }
        }
    }
    Ok(files)
}

/// A trace file when it is asked for: its `-X_file` name or SIPp's
/// `SCENARIO_PID_NAME.log`, appended to unless `-X_overwrite`.
fn trace_spec(
    args: &Args,
    wanted: bool,
    file: &Option<std::path::PathBuf>,
    name: &'static str,
    overwrite: bool,
) -> Option<Spec> {
    wanted.then(|| Spec {
        path: file
            .clone()
            .unwrap_or_else(|| format!("{}_{name}.log", file_base(args)).into()),
        base: file_base(args),
        name,
        append: !overwrite,
    })
}

fn file_base(args: &Args) -> String {
    let base = args
        .scenario_file
        .as_deref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .or_else(|| args.scenario_name.clone())
        .unwrap_or_else(|| "uac".into());
    format!("{base}_{}", std::process::id())
}

/// How long calls still open at a soft `-timeout` may take to end.
const OPEN_CALL_GRACE: Duration = Duration::from_secs(32);

/// Carries out one order of the remote control or the keys (a bad one
/// is SIPp's warning, on the standard error).
fn obey(ctl: &Control, scn: &Scenario, order: Result<Option<steer::Order>, String>) {
    let now = u64::try_from(ctl.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
    let effect = order.and_then(|o| match o {
        Some(o) => ctl.steer.apply(now, &o),
        None => Ok(Effect::None),
    });
    match effect {
        Ok(Effect::None | Effect::Changed) => {}
        Ok(Effect::Graceful) => ctl.graceful.store(true, Ordering::Relaxed),
        Ok(Effect::StopNow) => ctl.stop.store(true, Ordering::Relaxed),
        Ok(Effect::Dump(steer::Dump::Tasks)) => eprintln!("{}", ctl.steer.tasks()),
        Ok(Effect::Dump(steer::Dump::Variables)) => eprintln!(
            "variables of {}: {}",
            scn.name,
            scn.vars
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{v} ({i})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(warning) => eprintln!("sbc-load: warning: {warning}"),
    }
}

/// SIPp's default `-l`: three times the calls started over the longest of
/// the scenario's pauses, `-d` and one second.
fn default_limit(scn: &Scenario, per_sec: f64, d_ms: u64) -> usize {
    crate::steer::default_limit(per_sec, call_span_ms(scn, d_ms))
}

/// What a call lasts at least (ms): its pauses, or `-d`.
fn call_span_ms(scn: &Scenario, d_ms: u64) -> u64 {
    let pauses: u64 = scn
        .steps
        .iter()
        .map(|s| match s.kind {
            StepKind::Pause { length, .. } => length.typical_ms(d_ms),
            _ => 0,
        })
        .sum();
    pauses.max(d_ms)
}
