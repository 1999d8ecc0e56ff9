//! Steering a run while it goes, as SIPp's remote control (`-cp`, `-ci`)
//! and keyboard do: keys change the call rate (or `-users`) by
//! `-rate_scale`, pause call generation and quit; `c` commands set the
//! rate, the scale, the users and the open-call limit.
//!
//! [`parse`] reads one control datagram (or key) into an [`Order`];
//! [`Steering`] applies it at a given time, without sockets, so tests
//! drive it with explicit times; [`Steer`] shares the result with the load
//! threads, which take it when its version changes. [`Remote`] and
//! [`Keyboard`] are the I/O around them.
#![allow(unsafe_code)] // termios for single keys: see `RawTerminal`.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::rate::RatePlan;

/// SIPp's first control port, and how many it tries from there when no
/// `-cp` is given.
pub const CONTROL_PORT: u16 = 8888;
const CONTROL_TRIES: u16 = 60;

/// One key or command.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// `+` (1), `-` (-1), `*` (10), `/` (-10): the rate, or the users,
    /// by this many times `-rate_scale`.
    Step(i32),
    /// `p`: pause call generation, or resume it.
    Pause,
    /// `q`: no new calls, end when the open ones have (twice: at once).
    Quit,
    /// `Q`: end at once.
    QuitNow,
    /// `1`..`9` and `s`: SIPp's screens.
    Screen(u8),
    SetRate(f64),
    SetRateScale(f64),
    SetUsers(u64),
    SetLimit(u64),
    /// `set display` and `set hide`: what SIPp's live screen shows.
    Display(String),
    /// `trace <log> on|off`.
    Trace(String, bool),
    /// `dump tasks|variables`.
    Dump(Dump),
    /// `reset stats`.
    ResetStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    Tasks,
    Variables,
}

/// Reads a control datagram as SIPp does: one starting with `c` is a
/// command line, anything else is the key of its first byte. Keys SIPp
/// does not know are ignored (`Ok(None)`); a bad command is an error
/// naming it (SIPp's warning).
pub fn parse(datagram: &[u8]) -> Result<Option<Order>, String> {
    match datagram.split_first() {
        None => Ok(None),
        Some((b'c', rest)) => command(&String::from_utf8_lossy(rest)).map(Some),
        Some((&k, _)) => Ok(key(k)),
    }
}

/// The order of one key.
pub fn key(k: u8) -> Option<Order> {
    Some(match k {
        b'+' => Order::Step(1),
        b'-' => Order::Step(-1),
        b'*' => Order::Step(10),
        b'/' => Order::Step(-10),
        b'p' => Order::Pause,
        b'q' => Order::Quit,
        b'Q' => Order::QuitNow,
        b'1'..=b'9' | b's' => Order::Screen(k),
        _ => return None,
    })
}

/// `word rest`, both trimmed.
fn split(s: &str) -> (&str, Option<&str>) {
    let s = s.trim();
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, Some(rest.trim())),
        None => (s, None),
    }
}

fn command(line: &str) -> Result<Order, String> {
    let (cmd, rest) = split(line);
    let Some(rest) = rest.filter(|r| !r.is_empty()) else {
        return Err(format!("the {cmd} command requires at least one argument"));
    };
    match cmd {
        "set" => set(rest),
        "trace" => {
            let (log, on) = split(rest);
            let on = match on {
                Some("on" | "true") => true,
                Some("off" | "false") => false,
                Some(_) => {
                    return Err("the trace command's second argument must be on or off".into());
                }
                None => {
                    return Err(
                        "the trace command requires two arguments (log and [on|off])".into(),
                    );
                }
            };
            match log {
                "error" | "logs" | "messages" | "shortmessages" => {
                    Ok(Order::Trace(log.to_owned(), on))
                }
                _ => Err(format!("unknown log file: {log}")),
            }
        }
        "dump" => match rest {
            "tasks" => Ok(Order::Dump(Dump::Tasks)),
            "variables" => Ok(Order::Dump(Dump::Variables)),
            _ => Err(format!("unknown dump type: {rest}")),
        },
        "reset" => match rest {
            "stats" => Ok(Order::ResetStats),
            _ => Err(format!("unknown reset type: {rest}")),
        },
        _ => Err(format!("unrecognized command: \"{cmd}\"")),
    }
}

fn set(what: &str) -> Result<Order, String> {
    let (name, value) = split(what);
    let Some(value) = value else {
        return Err("the set command requires two arguments (attribute and value)".into());
    };
    let number = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite());
    match name {
        "rate" => number(value)
            .map(Order::SetRate)
            .ok_or_else(|| format!("invalid rate value: \"{value}\"")),
        "rate-scale" => number(value)
            .map(Order::SetRateScale)
            .ok_or_else(|| format!("invalid rate-scale value: \"{value}\"")),
        "users" => value
            .parse()
            .map(Order::SetUsers)
            .map_err(|_| format!("invalid users value: \"{value}\"")),
        "limit" => value
            .parse()
            .map(Order::SetLimit)
            .map_err(|_| format!("invalid limit value: \"{value}\"")),
        "display" => match value {
            "main" | "ooc" | "rx" => Ok(Order::Display(what.to_owned())),
            _ => Err(format!("unknown display scenario: {value}")),
        },
        "hide" => match value {
            "true" | "false" => Ok(Order::Display(what.to_owned())),
            _ => Err(format!("invalid bool: {value}")),
        },
        _ => Err(format!("unknown set attribute: {name}")),
    }
}

/// What the threads follow, as the orders left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Steering {
    /// A caller: callees start no calls, so rates and users mean nothing
    /// to them (SIPp ignores them too).
    pub caller: bool,
    /// The whole run's call rate (calls/s).
    pub plan: RatePlan,
    /// Calls/s per unit of `-r` (SIPp's rate counts per `-rp`).
    pub per_rp: f64,
    /// `-users`: calls kept open at once (none: a rate-based run).
    pub users: Option<usize>,
    /// The whole run's open-call limit (`-l`).
    pub limit: usize,
    /// The limit was given (`-l`, `set limit`): it no longer follows the
    /// rate.
    pub limit_set: bool,
    /// What each call lasts at least (ms): SIPp's default limit is three
    /// times the calls of that span at the rate.
    pub span_ms: u64,
    /// Call generation paused since (µs since the run started).
    pub paused_at: Option<u64>,
    /// SIPp's `quitting`: 10 a `q`, 20 a `Q`.
    pub quitting: u32,
    /// `-rate_scale`: how much a key changes the rate or users.
    pub rate_scale: f64,
}

/// What the control thread does after an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing the threads see.
    None,
    /// The threads take the new steering.
    Changed,
    /// No new calls; end when the open ones have.
    Graceful,
    /// End at once.
    StopNow,
    Dump(Dump),
}

/// SIPp's default open-call limit for a rate (calls/s) and call span.
pub fn default_limit(per_sec: f64, span_ms: u64) -> usize {
    let l = 3.0 * per_sec * span_ms.max(1000) as f64 / 1000.0;
    if l.is_finite() && l >= 1.0 {
        l.min(10_000_000.0) as usize
    } else {
        1
    }
}

impl Steering {
    /// The rate now, as `-r` counts it.
    pub fn rate(&self, now: u64) -> f64 {
        self.plan.rate_at(self.paused_at.unwrap_or(now)) / self.per_rp
    }

    /// Applies `order` at `now` (µs since the run started). An order that
    /// cannot apply is SIPp's warning, as an error.
    pub fn apply(&mut self, now: u64, order: &Order) -> Result<Effect, String> {
        match *order {
            Order::Step(k) => {
                let by = f64::from(k) * self.rate_scale;
                match self.users {
                    Some(u) => self.set_users(((u as f64) + by).max(0.0) as u64),
                    None => self.set_rate(now, self.rate(now) + by),
                }
            }
            Order::SetRate(r) => self.set_rate(now, r),
            Order::SetUsers(u) => self.set_users(u),
            Order::SetRateScale(s) => {
                self.rate_scale = s;
                Ok(Effect::None)
            }
            Order::SetLimit(l) => {
                if self.users.is_some() {
                    return Err("the call limit cannot be set in a user-based run".into());
                }
                // SIPp: 0 is no limit.
                self.limit = usize::try_from(l)
                    .ok()
                    .filter(|&l| l > 0)
                    .unwrap_or(usize::MAX);
                self.limit_set = true;
                Ok(self.changed())
            }
            Order::Pause => {
                if !self.caller {
                    return Ok(Effect::None);
                }
                match self.paused_at.take() {
                    Some(at) => self.plan = self.plan.resumed(at, now),
                    None => self.paused_at = Some(now),
                }
                Ok(Effect::Changed)
            }
            Order::Quit | Order::QuitNow => {
                self.quitting += if *order == Order::Quit { 10 } else { 20 };
                Ok(if self.quitting >= 20 {
                    Effect::StopNow
                } else {
                    Effect::Graceful
                })
            }
            Order::Screen(_) | Order::Display(_) => Err(
                "sbc-load has no live screen (its report comes at the end; -trace_screen writes it to a file)"
                    .into(),
            ),
            Order::Trace(ref log, _) => Err(format!(
                "trace {log}: sbc-load opens its trace files at the start (-trace_msg, -trace_shortmsg, -trace_err, -trace_logs) and cannot switch them during the run"
            )),
            Order::Dump(d) => Ok(Effect::Dump(d)),
            Order::ResetStats => Err(
                "reset stats: sbc-load's counters run from the start to the end of the run and cannot be reset during it"
                    .into(),
            ),
        }
    }

    fn changed(&self) -> Effect {
        if self.caller {
            Effect::Changed
        } else {
            Effect::None
        }
    }

    fn set_rate(&mut self, now: u64, rate: f64) -> Result<Effect, String> {
        if self.users.is_some() {
            return Err("rates cannot be set in a user-based run".into());
        }
        let rate = rate.max(0.0);
        // Paused: the plan stands still where the pause began.
        let at = self.paused_at.unwrap_or(now);
        self.plan = self.plan.rebased(at, rate * self.per_rp);
        if !self.limit_set {
            self.limit = default_limit(rate * self.per_rp, self.span_ms);
        }
        Ok(self.changed())
    }

    fn set_users(&mut self, users: u64) -> Result<Effect, String> {
        if self.users.is_none() {
            return Err("users cannot be changed in a rate-based run".into());
        }
        self.users = Some(usize::try_from(users).unwrap_or(usize::MAX));
        Ok(self.changed())
    }
}

/// The steering the threads share: changed by the control socket and the
/// keyboard, read by a thread when `version` moves.
#[derive(Debug)]
pub struct Steer {
    version: AtomicU64,
    state: Mutex<Steering>,
    /// The next user id not yet given to a thread (`-users` raised).
    next_user: AtomicU32,
    /// Each thread's open calls, for `dump tasks`.
    open: Vec<AtomicU64>,
}

impl Steer {
    pub fn new(steering: Steering, threads: usize) -> Self {
        let users = steering.users.unwrap_or(0);
        Steer {
            version: AtomicU64::new(0),
            next_user: AtomicU32::new(u32::try_from(users).unwrap_or(u32::MAX).saturating_add(1)),
            state: Mutex::new(steering),
            open: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Option<Steering> {
        self.state.lock().ok().map(|s| s.clone())
    }

    /// Applies `order` at `now`; the threads see a change.
    pub fn apply(&self, now: u64, order: &Order) -> Result<Effect, String> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| "the steering lock is poisoned".to_string())?;
        let effect = s.apply(now, order)?;
        if effect == Effect::Changed {
            self.version.fetch_add(1, Ordering::Release);
        }
        Ok(effect)
    }

    /// `n` user ids no thread has: the first of them.
    pub fn take_users(&self, n: u32) -> u32 {
        self.next_user.fetch_add(n, Ordering::Relaxed)
    }

    pub fn set_open(&self, thread: usize, open: usize) {
        if let Some(o) = self.open.get(thread) {
            o.store(open as u64, Ordering::Relaxed);
        }
    }

    /// `dump tasks`: each thread's open calls.
    pub fn tasks(&self) -> String {
        self.open
            .iter()
            .enumerate()
            .map(|(i, o)| format!("thread {i}: {} open calls", o.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A thread's share of `total` among `threads` (thread `index`): the
/// remainder goes to the first threads.
pub fn share(total: usize, threads: usize, index: usize) -> usize {
    let n = threads.max(1);
    total / n + usize::from(index < total % n)
}

/// The remote-control socket (UDP): `-ci` (all IPv4 addresses without
/// it), `-cp` (without it, the first free port from 8888, as SIPp).
#[derive(Debug)]
pub struct Remote {
    sock: UdpSocket,
}

impl Remote {
    /// Binds it. A `-cp` port that cannot be bound is an error; without
    /// `-cp`, none free among SIPp's 60 is a warning (`Ok(None)`).
    pub fn bind(ip: Option<IpAddr>, port: Option<u16>) -> Result<Option<Self>, String> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let open = |p: u16| UdpSocket::bind(SocketAddr::new(ip, p));
        let sock = match port {
            Some(p) => open(p).map_err(|e| {
                format!("unable to bind the remote control socket to UDP {ip}:{p}: {e}")
            })?,
            None => {
                let found = (0..CONTROL_TRIES)
                    .filter_map(|k| CONTROL_PORT.checked_add(k))
                    .find_map(|p| open(p).ok());
                match found {
                    Some(s) => s,
                    None => {
                        eprintln!(
                            "sbc-load: warning: unable to bind the remote control socket (tried UDP ports {CONTROL_PORT}-{})",
                            CONTROL_PORT + CONTROL_TRIES - 1
                        );
                        return Ok(None);
                    }
                }
            }
        };
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| format!("remote control socket: {e}"))?;
        Ok(Some(Remote { sock }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }

    /// Takes orders until `done`, giving each to `handle`.
    pub fn serve(&self, done: &AtomicBool, mut handle: impl FnMut(&[u8])) {
        let mut buf = [0u8; 2048];
        while !done.load(Ordering::Relaxed) {
            if let Ok(n) = self.sock.recv(&mut buf) {
                handle(buf.get(..n).unwrap_or_default());
            }
        }
    }
}

/// Keys from the standard input (unless `-nostdin`): on a terminal, one
/// at a time without Enter or echo (the terminal is restored on drop).
#[derive(Debug)]
pub struct Keyboard {
    /// Restores the terminal when the keyboard goes.
    _raw: Option<RawTerminal>,
}

impl Keyboard {
    /// Starts reading keys on a thread of its own, each given to
    /// `handle`, until the input ends. A terminal this process does not
    /// own the foreground of is not read (reading it would stop us).
    pub fn start(handle: impl FnMut(u8) + Send + 'static) -> Option<Self> {
        let tty = is_terminal();
        if tty && !foreground(STDIN) {
            return None;
        }
        let raw = if tty { RawTerminal::enter(STDIN) } else { None };
        let mut handle = handle;
        std::thread::Builder::new()
            .name("sbc-load-keys".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut b = [0u8; 1];
                while let Ok(1) = stdin.read(&mut b) {
                    handle(b[0]);
                }
            })
            .ok()?;
        Some(Keyboard { _raw: raw })
    }
}

/// The standard input's descriptor.
const STDIN: std::os::fd::RawFd = 0;

fn is_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal()
}

/// Whether this process is in the foreground process group of the
/// terminal on `fd`.
fn foreground(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: tcgetpgrp and getpgrp only read process state (tcgetpgrp
    // fails, -1, on a descriptor that is not a terminal).
    unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }
}

/// The attributes of the terminal on `fd`, if it is one.
fn attributes(fd: std::os::fd::RawFd) -> Option<libc::termios> {
    // SAFETY: termios is plain data, all zeroes a valid value; tcgetattr
    // only writes into it, and it is used only when that succeeded.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to write into.
    (unsafe { libc::tcgetattr(fd, &mut t) } == 0).then_some(t)
}

/// The terminal on `fd` in non-canonical mode without echo; restored on
/// drop.
#[derive(Debug)]
struct RawTerminal {
    fd: std::os::fd::RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    fn enter(fd: std::os::fd::RawFd) -> Option<Self> {
        let saved = attributes(fd)?;
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a valid termios copied from the terminal's.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read from this terminal.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-key mode on a terminal (a pseudo-terminal here) and its
    /// undoing; a descriptor that is not a terminal is left alone.
    #[test]
    fn a_raw_terminal_is_restored_when_it_goes() {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes the two descriptors; the name, attribute
        // and size arguments may be null.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0);
        let lflag = |fd| attributes(fd).unwrap().c_lflag;
        let before = lflag(slave);
        assert_ne!(before & libc::ICANON, 0);
        {
            let _raw = RawTerminal::enter(slave).unwrap();
            assert_eq!(lflag(slave) & (libc::ICANON | libc::ECHO), 0);
        }
        assert_eq!(lflag(slave), before);
        // This process does not own that terminal's foreground.
        assert!(!foreground(slave));
        let sock = UdpSocket::bind("127.176.9.3:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        assert!(attributes(fd).is_none() && RawTerminal::enter(fd).is_none());
        // SAFETY: both descriptors are ours and closed once.
        unsafe {
            libc::close(slave);
            libc::close(master);
        }
    }

    fn steering(caller: bool, users: Option<usize>) -> Steering {
        Steering {
            caller,
            plan: RatePlan::fixed(10.0),
            per_rp: 1.0,
            users,
            limit: default_limit(10.0, 0),
            limit_set: false,
            span_ms: 0,
            paused_at: None,
            quitting: 0,
            rate_scale: 1.0,
        }
    }

    #[test]
    fn datagrams_read_as_sipp_reads_them() {
        assert_eq!(parse(b"+"), Ok(Some(Order::Step(1))));
        assert_eq!(parse(b"/\n"), Ok(Some(Order::Step(-10))));
        assert_eq!(parse(b"Q"), Ok(Some(Order::QuitNow)));
        assert_eq!(parse(b"3"), Ok(Some(Order::Screen(b'3'))));
        // Unknown keys and empty datagrams are ignored.
        assert_eq!(parse(b"x"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"cset rate 25.5\n"), Ok(Some(Order::SetRate(25.5))));
        assert_eq!(
            parse(b"c  set   rate-scale  4 "),
            Ok(Some(Order::SetRateScale(4.0)))
        );
        assert_eq!(parse(b"cset users 40"), Ok(Some(Order::SetUsers(40))));
        assert_eq!(parse(b"cset limit 0"), Ok(Some(Order::SetLimit(0))));
        assert_eq!(
            parse(b"ctrace messages off"),
            Ok(Some(Order::Trace("messages".into(), false)))
        );
        assert_eq!(parse(b"cdump tasks"), Ok(Some(Order::Dump(Dump::Tasks))));
        assert_eq!(parse(b"creset stats"), Ok(Some(Order::ResetStats)));
        // Bad commands name what is wrong.
        for (bad, says) in [
            (&b"cset rate fast"[..], "invalid rate value: \"fast\""),
            (b"cset users -3", "invalid users value"),
            (b"cset", "requires at least one argument"),
            (b"cset rate", "requires two arguments"),
            (b"cset colour red", "unknown set attribute: colour"),
            (b"cset display nowhere", "unknown display scenario"),
            (b"ctrace messages maybe", "must be on or off"),
            (b"ctrace everything on", "unknown log file"),
            (b"cdump cores", "unknown dump type"),
            (b"cjump 3", "unrecognized command"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn keys_move_the_rate_by_the_scale_from_where_it_is() {
        let mut s = steering(true, None);
        s.rate_scale = 5.0;
        // At 2 s (20 calls due), '+' then '*': 10 -> 15 -> 65 calls/s.
        assert_eq!(s.apply(2_000_000, &Order::Step(1)), Ok(Effect::Changed));
        assert_eq!(s.rate(2_000_000), 15.0);
        assert_eq!(s.apply(3_000_000, &Order::Step(10)), Ok(Effect::Changed));
        assert_eq!(s.rate(3_000_000), 65.0);
        assert!((s.plan.due(4_000_000) - (20.0 + 15.0 + 65.0)).abs() < 1e-9);
        // The default limit follows the rate; '/' twice cannot go below 0.
        assert_eq!(s.limit, default_limit(65.0, 0));
        s.apply(4_000_000, &Order::Step(-10)).unwrap();
        s.apply(4_000_000, &Order::Step(-10)).unwrap();
        assert_eq!(s.rate(4_000_000), 0.0);
        // A limit set stays when the rate moves; 0 is none.
        s.apply(4_000_000, &Order::SetLimit(7)).unwrap();
        s.apply(4_000_000, &Order::SetRate(100.0)).unwrap();
        assert_eq!(s.limit, 7);
        s.apply(4_000_000, &Order::SetLimit(0)).unwrap();
        assert_eq!(s.limit, usize::MAX);
        // -rp 500: the rate counts per half second.
        let mut h = steering(true, None);
        h.per_rp = 2.0;
        h.plan = RatePlan::fixed(20.0);
        assert_eq!(h.rate(0), 10.0);
        h.apply(0, &Order::Step(1)).unwrap();
        assert_eq!(h.plan.rate_at(0), 22.0);
    }

    #[test]
    fn a_pause_holds_the_calls_due_and_resumes_without_a_burst() {
        let mut s = steering(true, None);
        s.apply(1_000_000, &Order::Pause).unwrap();
        assert_eq!(s.paused_at, Some(1_000_000));
        // A rate set while paused counts from the resume.
        s.apply(3_000_000, &Order::SetRate(20.0)).unwrap();
        assert_eq!(s.rate(3_000_000), 20.0);
        s.apply(5_000_000, &Order::Pause).unwrap();
        assert_eq!(s.paused_at, None);
        assert!((s.plan.due(5_000_000) - 10.0).abs() < 1e-9);
        assert!((s.plan.due(6_000_000) - 30.0).abs() < 1e-9);
    }

    #[test]
    fn users_runs_move_users_and_refuse_rates() {
        let mut s = steering(true, Some(10));
        s.rate_scale = 2.0;
        assert_eq!(s.apply(0, &Order::Step(10)), Ok(Effect::Changed));
        assert_eq!(s.users, Some(30));
        s.apply(0, &Order::Step(-10)).unwrap();
        s.apply(0, &Order::Step(-10)).unwrap();
        assert_eq!(s.users, Some(0));
        assert!(s.apply(0, &Order::SetRate(5.0)).is_err());
        assert!(s.apply(0, &Order::SetLimit(5)).is_err());
        assert_eq!(s.apply(0, &Order::SetUsers(4)), Ok(Effect::Changed));
        assert_eq!(s.users, Some(4));
        // And rate runs refuse users.
        assert!(steering(true, None).apply(0, &Order::SetUsers(4)).is_err());
    }

    #[test]
    fn a_callee_only_quits_and_quitting_twice_is_at_once() {
        let mut s = steering(false, None);
        assert_eq!(s.apply(0, &Order::Step(1)), Ok(Effect::None));
        assert_eq!(s.apply(0, &Order::Pause), Ok(Effect::None));
        assert_eq!(s.paused_at, None);
        assert_eq!(s.apply(0, &Order::Quit), Ok(Effect::Graceful));
        assert_eq!(s.apply(0, &Order::Quit), Ok(Effect::StopNow));
        assert_eq!(
            steering(true, None).apply(0, &Order::QuitNow),
            Ok(Effect::StopNow)
        );
        // What sbc-load has no use for says so.
        assert!(
            s.apply(0, &Order::Screen(b'2'))
                .unwrap_err()
                .contains("no live screen")
        );
        assert!(s.apply(0, &Order::ResetStats).is_err());
    }

    #[test]
    fn shares_spread_the_remainder_over_the_first_threads() {
        assert_eq!(
            (0..3).map(|i| share(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(share(5, 0, 0), 5);
    }

    #[test]
    fn orders_reach_the_shared_steering_and_move_its_version() {
        let steer = Steer::new(steering(true, Some(6)), 2);
        let v = steer.version();
        assert_eq!(steer.apply(0, &Order::SetUsers(9)), Ok(Effect::Changed));
        assert_eq!(steer.version(), v + 1);
        assert_eq!(steer.current().unwrap().users, Some(9));
        // A failed order changes nothing.
        assert!(steer.apply(0, &Order::SetRate(1.0)).is_err());
        assert_eq!(steer.version(), v + 1);
        // New user ids come after the first -users.
        assert_eq!(steer.take_users(2), 7);
        assert_eq!(steer.take_users(1), 9);
        steer.set_open(1, 4);
        assert_eq!(
            steer.tasks(),
            "thread 0: 0 open calls\nthread 1: 4 open calls"
        );
    }

    #[test]
    fn a_control_datagram_reaches_the_handler() {
        let remote = Remote::bind(Some("127.176.9.1".parse().unwrap()), Some(0))
            .unwrap()
            .unwrap();
        let to = remote.local_addr().unwrap();
        let done = AtomicBool::new(false);
        let tx = UdpSocket::bind("127.176.9.2:0").unwrap();
        tx.send_to(b"cset rate 3", to).unwrap();
        let mut got = Vec::new();
        remote.serve(&done, |d| {
            got.push(parse(d));
            done.store(true, Ordering::Relaxed);
        });
        assert_eq!(got, [Ok(Some(Order::SetRate(3.0)))]);
    }
}
