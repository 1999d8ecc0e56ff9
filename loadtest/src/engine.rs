//! The sans-IO core of sbc-load: one [`Endpoint`] per thread holds that
//! thread's calls, each a state machine walking the scenario. It takes
//! datagrams and the current time and queues what to send; the I/O loop
//! (`runtime.rs`) and the tests drive it.
//!
//! It follows the same driving contract as sbc-core's `Engine`, with the
//! same names and the same clock: [`Endpoint::handle_datagram`]`(now, src,
//! bytes)` for each received datagram, [`Endpoint::handle_timeout`]`(now)`
//! for due timers, and [`Endpoint::poll_timeout`] for when to call it next,
//! `now` and the deadline being `Instant`s. Inside, the endpoint counts
//! time as microseconds since the run's [`Config::epoch`], the unit of
//! SIPp's delays and statistics. Two differences suit a load generator: a
//! peer is a `SocketAddr` (a run has one transport, as in SIPp), and what
//! to send is drained as one batch, [`Endpoint::outgoing`] then
//! [`Endpoint::clear_out`], rather than one `poll_transmit` at a time, so
//! that the I/O loop can group it into UDP GSO sends. There is no
//! `poll_event`: results are counted in [`Endpoint::stats`].
//!
//! Behaviour follows SIPp where the scenario format depends on it:
//! messages are matched to calls by Call-ID; a `<recv>` is matched by
//! status code or method, trying the expected step and the optional ones
//! after it; a late message matching an earlier optional step is absorbed;
//! a retransmission of a message already received (same bytes) is answered
//! with the message sent after it; anything else fails the call as an
//! unexpected message. Requests are retransmitted over UDP from their T1
//! (doubling, capped at T2 except for INVITE) until a `<recv>` matches.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sbc_core::sip::digest::{self, Algorithm, Challenge, Credentials};
use sbc_core::sip::{CSeq, CommaList, HeaderName, Message, NameAddr, StartLine};

use crate::inject::Injection;
use crate::pcap::Capture;
use crate::rtpcheck::{Check, Keys, Pair};
use crate::scenario::{
    Action, Arith, Compare, DefaultMessage, Distribution, EchoOp, IntCmd, MediaKind, NumOperand,
    PauseLength, RTD_COUNT, Recv, RtpStream, Scenario, SearchIn, StepKind, StrOperand, StreamFile,
    VarId,
};
use crate::stats::{FailReason, Stats};
use crate::template::{Keyword, LastHeader, Template};

/// `t` as microseconds since `epoch` (0 before it): the clock of the
/// endpoints and of the loop that drives them.
pub fn micros_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// Settings shared by every thread of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub local_ip: IpAddr,
    pub media_ip: IpAddr,
    pub media_port: u16,
    pub service: Vec<u8>,
    pub pid: u32,
    pub auth_user: Option<Vec<u8>>,
    pub auth_pass: Option<Vec<u8>>,
    /// `-auth_uri`: the URI digest answers name (`sip:` and it) instead
    /// of the request's.
    pub auth_uri: Option<Vec<u8>>,
    /// `-cid_str`: a caller's Call-IDs (else SIPp's `%u-%p@%s`).
    pub call_id_format: Option<Vec<CidPart>>,
    /// `-trace_error_codes`: keep the codes of unexpected responses.
    pub trace_error_codes: bool,
    /// `<pause/>` without `milliseconds` (SIPp `-d`).
    pub pause_ms: u64,
    /// Cap of non-INVITE retransmission intervals (SIPp `-T2`).
    pub t2_ms: u64,
    pub max_invite_retrans: u32,
    pub max_non_invite_retrans: u32,
    /// `-nr`: no retransmissions at all.
    pub retrans_enabled: bool,
    /// `-recv_timeout`: for `<recv>` without `timeout`.
    pub recv_timeout_ms: Option<u64>,
    pub inject: Option<Arc<Injection>>,
    /// How long messages of ended calls are absorbed quietly.
    pub deadcall_ms: u64,
    /// How long a call that ended by answering a request (a callee's 200
    /// to BYE) still answers that request's retransmissions (SIPp's
    /// built-in callee has a 4 s `<timewait>` for this).
    pub timewait_ms: u64,
    /// `-base_cseq`: the first `[cseq]` of a call.
    pub base_cseq: u64,
    /// `-m`: calls to create in all, shared by the threads.
    pub quota: Option<Arc<Quota>>,
    /// `-set NAME VALUE`: starting values of `<Global>` variables.
    pub set: Vec<(String, Vec<u8>)>,
    /// The wall clock (µs since the Unix epoch) at the run's time 0, for
    /// `gettimeofday`: the engine reads no clock itself.
    pub wall_epoch_us: u64,
    /// The run's time 0: the endpoints count time in microseconds since it
    /// (every endpoint of a run shares it).
    pub epoch: Instant,
    /// `-aa`: INFO, NOTIFY, OPTIONS and UPDATE the scenario does not
    /// expect are answered 200 and the call goes on.
    pub auto_answer: bool,
    /// SIPp's default behaviours (`-default_behaviors`, `-nd`).
    pub behaviors: Behaviors,
    /// `-trace_err`: collect SIPp's warnings and errors in
    /// [`Endpoint::errors`].
    pub trace_err: bool,
    /// `-trace_rtt`: keep each response time measured in
    /// [`Endpoint::rtt_samples`].
    pub trace_rtt: bool,
    /// `-trace_logs`: keep `<log>` messages in [`Endpoint::logs`].
    pub trace_logs: bool,
    /// `[transport]`: UDP, or TCP (`-t t1`, `-t tn`).
    pub transport: &'static str,
    /// `-t tn`: list each ended call in [`Endpoint::ended`] (its
    /// connection closes).
    pub report_ended: bool,
    /// `-t ui` (`-ip_field`): field of the first `-inf` file that gives
    /// each call the address its messages leave from
    /// ([`Endpoint::started_source`]); a callee lists the calls it starts
    /// in [`Endpoint::started`] (they answer from where they were
    /// reached).
    pub ip_field: Option<usize>,
    /// `[remote_host]`: the host part of the command line's destination.
    pub remote_host: Vec<u8>,
    /// `-users` (`[users]`; SIPp writes -1 without it).
    pub users: Option<usize>,
    /// `-dynamicStart`, `-dynamicMax`, `-dynamicStep` (`[dynamic_id]`).
    pub dynamic: Dynamic,
    /// `[dynamic_id]`'s next value, one counter for the run (as SIPp's).
    pub dynamic_id: Arc<AtomicU64>,
    /// `-rfc3339`: `[timestamp]` (and the statistics' times) in RFC 3339.
    pub rfc3339: bool,
    /// `-callid_slash_ign`: a Call-ID is taken whole; otherwise what
    /// follows `///` names the call (SIPp lets a scenario put a prefix of
    /// its own before `[call_id]` that way).
    pub callid_slash_ign: bool,
    /// `-rtcheck loose`: a retransmission is a message with the To, From,
    /// Call-ID and CSeq (and for a response the status line and body) of
    /// one already received; otherwise the same bytes.
    pub rtcheck_loose: bool,
    /// `-trace_calldebug`: each call keeps what it did, and a call that
    /// fails or is aborted gives it out ([`Endpoint::call_debug`]).
    pub calldebug: bool,
    /// `-rsa`: every message goes here rather than to its call's peer.
    pub send_to: Option<SocketAddr>,
    /// `-pause_msg_ign`: a message for a call in a `<pause>` is dropped
    /// unread (not even counted as a retransmission), as SIPp does.
    pub pause_msg_ign: bool,
    /// `[file name="..."]` files with a fixed name, read when the run
    /// starts (others are read when a message needs them, as SIPp).
    pub files: HashMap<String, Vec<u8>>,
    /// `-tdmmap`.
    pub tdmmap: Option<TdmMap>,
    /// SIPp's RTP check (`-audiotolerance`, `-videotolerance`): the share
    /// of a pattern stream's packets that may come back wrong or not at
    /// all before its check fails (1.0: only when none came back right).
    pub tolerance: [f64; 2],
    /// The first RTP stream's SSRC (SIPp's 0xCA110000, random with
    /// `-random_base_ssrc`): each call's audio and video count up from it.
    pub ssrc_base: u32,
    /// `<init>`'s `<Global>` values: the first endpoint made runs the
    /// stanza (once for the run, as SIPp), the others take its result.
    pub init_globals: Arc<std::sync::OnceLock<Vec<(VarId, Value)>>>,
}

/// `-tdmmap {X-X'}{H}{Y-Y'}{Z-Z'}`: a table of TDM circuits; a caller's
/// call takes a free one (or fails as SIPp's outbound congestion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdmMap {
    pub x: u32,
    pub a: u32,
    pub h: u32,
    pub y: u32,
    pub b: u32,
    pub z: u32,
    pub c: u32,
}

impl TdmMap {
    /// Reads SIPp's form `{%d-%d}{%d}{%d-%d}{%d-%d}`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut n = Vec::new();
        for group in s.strip_prefix('{')?.strip_suffix('}')?.split("}{") {
            match group.split_once('-') {
                Some((lo, hi)) => {
                    n.push(lo.trim().parse::<u32>().ok()?);
                    n.push(hi.trim().parse::<u32>().ok()?);
                }
                None => n.push(group.trim().parse::<u32>().ok()?),
            }
        }
        let [x1, x2, h, y1, y2, z1, z2] = n.as_slice() else {
            return None;
        };
        Some(TdmMap {
            x: *x1,
            a: x2.checked_sub(*x1)?,
            h: *h,
            y: *y1,
            b: y2.checked_sub(*y1)?,
            z: *z1,
            c: z2.checked_sub(*z1)?,
        })
    }

    /// How many circuits.
    pub fn circuits(&self) -> usize {
        ((self.a + 1) * (self.b + 1) * (self.c + 1)) as usize
    }

    /// Circuit `n` as SIPp writes it.
    fn write(&self, n: u32, out: &mut Vec<u8>) {
        let (b1, c1) = (self.b + 1, self.c + 1);
        let text = format!(
            "{}.{}.{}/{}",
            self.x + (n / (b1 * c1)) % (self.a + 1),
            self.h,
            self.y + (n / c1) % b1,
            self.z + n % c1
        );
        out.extend_from_slice(text.as_bytes());
    }
}

/// SIPp's `[dynamic_id]` counter: from `start`, by `step`, back to
/// `start` past `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic {
    pub start: u64,
    pub max: u64,
    pub step: u64,
}

/// SIPp's default behaviours, all on unless `-nd` or
/// `-default_behaviors` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviors {
    /// `bye`: a failed call is cleaned up (CANCEL, ACK, BYE).
    pub bye: bool,
    /// `abortunexp`: an unexpected message fails the call (else it is
    /// ignored and the call goes on).
    pub abort_unexpected: bool,
    /// `pingreply`: an OPTIONS outside any call is answered 200.
    pub ping_reply: bool,
}

impl Behaviors {
    pub const ALL: Behaviors = Behaviors {
        bye: true,
        abort_unexpected: true,
        ping_reply: true,
    };
    pub const NONE: Behaviors = Behaviors {
        bye: false,
        abort_unexpected: false,
        ping_reply: false,
    };

    /// `-default_behaviors` value, as SIPp reads it: from none, a comma
    /// list of `all`, `none`, `bye`, `abortunexp`, `pingreply`, each
    /// optionally prefixed by `+` (on) or `-` (off), in order. SIPp's
    /// `cseq` (ACK CSeq checks) is not run by sbc-load and is refused.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut b = Behaviors::NONE;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (on, name) = match (item.strip_prefix('-'), item.strip_prefix('+')) {
                (Some(n), _) => (false, n),
                (_, Some(n)) => (true, n),
                _ => (true, item),
            };
            match name {
                "all" => b = if on { Behaviors::ALL } else { Behaviors::NONE },
                "none" => b = Behaviors::NONE,
                "bye" => b.bye = on,
                "abortunexp" => b.abort_unexpected = on,
                "pingreply" => b.ping_reply = on,
                "cseq" => {
                    return Err(
                        "-default_behaviors: cseq (ACK CSeq checks) is not supported by sbc-load"
                            .into(),
                    );
                }
                _ => {
                    return Err(format!(
                        "-default_behaviors: unknown behaviour \"{name}\" (all, none, bye, abortunexp, pingreply)"
                    ));
                }
            }
        }
        Ok(b)
    }
}

/// A run-wide call budget (`-m`) that every thread draws from.
#[derive(Debug)]
pub struct Quota {
    max: u64,
    taken: AtomicU64,
}

impl Quota {
    pub fn new(max: u64) -> Self {
        Quota {
            max,
            taken: AtomicU64::new(0),
        }
    }

    /// Takes one call from the budget; false when it is spent.
    pub fn try_take(&self) -> bool {
        self.taken.fetch_add(1, Ordering::Relaxed) < self.max
    }

    pub fn exhausted(&self) -> bool {
        self.taken.load(Ordering::Relaxed) >= self.max
    }
}

impl Config {
    pub fn new(local_ip: IpAddr) -> Self {
        Config {
            local_ip,
            media_ip: local_ip,
            media_port: 6000,
            service: b"service".to_vec(),
            pid: std::process::id(),
            auth_user: None,
            auth_pass: None,
            auth_uri: None,
            call_id_format: None,
            trace_error_codes: false,
            pause_ms: 0,
            t2_ms: 4000,
            max_invite_retrans: 5,
            max_non_invite_retrans: 9,
            retrans_enabled: true,
            recv_timeout_ms: None,
            inject: None,
            deadcall_ms: 32_000,
            timewait_ms: 4000,
            base_cseq: 1,
            quota: None,
            set: Vec::new(),
            wall_epoch_us: 0,
            epoch: Instant::now(),
            auto_answer: false,
            behaviors: Behaviors::ALL,
            trace_err: false,
            trace_rtt: false,
            trace_logs: false,
            transport: "UDP",
            report_ended: false,
            remote_host: Vec::new(),
            users: None,
            dynamic: Dynamic {
                start: 10_000,
                max: 12_000,
                step: 4,
            },
            dynamic_id: Arc::new(AtomicU64::new(10_000)),
            rfc3339: false,
            callid_slash_ign: false,
            rtcheck_loose: false,
            ip_field: None,
            calldebug: false,
            send_to: None,
            pause_msg_ign: false,
            files: HashMap::new(),
            tdmmap: None,
            tolerance: [1.0, 1.0],
            ssrc_base: 0xCA11_0000,
            init_globals: Arc::new(std::sync::OnceLock::new()),
        }
    }
}

/// A call variable's value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Unset,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
}

impl Value {
    /// SIPp's isSet (`condexec`): a string is set once it has a value,
    /// even empty; a number when it is not 0.
    fn is_set(&self) -> bool {
        match self {
            Value::Unset => false,
            Value::Str(_) => true,
            Value::Num(n) => *n != 0.0,
            Value::Bool(b) => *b,
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Unset => false,
            Value::Str(s) => !s.is_empty(),
            Value::Num(n) => *n != 0.0,
            Value::Bool(b) => *b,
        }
    }

    fn number(&self) -> f64 {
        match self {
            Value::Num(n) => *n,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Str(s) => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0.0),
            Value::Unset => 0.0,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Unset => {}
            Value::Str(s) => out.extend_from_slice(s),
            // SIPp prints doubles with "%lf".
            Value::Num(n) => out.extend_from_slice(format!("{n:.6}").as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Wait {
    Running,
    /// At a `<recvCmd>`: waiting for the 3PCC twin's message (until
    /// `-recv_timeout`, as a `<recv>`).
    RecvCmd {
        deadline: Option<u64>,
    },
    Recv {
        deadline: Option<u64>,
    },
    Pause {
        until: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Retrans {
    next_at: u64,
    interval: u64,
    count: u32,
    max: u32,
    invite: bool,
    /// The `<send>` step being retransmitted.
    step: usize,
}

#[derive(Debug)]
struct Call {
    serial: u64,
    number: u64,
    id: Vec<u8>,
    peer: SocketAddr,
    step: usize,
    wait: Wait,
    vars: Vec<Value>,
    last_msg: Vec<u8>,
    peer_tag: Vec<u8>,
    routes: Vec<u8>,
    next_url: Vec<u8>,
    last_sent: Vec<u8>,
    /// The `<recv>` step the last sent message followed.
    sent_after: Option<usize>,
    last_recv: Option<usize>,
    retrans: Option<Retrans>,
    /// Per step: hash of the message matched there (0: none).
    recv_hashes: Vec<u64>,
    /// `-trace_calldebug`: what the call did, written out if it fails.
    debug: Vec<u8>,
    /// It runs the out-of-call scenario.
    ooc: bool,
    rtd_start: [u64; RTD_COUNT],
    rtd_done: [bool; RTD_COUNT],
    invite_at: Option<u64>,
    got_18x: bool,
    got_200: bool,
    started: u64,
    cseq: u64,
    /// Per `-inf` file: the line this call took (-1: none).
    inject_rows: Vec<i64>,
    /// Where `<setdest>` sends this call's messages (else its peer).
    dest: Option<SocketAddr>,
    /// Per named transaction: the branch of its request (empty: not
    /// started), and its ACK (to send again for a late final answer).
    txns: Vec<Vec<u8>>,
    txn_acks: Vec<Vec<u8>>,
    /// The next `play_dtmf` sequence number (SIPp starts at 1200).
    dtmf_seq: u16,
    /// The first INVITE sent (for CANCEL, ACK and BYE when the call is
    /// aborted).
    invite: Vec<u8>,
    /// Highest status received for that INVITE (0: none).
    invite_status: u16,
    /// The To header of the final response to the INVITE.
    invite_to: Vec<u8>,
    /// Set by a failed `check_it`: the call goes on and counts as failed.
    doomed: Option<FailReason>,
    /// The peer's unexpected BYE or CANCEL ended the call: no clean-up.
    peer_hung_up: bool,
    /// Where a jump in the running `<pause>` goes when it ends.
    pause_jump: Option<usize>,
    /// `pauserestore`: the end (ms of the run's clock) of a pause to go
    /// back into before the next step runs.
    pause_restore: Option<u64>,
    /// A message it did not expect is being handed to its `_unexp.main`.
    unexpected_jumped: bool,
    /// The jump of the pause `_unexp.main` interrupted, for
    /// `pauserestore`.
    unexp_pause_jump: Option<usize>,
    /// A message for `_unexp.main` that waits for its first `<recv>`.
    queued: Option<Vec<u8>>,
    /// The deadline last put on the timer heap.
    scheduled: Option<u64>,
    /// Per [`MediaKind`]: where the peer's SDP said that stream goes.
    media_to: [Option<SocketAddr>; 3],
    /// Per [`MediaKind`]: the port our own SDP gave that stream.
    media_from: [Option<u16>; 3],
    /// In its `<timewait>`: however it ends now, it succeeded.
    timewait: bool,
    /// Its user (`-users`), else 0.
    user: u32,
    /// Its TDM circuit plus one (`-tdmmap`), else 0.
    tdm: u32,
    /// `-t un`: the port of the call's own socket (`[local_port]`); 0:
    /// the thread's.
    port: u16,
    /// The SDES keys of its SDP (only once one carried `a=crypto`).
    keys: Option<Box<Keys>>,
}

impl Call {
    /// Whether its tables are those of a scenario of this many steps,
    /// variables and transactions.
    fn fits(&self, (steps, vars, txns): (usize, usize, usize)) -> bool {
        self.recv_hashes.len() == steps && self.vars.len() == vars && self.txns.len() == txns
    }

    fn empty(steps: usize, vars: usize, txns: usize) -> Self {
        Call {
            serial: 0,
            number: 0,
            id: Vec::with_capacity(48),
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            step: 0,
            wait: Wait::Running,
            vars: vec![Value::Unset; vars],
            last_msg: Vec::new(),
            peer_tag: Vec::new(),
            routes: Vec::new(),
            next_url: Vec::new(),
            last_sent: Vec::with_capacity(1024),
            sent_after: None,
            last_recv: None,
            retrans: None,
            recv_hashes: vec![0; steps],
            debug: Vec::new(),
            ooc: false,
            rtd_start: [0; RTD_COUNT],
            rtd_done: [false; RTD_COUNT],
            invite_at: None,
            got_18x: false,
            got_200: false,
            started: 0,
            cseq: 0,
            inject_rows: Vec::new(),
            dest: None,
            txns: vec![Vec::new(); txns],
            txn_acks: vec![Vec::new(); txns],
            dtmf_seq: 1200,
            invite: Vec::new(),
            invite_status: 0,
            invite_to: Vec::new(),
            doomed: None,
            peer_hung_up: false,
            pause_jump: None,
            pause_restore: None,
            unexpected_jumped: false,
            unexp_pause_jump: None,
            queued: None,
            scheduled: None,
            media_to: [None; 3],
            media_from: [None; 3],
            timewait: false,
            user: 0,
            tdm: 0,
            port: 0,
            keys: None,
        }
    }

    /// Back to a fresh call, keeping the buffers' memory.
    fn reset(&mut self) {
        self.id.clear();
        self.port = 0;
        self.step = 0;
        self.wait = Wait::Running;
        self.vars.fill(Value::Unset);
        self.last_msg.clear();
        self.peer_tag.clear();
        self.routes.clear();
        self.next_url.clear();
        self.last_sent.clear();
        self.sent_after = None;
        self.last_recv = None;
        self.retrans = None;
        self.recv_hashes.fill(0);
        self.debug.clear();
        self.ooc = false;
        self.rtd_start = [0; RTD_COUNT];
        self.rtd_done = [false; RTD_COUNT];
        self.invite_at = None;
        self.got_18x = false;
        self.got_200 = false;
        self.invite.clear();
        self.invite_status = 0;
        self.invite_to.clear();
        self.doomed = None;
        self.peer_hung_up = false;
        self.pause_jump = None;
        self.pause_restore = None;
        self.unexpected_jumped = false;
        self.unexp_pause_jump = None;
        self.queued = None;
        self.scheduled = None;
        self.media_to = [None; 3];
        self.media_from = [None; 3];
        self.timewait = false;
        self.user = 0;
        self.tdm = 0;
        self.keys = None;
        self.inject_rows.clear();
        self.dest = None;
        self.txns.iter_mut().for_each(Vec::clear);
        self.txn_acks.iter_mut().for_each(Vec::clear);
        self.dtmf_seq = 1200;
    }

    /// Where this call's messages go.
    fn dst(&self) -> SocketAddr {
        self.dest.unwrap_or(self.peer)
    }

    fn deadline(&self) -> Option<u64> {
        let wait = match self.wait {
            Wait::Running => None,
            Wait::Recv { deadline } | Wait::RecvCmd { deadline } => deadline,
            Wait::Pause { until } => Some(until),
        };
        match (wait, self.retrans.map(|r| r.next_at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One datagram to send: `len` bytes at `start` of the output buffer.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    pub dst: SocketAddr,
    pub start: usize,
    pub len: usize,
    /// The call that sent it (its serial; 0: none). Messages of one call
    /// must leave in the order they were queued.
    pub call: u64,
}

/// One media datagram to send: `len` bytes at `start` of the media
/// buffer, from the media address's port `from_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaOut {
    pub from_port: u16,
    pub dst: SocketAddr,
    pub start: usize,
    pub len: usize,
}

/// What an `<exec>` asked for, done once the actions have run.
#[derive(Debug)]
enum Exec {
    Play(MediaKind, Arc<Capture>),
    Stream(RtpStream),
    Echo(EchoOp, MediaKind),
    CloseCon,
    Command(Vec<u8>),
    Stop(IntCmd),
    Log(Vec<u8>),
    Dtmf(Vec<u8>),
}

/// A piece of a `-cid_str` Call-ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidPart {
    Text(Vec<u8>),
    /// `%u`: the call number.
    Number,
    /// `%p`: the process id.
    Pid,
    /// `%s`: the local IP address.
    LocalIp,
}

/// Reads a `-cid_str` pattern as SIPp does: `%u`, `%p` and `%s` are
/// replaced; any other `%x` leaves a `%` and drops the `x`.
pub fn call_id_format(pattern: &str) -> Vec<CidPart> {
    let mut parts = Vec::new();
    let mut text = Vec::new();
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            text.push(b);
            continue;
        }
        let part = match bytes.next() {
            Some(b'u') => CidPart::Number,
            Some(b'p') => CidPart::Pid,
            Some(b's') => CidPart::LocalIp,
            _ => {
                text.push(b'%');
                continue;
            }
        };
        if !text.is_empty() {
            parts.push(CidPart::Text(std::mem::take(&mut text)));
        }
        parts.push(part);
    }
    if !text.is_empty() {
        parts.push(CidPart::Text(text));
    }
    parts
}

/// What [`Endpoint::start_call_on`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No call: no destination, no quota left, no free user.
    Nothing,
    /// A call was counted and failed at once (no free TDM circuit).
    Failed,
    /// This call (its serial) was started.
    Call(u64),
}

/// A call's `rtp_stream`: the next packet's place in the file and RTP
/// header fields.
#[derive(Debug)]
struct Stream {
    file: Arc<StreamFile>,
    pos: usize,
    loops_done: i64,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    paused: bool,
    next_at: u64,
    to: SocketAddr,
    from_port: u16,
    generation: u64,
    /// SRTP, when the SDP exchanged carried keys.
    srtp: Option<Box<Pair>>,
    /// A pattern stream's check of what comes back to its port.
    check: Option<Check>,
}

/// A call's `rtp_echo`: what reaches `port` goes back where it came from.
#[derive(Debug)]
struct Echo {
    port: u16,
    srtp: Option<Box<Pair>>,
}

/// What takes the datagrams of a media port: a stream's check or an
/// echo (by [`media_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Check(u64),
    Echo(u64),
}

/// The key of a call's stream or echo of a kind (audio, video).
fn media_key(serial: u64, kind: MediaKind) -> u64 {
    (serial << 1) | u64::from(kind == MediaKind::Video)
}

/// A capture being played for a call.
#[derive(Debug)]
struct Playback {
    capture: Arc<Capture>,
    /// The next packet to send.
    next: usize,
    start: u64,
    to: SocketAddr,
    from_port: u16,
    /// Tells this playback's timer entries from a replaced one's.
    generation: u64,
}

enum Flow {
    Waiting,
    Finished,
    Failed(FailReason),
}

/// One thread's calls. Times are microseconds since the run started.
#[derive(Debug)]
pub struct Endpoint {
    /// Set by an `<error>` action: the run must stop (SIPp exits 255).
    pub fatal: Option<String>,
    /// `-trace_calldebug`: what failed and aborted calls did, for the call
    /// debug file (taken by the runtime).
    pub call_debug: Vec<Vec<u8>>,
    /// The out-of-call scenario's part (see [`Other`]).
    ooc: Option<Box<Other>>,
    /// Set by `<exec int_cmd="stop_gracefully|stop_now">`: what the whole
    /// run must do.
    pub run_stop: Option<IntCmd>,
    /// Shell commands (`<exec command>`) to start, rendered.
    pub commands: Vec<Vec<u8>>,
    /// With `-trace_err`: SIPp's warning and error texts, for its errors
    /// file (the runtime drains them).
    pub errors: Vec<String>,
    /// With `-trace_rtt`: (time, response time, counter) of each response
    /// time measured, µs (the runtime drains them).
    pub rtt_samples: Vec<(u64, u64, u8)>,
    /// With `-trace_error_codes`: the status of each unexpected response
    /// (the runtime drains them).
    pub error_codes: Vec<u16>,
    /// With `-trace_logs`: `<log>` messages, rendered (the runtime drains
    /// them).
    pub logs: Vec<Vec<u8>>,
    /// With [`Config::report_ended`]: the serials of calls that ended
    /// (the runtime drains them).
    pub ended: Vec<u64>,
    /// `<closecon>`: the calls (serial, where their messages go) whose
    /// TCP or TLS connection must close (the runtime drains them).
    pub close_connections: Vec<(u64, SocketAddr)>,
    /// `-t ui`: calls a callee started since the runtime last looked.
    pub started: Vec<u64>,
    /// `-t ui`: the source address field of the call started last.
    started_source: Vec<u8>,
    /// Messages for the 3PCC twin (`<sendCmd>`), rendered, with the peer
    /// `dest` names in extended mode; the runtime sends each followed by
    /// SIPp's delimiter (ESC).
    pub twin_out: Vec<(Option<Box<str>>, Vec<u8>)>,
    /// Whether the scenario plays captures (received SDP is then read).
    plays_media: bool,
    /// Playbacks by call serial, and when their next packets are due
    /// (time, call serial, generation).
    playbacks: HashMap<u64, Playback, BuildHasherDefault<Prehashed>>,
    play_due: BinaryHeap<Reverse<(u64, u64, u64)>>,
    play_generation: u64,
    /// `rtp_stream`s by [`media_key`], and when their next packets are
    /// due (time, key, generation).
    streams: HashMap<u64, Stream, BuildHasherDefault<Prehashed>>,
    stream_due: BinaryHeap<Reverse<(u64, u64, u64)>>,
    /// `rtp_echo`s by [`media_key`].
    echoes: HashMap<u64, Echo, BuildHasherDefault<Prehashed>>,
    /// The media ports read (see [`Endpoint::handle_media`]): the stream
    /// check or echo that takes what arrives there.
    listens: HashMap<u16, Listener>,
    /// An SRTP packet's plain form, between unprotect and protect.
    scratch: Vec<u8>,
    media_buf: Vec<u8>,
    media_out: Vec<MediaOut>,
    execs: Vec<Exec>,
    /// `<Global>` variables and their values, shared by this thread's
    /// calls (copied into each call when it starts, back after actions).
    globals: Vec<(VarId, Value)>,
    cfg: Arc<Config>,
    scn: Arc<Scenario>,
    local_ip: Vec<u8>,
    media_ip: Vec<u8>,
    /// The caller's destination as text (the common `[remote_ip]`).
    remote_ip: Vec<u8>,
    local_port: u16,
    /// Where a caller sends its first message.
    remote: Option<SocketAddr>,
    pid: Vec<u8>,
    /// The SSRC of the last `play_dtmf` (0: none yet).
    dtmf_ssrc: u32,
    /// `-tdmmap`: the circuits in use.
    tdm_busy: Vec<bool>,
    /// The `-inf` files (`<insert>` and `<replace>` change this thread's
    /// copy; a scenario that does runs on one thread).
    inject: RefCell<Option<Arc<Injection>>>,
    /// With `-users`: the users free to place a call (taken from the
    /// back, given back at the front, as SIPp), and the `<User>`
    /// variables each user keeps between its calls.
    free_users: VecDeque<u32>,
    user_vars: HashMap<u32, Vec<(VarId, Value)>>,
    /// Boxed: a call moves in and out of its slot on every event.
    slab: Vec<Option<Box<Call>>>,
    free: Vec<u32>,
    /// Call-ID hash -> slot (the call's own Call-ID is checked on use).
    by_id: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Ended calls kept for reuse, boxed so that taking one back into a slot
    /// moves a pointer, not the call's buffers.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Call>>,
    timers: BinaryHeap<Reverse<(u64, u32, u64)>>,
    dead: HashSet<u64, BuildHasherDefault<Prehashed>>,
    dead_fifo: VecDeque<(u64, u64)>,
    /// Ended calls' last answers, by the hash of the request they answer.
    answers: HashMap<u64, (SocketAddr, Vec<u8>), BuildHasherDefault<Prehashed>>,
    answers_fifo: VecDeque<(u64, u64)>,
    /// Buffers of expired answers, handed to ending calls in exchange for
    /// theirs (no allocation per answered call).
    spare_answers: Vec<Vec<u8>>,
    seed: u64,
    /// Serial of the call being run (0: none), for [`Outgoing::call`].
    current: u64,
    next_number: u64,
    number_stride: u64,
    serial: u64,
    rng: u64,
    needs_last: bool,
    /// False once the run stops taking new calls.
    accepting: bool,
    out_buf: Vec<u8>,
    out: Vec<Outgoing>,
    pub stats: Stats,
}

/// Ended calls kept for their buffers.
const SPARE_CALLS: usize = 4096;

/// A keyed 64-bit hash for Call-IDs and retransmission checks (the load
/// generator's own traffic: speed over resistance to crafted input).
fn fast_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // fmix64 (MurmurHash3's finaliser).
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// A hasher for keys that are already hashes.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn ip_type(ip: IpAddr) -> &'static [u8] {
    if ip.is_ipv6() { b"6" } else { b"4" }
}

/// Field `field` of `-inf` file `file`, on the line `call` took
/// (`[fieldN]`).
fn own_field(
    inject: &RefCell<Option<Arc<Injection>>>,
    call: &Call,
    (file, field): (usize, usize),
    out: &mut Vec<u8>,
) {
    let inj = inject.borrow();
    if let Some(f) = inj.as_ref().and_then(|i| i.files.get(file)) {
        f.write_field(
            call.inject_rows.get(file).copied().unwrap_or(-1),
            field,
            out,
        );
    }
}

fn ip_text(ip: IpAddr) -> Vec<u8> {
    ip.to_string().into_bytes()
}

/// What an endpoint keeps per scenario: its `<Global>` variables (with
/// `-set`'s values), whether it plays media, whether a call keeps its last
/// message (only when something reads it later).
fn scenario_parts(cfg: &Config, scn: &Scenario) -> (Vec<(VarId, Value)>, bool, bool) {
    let needs_last = scn.uses(|k| {
        matches!(
            k,
            Keyword::Last(_)
                | Keyword::LastRequestUri
                | Keyword::LastCseqNumber(_)
                | Keyword::LastMessage
                | Keyword::Authentication { .. }
        )
    }) || scn
        .steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::Nop) && !s.actions.is_empty());
    let globals = scn
        .globals
        .iter()
        .map(|&id| {
            let name = scn.vars.get(usize::from(id.0)).map_or("", String::as_str);
            let value = cfg
                .set
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map_or(Value::Unset, |(_, v)| Value::Str(v.clone()));
            (id, value)
        })
        .collect();
    let plays_media = scn.steps.iter().flat_map(|s| &s.actions).any(|a| {
        matches!(
            a,
            Action::PlayPcap { .. }
                | Action::PlayDtmf(_)
                | Action::RtpStream(RtpStream::Play(_))
                | Action::RtpEcho(..)
        )
    });
    (globals, plays_media, needs_last)
}

/// The out-of-call scenario (`-oocsf`, `-oocsn`) and what goes with it,
/// or, while one of its calls runs, the main scenario's: the two trade
/// places for that time ([`Endpoint::run`]), so the engine runs either.
#[derive(Debug)]
struct Other {
    scn: Arc<Scenario>,
    globals: Vec<(VarId, Value)>,
    plays_media: bool,
    needs_last: bool,
    stats: Stats,
}

impl Endpoint {
    /// `first_number` and `stride` number the calls of this thread (thread
    /// `i` of `n`: `i + 1` and `n`), so Call-IDs are unique across threads.
    pub fn new(
        cfg: Arc<Config>,
        scn: Arc<Scenario>,
        local_port: u16,
        remote: Option<SocketAddr>,
        first_number: u64,
        stride: u64,
    ) -> Self {
        let (globals, plays_media, needs_last) = scenario_parts(&cfg, &scn);
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let steps = scn.steps.len();
        let mut ep = Endpoint {
            fatal: None,
            started: Vec::new(),
            started_source: Vec::new(),
            call_debug: Vec::new(),
            ooc: None,
            run_stop: None,
            commands: Vec::new(),
            errors: Vec::new(),
            twin_out: Vec::new(),
            logs: Vec::new(),
            ended: Vec::new(),
            close_connections: Vec::new(),
            rtt_samples: Vec::new(),
            error_codes: Vec::new(),
            plays_media,
            playbacks: HashMap::default(),
            play_due: BinaryHeap::new(),
            play_generation: 0,
            streams: HashMap::default(),
            stream_due: BinaryHeap::new(),
            echoes: HashMap::default(),
            listens: HashMap::new(),
            scratch: Vec::new(),
            media_buf: Vec::new(),
            media_out: Vec::new(),
            execs: Vec::new(),
            globals,
            local_ip: ip_text(cfg.local_ip),
            media_ip: ip_text(cfg.media_ip),
            remote_ip: remote.map_or_else(Vec::new, |r| ip_text(r.ip())),
            pid: cfg.pid.to_string().into_bytes(),
            dtmf_ssrc: 0,
            tdm_busy: vec![false; cfg.tdmmap.map_or(0, |t| t.circuits())],
            inject: RefCell::new(cfg.inject.clone()),
            free_users: VecDeque::new(),
            user_vars: HashMap::new(),
            cfg,
            scn,
            local_port,
            remote,
            slab: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::default(),
            spare: Vec::new(),
            timers: BinaryHeap::new(),
            dead: HashSet::default(),
            dead_fifo: VecDeque::new(),
            answers: HashMap::default(),
            answers_fifo: VecDeque::new(),
            spare_answers: Vec::new(),
            seed: u64::from_le_bytes(seed).rotate_left(17) ^ 0x5851_F42D_4C95_7F2D,
            current: 0,
            next_number: first_number.max(1),
            number_stride: stride.max(1),
            serial: 0,
            rng: u64::from_le_bytes(seed) | 1,
            needs_last,
            accepting: true,
            out_buf: Vec::with_capacity(1 << 16),
            out: Vec::with_capacity(256),
            stats: Stats::new(steps),
        };
        if !ep.scn.init.is_empty() {
            let once = Arc::clone(&ep.cfg.init_globals);
            let globals = once.get_or_init(|| {
                ep.run_init();
                ep.globals.clone()
            });
            ep.globals.clone_from(globals);
        }
        ep
    }

    /// `<init>`: its `<nop>`s run once, before any call, on a call of
    /// their own; what they write into `<Global>` variables stays.
    fn run_init(&mut self) {
        let scn = Arc::clone(&self.scn);
        if scn.init.is_empty() {
            return;
        }
        let mut call = Call::empty(scn.steps.len(), scn.vars.len(), scn.txns.len());
        for (id, value) in &self.globals {
            if let Some(v) = call.vars.get_mut(usize::from(id.0)) {
                v.clone_from(value);
            }
        }
        let mut idx = 0;
        for _ in 0..scn.init.len() * 8 + 64 {
            let Some(step) = scn.init.get(idx) else {
                break;
            };
            if !self.runs(&call, step) {
                idx = self.next_from(&call, step, idx);
                continue;
            }
            let mut execs = Vec::new();
            let (mut rng, mut fatal, mut warnings) =
                (self.rng, self.fatal.take(), self.stats.warnings);
            let ran = run_actions(
                &step.actions,
                &mut call,
                (None, None),
                (&self.env(0), idx),
                (&mut rng, &mut fatal, &mut warnings),
                (&mut execs, None),
            );
            (self.rng, self.fatal, self.stats.warnings) = (rng, fatal, warnings);
            for e in execs {
                self.exec(&mut call, e, 0);
            }
            idx = match ran {
                // As in a call: a jump to itself or past the end is fatal.
                Ok(Some(to)) if to == idx || to > scn.init.len() => {
                    self.fatal = Some(format!(
                        "<init>: the jump at index {idx} goes to {to}, itself or past the stanza's end"
                    ));
                    break;
                }
                Ok(Some(to)) => to,
                Ok(None) | Err(FailReason::Rejected) => self.next_from(&call, step, idx),
                Err(_) if self.fatal.is_some() => break,
                Err(_) => self.next_from(&call, step, idx),
            };
        }
        if idx < scn.init.len() && self.fatal.is_none() {
            self.fatal = Some("<init>: its nops loop without end".into());
        }
        self.save_globals(&call);
    }

    /// `condexec`: whether the call runs `step` (else it goes past).
    fn runs(&self, call: &Call, step: &crate::scenario::Step) -> bool {
        step.condexec.is_none_or(|(var, inverse)| {
            call.vars.get(usize::from(var.0)).is_some_and(Value::is_set) != inverse
        })
    }

    /// The keyword environment of this endpoint at `now`.
    fn env(&self, now: u64) -> Env<'_> {
        Env {
            cfg: &self.cfg,
            pid: &self.pid,
            local_ip: &self.local_ip,
            local_port: self.local_port,
            media_ip: &self.media_ip,
            remote: self.remote,
            remote_ip: &self.remote_ip,
            inject: &self.inject,
            now,
        }
    }

    /// Renders `msg` for `call` at step `idx` into `buf`; why the call
    /// fails when a keyword cannot render (a fatal one also sets
    /// [`Endpoint::fatal`]).
    fn render(
        &mut self,
        msg: &crate::template::Template,
        buf: &mut Vec<u8>,
        call: &Call,
        (idx, now): (usize, u64),
        last: (Option<&Message<'_>>, &[u8]),
    ) -> Option<FailReason> {
        let env = self.env(now);
        let mut fatal = None;
        let mut failure = None;
        msg.render(buf, |kw, out| match env.keyword(kw, call, idx, last, out) {
            Ok(()) => {}
            Err(KwError::Fail(r)) => {
                failure.get_or_insert(r);
            }
            Err(KwError::Fatal(m)) => {
                fatal.get_or_insert(m);
            }
        });
        if let Some(m) = fatal {
            self.fatal.get_or_insert(m);
            failure.get_or_insert(FailReason::ErrorAction);
        }
        failure
    }

    /// Runs step `idx`'s actions on `msg` (the message received, sent, or
    /// the last one) at `now`; `Ok(Some(step))` when one of them jumped.
    /// A failed check dooms the call (it goes on and counts as failed);
    /// `Err` is a fatal `<error>` or jump, which ends it at once.
    /// `stop_call` ends the call (`Err(Rejected)`) only in a `<recv>`;
    /// elsewhere it only skips the actions after it, as in SIPp.
    fn actions(
        &mut self,
        call: &mut Call,
        idx: usize,
        msg: Option<&Message<'_>>,
        now: u64,
    ) -> Result<Option<usize>, FailReason> {
        self.actions_on(call, idx, msg, None, now)
    }

    /// [`Endpoint::actions`], searching `raw` (a 3PCC command's text)
    /// rather than `msg`'s bytes when given.
    fn actions_on(
        &mut self,
        call: &mut Call,
        idx: usize,
        msg: Option<&Message<'_>>,
        raw: Option<&[u8]>,
        now: u64,
    ) -> Result<Option<usize>, FailReason> {
        let scn = Arc::clone(&self.scn);
        let Some(step) = scn.steps.get(idx) else {
            return Ok(None);
        };
        if step.actions.is_empty() {
            return Ok(None);
        }
        let mut execs = std::mem::take(&mut self.execs);
        let mut errors = std::mem::take(&mut self.errors);
        let (mut rng, mut fatal, mut warnings) = (self.rng, self.fatal.take(), self.stats.warnings);
        let ran = run_actions(
            &step.actions,
            call,
            (msg, raw),
            (&self.env(now), idx),
            (&mut rng, &mut fatal, &mut warnings),
            (&mut execs, self.cfg.trace_err.then_some(&mut errors)),
        );
        (self.rng, self.fatal, self.stats.warnings) = (rng, fatal, warnings);
        self.errors = errors;
        if let (true, Err(FailReason::ErrorAction), Some(m)) =
            (self.cfg.trace_err, &ran, &self.fatal)
        {
            self.errors.push(m.clone());
        }
        for e in execs.drain(..) {
            self.exec(call, e, now);
        }
        self.execs = execs;
        let in_recv = matches!(step.kind, StepKind::Recv(_));
        let jump = match ran {
            Ok(jump) => jump,
            Err(FailReason::ErrorAction) => return Err(FailReason::ErrorAction),
            Err(FailReason::Rejected) if in_recv => return Err(FailReason::Rejected),
            Err(FailReason::Rejected) => return Ok(None),
            Err(check) => {
                call.doomed.get_or_insert(check);
                return Ok(None);
            }
        };
        // As SIPp: a jump to itself or past the end (beyond "end of
        // scenario") is a fatal error of the scenario.
        match jump {
            Some(to) if to == idx => {
                self.fatal = Some(format!("jump statement at index {idx} jumps to itself"));
                Err(FailReason::ErrorAction)
            }
            Some(to) if to > scn.steps.len() => {
                self.fatal = Some(format!(
                    "jump statement out of range (not 0 <= index <= {})",
                    scn.steps.len()
                ));
                Err(FailReason::ErrorAction)
            }
            _ => Ok(jump),
        }
    }

    /// Does what an `<exec>` asked for.
    fn exec(&mut self, call: &mut Call, e: Exec, now: u64) {
        match e {
            Exec::Command(c) => {
                self.stats.commands_run += 1;
                self.commands.push(c);
            }
            Exec::Log(line) => self.logs.push(line),
            Exec::Dtmf(digits) => {
                // As SIPp: one SSRC a play_dtmf, counting up from a
                // random one; the call's sequence numbers go on from the
                // last play's.
                if self.dtmf_ssrc == 0 {
                    self.dtmf_ssrc = (next_random(&mut self.rng) as u32).max(1);
                }
                self.dtmf_ssrc = self.dtmf_ssrc.wrapping_add(1);
                let capture = crate::pcap::dtmf(&digits, self.dtmf_ssrc, call.dtmf_seq);
                call.dtmf_seq = call.dtmf_seq.wrapping_add(capture.packets.len() as u16);
                if !capture.packets.is_empty() {
                    self.exec(call, Exec::Play(MediaKind::Audio, Arc::new(capture)), now);
                }
            }
            Exec::Stop(cmd) => {
                if self.run_stop != Some(IntCmd::StopNow) {
                    self.run_stop = Some(cmd);
                }
            }
            Exec::Stream(RtpStream::Pause(which) | RtpStream::Resume(which)) => {
                let pause = matches!(e, Exec::Stream(RtpStream::Pause(_)));
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    if which.is_none_or(|w| w == kind)
                        && let Some(s) = self.streams.get_mut(&media_key(call.serial, kind))
                    {
                        s.paused = pause;
                    }
                }
            }
            // A loop count of 0 plays nothing (SIPp).
            Exec::Stream(RtpStream::Play(file)) if file.loops == 0 => {}
            Exec::Stream(RtpStream::Play(file)) => self.play_stream(call, file, now),
            Exec::Echo(op, kind) => self.echo_op(call, op, kind),
            Exec::CloseCon => self.close_connections.push((call.serial, call.dst())),
            Exec::Play(kind, capture) => {
                let Some((to, from_port)) = self.media_ends(call, kind, "play_pcap") else {
                    return;
                };
                self.play_generation += 1;
                let generation = self.play_generation;
                // One playback per call, as SIPp's one media thread: a new
                // one replaces the one in progress.
                self.playbacks.insert(
                    call.serial,
                    Playback {
                        capture,
                        next: 0,
                        start: now,
                        to,
                        from_port,
                        generation,
                    },
                );
                self.play_due.push(Reverse((now, call.serial, generation)));
            }
        }
    }

    /// `rtp_stream`: the file or pattern plays on the call's stream of its
    /// kind (replacing the one there), with the SDP's SRTP keys if any.
    fn play_stream(&mut self, call: &Call, file: Arc<StreamFile>, now: u64) {
        let kind = file.kind;
        let Some((to, from_port)) = self.media_ends(call, kind, "rtp_stream") else {
            return;
        };
        let key = media_key(call.serial, kind);
        if let Some(old) = self.streams.remove(&key) {
            self.stream_over(key, old);
        }
        self.play_generation += 1;
        let generation = self.play_generation;
        let r = self.random();
        let check = file.pattern.map(|_| Check::default());
        if check.is_some() {
            self.listen(call, from_port, Listener::Check(key));
        }
        // As SIPp: SSRCs count up from the base, two a call.
        let ssrc = self.cfg.ssrc_base.wrapping_add(
            (call.number.wrapping_sub(1).wrapping_mul(2) as u32)
                .wrapping_add(u32::from(kind == MediaKind::Video)),
        );
        let srtp = self.srtp_pair(call, kind);
        self.streams.insert(
            key,
            Stream {
                file,
                pos: 0,
                loops_done: 0,
                seq: r as u16,
                timestamp: (r >> 16) as u32,
                ssrc,
                paused: false,
                next_at: now,
                to,
                from_port,
                generation,
                srtp,
                check,
            },
        );
        self.stream_due.push(Reverse((now, key, generation)));
    }

    /// The SRTP keys of a call's stream of `kind`; none (plain RTP) with
    /// a warning when its SDP asked for SRTP sbc-load cannot do.
    fn srtp_pair(&mut self, call: &Call, kind: MediaKind) -> Option<Box<Pair>> {
        let keys = call.keys.as_ref()?;
        let video = kind == MediaKind::Video;
        let pair = keys.pair(video);
        if pair.is_none() && keys.unusable(video) {
            self.warn(format!(
                "SRTP: no a=crypto line of the {} stream of call {} is one sbc-load can use (AES_CM_128_HMAC_SHA1_80/32, NULL_HMAC_SHA1_80/32, without MKI): plain RTP",
                kind.name(),
                String::from_utf8_lossy(&call.id)
            ));
        }
        pair
    }

    /// A warning: counted, shown (the first few), in the errors file.
    fn warn(&mut self, text: String) {
        self.stats.warnings += 1;
        if self.stats.warnings <= WARNINGS_SHOWN {
            eprintln!("sbc-load: warning: {text}");
        }
        self.error(|| text);
    }

    /// Media port `port` is read for `who` now; another call's there
    /// (two calls on one port: `[media_port]` in their SDP, or more open
    /// calls than `[auto_media_port]` has ports) is told.
    fn listen(&mut self, call: &Call, port: u16, who: Listener) {
        let owner = |l: Listener| match l {
            Listener::Check(k) | Listener::Echo(k) => k >> 1,
        };
        if let Some(old) = self.listens.insert(port, who)
            && owner(old) != owner(who)
        {
            self.warn(format!(
                "media port {port} was read for another call: call {} takes it (each call needs its own port for RTP checks and echoes)",
                String::from_utf8_lossy(&call.id)
            ));
        }
    }

    /// Port `port` is no longer read for `who` (if it still is).
    fn unlisten(&mut self, port: u16, who: Listener) {
        if self.listens.get(&port) == Some(&who) {
            self.listens.remove(&port);
        }
    }

    /// A stream ended (played out, replaced, or its call ended): a
    /// pattern stream's check gives its verdict.
    fn stream_over(&mut self, key: u64, s: Stream) {
        self.unlisten(s.from_port, Listener::Check(key));
        let tolerance = self.cfg.tolerance[usize::from(s.file.kind == MediaKind::Video)];
        if let Some(c) = s.check {
            self.stats.rtp_check_packets_ok += c.ok;
            match c.passed(tolerance) {
                Some(true) => self.stats.rtp_checks_passed += 1,
                Some(false) => {
                    self.stats.rtp_checks_failed += 1;
                    self.error(|| {
                        format!(
                            "RTP check failed: {} of {} packets of pattern {} came back with it",
                            c.ok,
                            c.sent,
                            s.file.pattern.unwrap_or(0)
                        )
                    });
                }
                None => {}
            }
        }
    }

    /// `rtp_echo`: starts, rekeys or stops the call's echo of a kind, on
    /// the port our SDP gave that stream.
    fn echo_op(&mut self, call: &Call, op: EchoOp, kind: MediaKind) {
        let key = media_key(call.serial, kind);
        match op {
            EchoOp::Stop => {
                if let Some(e) = self.echoes.remove(&key) {
                    self.unlisten(e.port, Listener::Echo(key));
                }
            }
            EchoOp::Update if self.echoes.contains_key(&key) => {
                let srtp = self.srtp_pair(call, kind);
                if let Some(e) = self.echoes.get_mut(&key) {
                    e.srtp = srtp;
                }
            }
            EchoOp::Start | EchoOp::Update => {
                let port = call
                    .media_from
                    .get(kind as usize)
                    .copied()
                    .flatten()
                    .unwrap_or_else(|| self.cfg.media_port.wrapping_add(2 * u16::from(kind as u8)));
                let srtp = self.srtp_pair(call, kind);
                if let Some(old) = self.echoes.insert(key, Echo { port, srtp }) {
                    self.unlisten(old.port, Listener::Echo(key));
                }
                self.listen(call, port, Listener::Echo(key));
            }
        }
    }

    /// The media ports whose datagrams [`Endpoint::handle_media`] wants
    /// (pattern streams' checks, echoes).
    pub fn media_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.listens.keys().copied()
    }

    /// Whether any media port is to be read.
    pub fn listening(&self) -> bool {
        !self.listens.is_empty()
    }

    /// A datagram that reached media port `port` from `from`: an echo
    /// sends it back; a pattern stream checks it.
    pub fn handle_media(&mut self, port: u16, from: SocketAddr, data: &[u8]) {
        let key = match self.listens.get(&port) {
            Some(Listener::Check(key)) => *key,
            Some(Listener::Echo(key)) => {
                self.echo_packet(*key, port, from, data);
                return;
            }
            None => return,
        };
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let expected = s
            .file
            .data
            .get(..s.file.bytes_per_packet)
            .unwrap_or_default();
        match crate::rtpcheck::came_back(s.srtp.as_deref_mut(), data, &mut self.scratch, expected) {
            // No more right than were sent (a duplicate is not one more).
            Ok(true) => {
                if let Some(c) = s.check.as_mut().filter(|c| c.ok < c.sent) {
                    c.ok += 1;
                }
            }
            Ok(false) => {}
            Err(_) => self.stats.srtp_refused += 1,
        }
    }

    /// An echo sends back a datagram that reached its port.
    fn echo_packet(&mut self, key: u64, port: u16, from: SocketAddr, data: &[u8]) {
        if let Some(e) = self.echoes.get_mut(&key) {
            let start = self.media_buf.len();
            match crate::rtpcheck::echo(
                e.srtp.as_deref_mut(),
                data,
                &mut self.scratch,
                &mut self.media_buf,
            ) {
                Ok(()) => {
                    let len = self.media_buf.len() - start;
                    self.media_out.push(MediaOut {
                        from_port: port,
                        dst: from,
                        start,
                        len,
                    });
                    self.stats.rtp_echoed_packets += 1;
                    self.stats.rtp_echoed_bytes += len as u64;
                }
                Err(_) => {
                    self.media_buf.truncate(start);
                    self.stats.srtp_refused += 1;
                }
            }
        }
    }

    /// Sends a `<DefaultMessage>`, rendered for `call` with `last` (else
    /// its last message received) as the last message.
    fn send_default(&mut self, t: &Template, call: &Call, now: u64, last: Option<&[u8]>) {
        let last_bytes = last.unwrap_or(&call.last_msg);
        let parsed = Message::parse(last_bytes).ok();
        let mut buf = Vec::with_capacity(512);
        if self
            .render(
                t,
                &mut buf,
                call,
                (call.step, now),
                (parsed.as_ref(), last_bytes),
            )
            .is_none()
        {
            self.emit(call.dst(), &buf);
        }
    }

    /// Where a call's stream of `kind` goes (the peer's last SDP) and the
    /// port it leaves from (our SDP's, else SIPp's defaults: `-mp` for
    /// audio, +2 video, +4 image); `None`, with a warning, when the peer
    /// named none.
    fn media_ends(
        &mut self,
        call: &Call,
        kind: MediaKind,
        what: &str,
    ) -> Option<(SocketAddr, u16)> {
        let k = kind as usize;
        let Some(to) = call.media_to.get(k).copied().flatten() else {
            self.warn(format!(
                "{what}: no SDP received with m={} for call {}",
                kind.name(),
                String::from_utf8_lossy(&call.id)
            ));
            return None;
        };
        let from = call.media_from.get(k).copied().flatten();
        let from =
            from.unwrap_or_else(|| self.cfg.media_port.wrapping_add(2 * u16::from(kind as u8)));
        Some((to, from))
    }

    /// Sends the capture packets due by `now`.
    fn play_due(&mut self, now: u64) {
        while let Some((serial, generation)) = pop_due(&mut self.play_due, now) {
            let Some(p) = self.playbacks.get_mut(&serial) else {
                continue;
            };
            if p.generation != generation {
                continue;
            }
            loop {
                let Some(pkt) = p.capture.packets.get(p.next) else {
                    self.playbacks.remove(&serial);
                    break;
                };
                let due = p.start + pkt.at_us;
                if due > now {
                    self.play_due.push(Reverse((due, serial, generation)));
                    break;
                }
                let start = self.media_buf.len();
                self.media_buf.extend_from_slice(&pkt.payload);
                self.media_out.push(MediaOut {
                    from_port: p.from_port.wrapping_add(pkt.port_offset),
                    dst: SocketAddr::new(p.to.ip(), p.to.port().wrapping_add(pkt.port_offset)),
                    start,
                    len: pkt.payload.len(),
                });
                self.stats.rtp_packets_sent += 1;
                self.stats.rtp_bytes_sent += pkt.payload.len() as u64;
                p.next += 1;
            }
        }
    }

    /// Keeps a warning or error text for `-trace_err` (built only then).
    fn error(&mut self, text: impl FnOnce() -> String) {
        if self.cfg.trace_err {
            self.errors.push(text());
        }
    }

    /// Sends the `rtp_stream` packets due by `now`: RTP version 2, the
    /// file's payload type, sequence and timestamp rising from random
    /// starts; paused, the timestamp keeps time and nothing is sent.
    fn stream_due(&mut self, now: u64) {
        while let Some((key, generation)) = pop_due(&mut self.stream_due, now) {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            let mut finished = false;
            while s.next_at <= now && !finished {
                let f = &s.file;
                if !s.paused {
                    let start = self.media_buf.len();
                    self.media_buf.push(0x80);
                    self.media_buf.push(f.payload_type & 0x7f);
                    self.media_buf.extend_from_slice(&s.seq.to_be_bytes());
                    self.media_buf.extend_from_slice(&s.timestamp.to_be_bytes());
                    self.media_buf.extend_from_slice(&s.ssrc.to_be_bytes());
                    // A packet's bytes, wrapping to the file's start (as
                    // SIPp, which counts a loop there and fills the last
                    // packet up from the start too).
                    let mut left = f.bytes_per_packet;
                    while left > 0 {
                        let take = left.min(f.data.len() - s.pos);
                        self.media_buf
                            .extend_from_slice(&f.data[s.pos..s.pos + take]);
                        s.pos += take;
                        left -= take;
                        if s.pos >= f.data.len() {
                            s.pos = 0;
                            s.loops_done += 1;
                            if f.loops >= 0 && s.loops_done >= f.loops {
                                finished = true;
                            }
                        }
                    }
                    let payload = self.media_buf.len() - start - 12;
                    // SRTP: the packet made again, protected.
                    if let Some(p) = s.srtp.as_mut() {
                        self.scratch.clear();
                        self.scratch.extend_from_slice(&self.media_buf[start..]);
                        self.media_buf.truncate(start);
                        if p.tx.protect(&self.scratch, &mut self.media_buf).is_err() {
                            self.media_buf.truncate(start);
                        }
                    }
                    let len = self.media_buf.len() - start;
                    if len > 0 {
                        self.media_out.push(MediaOut {
                            from_port: s.from_port,
                            dst: s.to,
                            start,
                            len,
                        });
                        self.stats.rtp_packets_sent += 1;
                        self.stats.rtp_bytes_sent += payload as u64;
                        if let Some(c) = s.check.as_mut() {
                            c.sent += 1;
                        }
                    }
                    s.seq = s.seq.wrapping_add(1);
                }
                s.timestamp = s.timestamp.wrapping_add(f.ticks_per_packet);
                s.next_at += f.ms_per_packet * 1000;
            }
            if finished {
                if let Some(s) = self.streams.remove(&key) {
                    self.stream_over(key, s);
                }
            } else {
                self.stream_due.push(Reverse((s.next_at, key, generation)));
            }
        }
    }

    /// Counts the calls waiting in each `<pause>` into the step figures'
    /// `sessions` (for the counts file).
    pub fn count_sessions(&mut self) {
        for s in &mut self.stats.steps {
            s.sessions = 0;
        }
        for call in self.slab.iter().flatten() {
            if matches!(call.wait, Wait::Pause { .. })
                && let Some(s) = self.stats.steps.get_mut(call.step)
            {
                s.sessions += 1;
            }
        }
    }

    /// Media datagrams queued since the last [`Endpoint::clear_media`].
    pub fn media_outgoing(&self) -> (&[MediaOut], &[u8]) {
        (&self.media_out, &self.media_buf)
    }

    pub fn clear_media(&mut self) {
        self.media_out.clear();
        self.media_buf.clear();
    }

    /// Whether this sending or reception of step `idx` is dropped by its
    /// `lost` percentage.
    fn lost(&mut self, idx: usize) -> bool {
        let pct = self.scn.steps.get(idx).and_then(|s| s.lost);
        pct.is_some_and(|pct| unit(&mut self.rng) * 100.0 < pct)
    }

    /// Keeps what `call`'s actions wrote into global variables.
    fn save_globals(&mut self, call: &Call) {
        for (id, value) in &mut self.globals {
            if let Some(v) = call.vars.get(usize::from(id.0)) {
                value.clone_from(v);
            }
        }
    }

    /// Calls in progress.
    pub fn open_calls(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the run's call budget (`-m`) has room left.
    pub fn may_create(&self) -> bool {
        self.accepting && self.cfg.quota.as_ref().is_none_or(|q| !q.exhausted())
    }

    /// Stops taking new calls (open calls go on).
    pub fn close(&mut self) {
        self.accepting = false;
    }

    fn take_quota(&self) -> bool {
        self.accepting && self.cfg.quota.as_ref().is_none_or(|q| q.try_take())
    }

    /// Datagrams queued since the last [`Endpoint::clear_out`].
    pub fn outgoing(&self) -> (&[Outgoing], &[u8]) {
        (&self.out, &self.out_buf)
    }

    pub fn clear_out(&mut self) {
        self.out.clear();
        self.out_buf.clear();
    }

    /// Earliest time [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let call = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let answer = self.answers_fifo.front().map(|(t, _)| *t);
        let media = self.play_due.peek().map(|Reverse((t, _, _))| *t);
        let stream = self.stream_due.peek().map(|Reverse((t, _, _))| *t);
        let due = [call, answer, media, stream].into_iter().flatten().min()?;
        // A deadline past what an Instant holds is none.
        self.cfg.epoch.checked_add(Duration::from_micros(due))
    }

    /// `now` on the endpoint's clock: microseconds since the run's epoch.
    fn clock(&self, now: Instant) -> u64 {
        micros_since(self.cfg.epoch, now)
    }

    /// Ended calls still answering retransmissions (see `timewait_ms`).
    pub fn lingering(&self) -> bool {
        !self.answers.is_empty()
    }

    fn random(&mut self) -> u64 {
        next_random(&mut self.rng)
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        fast_hash(self.seed, bytes) | 1
    }

    /// `-trace_calldebug`: a line of what `call` did, timed as SIPp's.
    fn note(&self, call: &mut Call, now: u64, text: std::fmt::Arguments<'_>) {
        if !self.cfg.calldebug {
            return;
        }
        let wall = self.cfg.wall_epoch_us + now;
        let time = if self.cfg.rfc3339 {
            crate::statfile::rfc3339_time(wall)
        } else {
            crate::statfile::wall_time(wall)
        };
        call.debug.extend_from_slice(time.as_bytes());
        call.debug.push(b' ');
        let _ = std::io::Write::write_fmt(&mut call.debug, text);
    }

    /// `-trace_calldebug`: a failed or aborted call's record, out.
    fn debug_out(&mut self, call: &mut Call, now: u64) {
        if !self.cfg.calldebug {
            return;
        }
        let id = String::from_utf8_lossy(&call.id).into_owned();
        let step = call.step;
        self.note(
            call,
            now,
            format_args!("Aborting call {id} (index {step}).\n"),
        );
        let mut out = format!(
            "-------------------------------------------------------------------------------\nCall debugging information for call {id}:\n"
        )
        .into_bytes();
        out.append(&mut call.debug);
        self.call_debug.push(out);
    }

    /// What tells a retransmission of a received message (`-rtcheck`):
    /// its bytes, or (loose, after RFC 2543 §11.5) its To, From, Call-ID
    /// and CSeq values, with a response's status line and body.
    fn recv_hash(&self, msg: &Message<'_>, bytes: &[u8]) -> u64 {
        if !self.cfg.rtcheck_loose {
            return self.hash(bytes);
        }
        // Each part hashed into the last (no copy of them together).
        let response = matches!(msg.start_line(), StartLine::Response(_));
        let status = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
        [
            HeaderName::To,
            HeaderName::From,
            HeaderName::CallId,
            HeaderName::CSeq,
        ]
        .into_iter()
        .map(|name| msg.value(name).unwrap_or_default())
        .chain(response.then_some(status))
        .chain(response.then(|| msg.body()))
        .fold(self.seed, fast_hash)
            | 1
    }

    fn emit(&mut self, dst: SocketAddr, bytes: &[u8]) {
        let dst = self.cfg.send_to.unwrap_or(dst);
        let start = self.out_buf.len();
        self.out_buf.extend_from_slice(bytes);
        self.out.push(Outgoing {
            dst,
            start,
            len: bytes.len(),
            call: self.current,
        });
        self.stats.msgs_sent += 1;
    }

    /// Creates a call of `user` (0: none; reusing the buffers of an ended
    /// one). `id` empty: mint a Call-ID. `None` if the Call-ID's hash is
    /// taken.
    fn new_call(&mut self, now: u64, peer: SocketAddr, id: &[u8], user: u32) -> Option<u32> {
        let number = self.next_number;
        self.next_number += self.number_stride;
        self.serial += 1;
        let s = &self.scn;
        let shape = (s.steps.len(), s.vars.len(), s.txns.len());
        // A spare call of the other scenario (out of call) does not fit.
        let mut call = match self.spare.pop() {
            Some(c) if c.fits(shape) => c,
            _ => Box::new(Call::empty(shape.0, shape.1, shape.2)),
        };
        call.reset();
        call.serial = self.serial;
        call.number = number;
        call.peer = peer;
        call.started = now;
        call.cseq = self.cfg.base_cseq.saturating_sub(1);
        call.user = user;
        // Each -inf file gives the call a line.
        if let Some(inj) = self.inject.borrow().as_ref() {
            for f in &inj.files {
                let r = next_random(&mut self.rng);
                call.inject_rows.push(f.line_for(number, user, r));
            }
        }
        if let (true, Some(format)) = (id.is_empty(), &self.cfg.call_id_format) {
            for part in format {
                match part {
                    CidPart::Text(t) => call.id.extend_from_slice(t),
                    CidPart::Number => call
                        .id
                        .extend_from_slice(itoa::Buffer::new().format(number).as_bytes()),
                    CidPart::Pid => call.id.extend_from_slice(&self.pid),
                    CidPart::LocalIp => call.id.extend_from_slice(&self.local_ip),
                }
            }
        } else if id.is_empty() {
            call.id
                .extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
            call.id.push(b'-');
            call.id.extend_from_slice(&self.pid);
            call.id.push(b'@');
            call.id.extend_from_slice(&self.local_ip);
        } else {
            call.id.extend_from_slice(id);
        }
        let key = self.hash(&call.id);
        if self.by_id.contains_key(&key) {
            self.spare.push(call);
            return None;
        }
        if self.cfg.calldebug {
            let id = String::from_utf8_lossy(&call.id).into_owned();
            self.note(&mut call, now, format_args!("Starting call {id}\n"));
        }
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(e) = self.slab.get_mut(s as usize) {
                    *e = Some(call);
                }
                s
            }
            None => {
                self.slab.push(Some(call));
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.by_id.insert(key, slot);
        self.stats.created += 1;
        Some(slot)
    }

    /// A message from the 3PCC twin (its delimiter taken off): given to
    /// the call its `Call-ID:` line names, waiting at a `<recvCmd>`; a
    /// scenario that starts with `<recvCmd>` starts a call with that
    /// Call-ID (SIPp's controller B side). Anything else fails that call
    /// or is counted as out of call.
    pub fn handle_command(&mut self, now: Instant, bytes: &[u8]) {
        let now = self.clock(now);
        self.stats.msgs_received += 1;
        let Some(id) = command_call_id(bytes) else {
            self.stats.out_of_call_msgs += 1;
            return;
        };
        let h = self.hash(id);
        let slot = match self.by_id.get(&h).copied() {
            Some(slot)
                if self
                    .slab
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.id == id) =>
            {
                slot
            }
            // An abort for a call not here: nothing to do.
            _ if internal_command(bytes).is_some() => {
                self.stats.out_of_call_msgs += 1;
                return;
            }
            _ => {
                let remote = self.remote;
                let (Some(peer), true) = (remote, self.scn.starts_with_recv_cmd()) else {
                    self.stats.out_of_call_msgs += 1;
                    return;
                };
                if !self.take_quota() {
                    self.stats.out_of_call_msgs += 1;
                    return;
                }
                let Some(slot) = self.new_call(now, peer, id, 0) else {
                    return;
                };
                // To its first step, the <recvCmd> this message answers.
                self.run(slot, now, |ep, call, now| ep.advance(call, now));
                slot
            }
        };
        let bytes = bytes.to_vec();
        self.run(slot, now, |ep, call, now| ep.on_command(call, now, &bytes));
    }

    fn on_command(&mut self, call: &mut Call, now: u64, bytes: &[u8]) -> Flow {
        // The twin's call aborted: this one does too (SIPp's abortCall,
        // CANCEL or BYE as the call stands).
        if internal_command(bytes) == Some(b"abort_call") {
            return Flow::Failed(FailReason::TwinAborted);
        }
        // The <recvCmd> waited at, or one after optional <recv>s.
        let mut j = call.step;
        let mut waiting = matches!(call.wait, Wait::RecvCmd { .. });
        if matches!(call.wait, Wait::Recv { .. }) {
            while let Some(StepKind::Recv(r)) = self.scn.steps.get(j).map(|s| &s.kind) {
                if !r.optional {
                    break;
                }
                j += 1;
            }
            waiting = matches!(
                self.scn.steps.get(j).map(|s| &s.kind),
                Some(StepKind::RecvCmd { .. })
            );
        }
        if !waiting {
            let j = call.step;
            if let Some(s) = self.stats.step(j) {
                s.unexpected += 1;
            }
            let id = String::from_utf8_lossy(&call.id).into_owned();
            self.error(|| {
                format!(
                    "Unexpected control message received (I was expecting a different type of message) for Call-Id '{id}': {}",
                    String::from_utf8_lossy(bytes)
                )
            });
            return Flow::Failed(FailReason::UnexpectedMessage);
        }
        if let Some(StepKind::RecvCmd { src: Some(src) }) = self.scn.steps.get(j).map(|s| &s.kind)
            && command_sender(bytes) != Some(src.as_bytes())
        {
            if let Some(s) = self.stats.step(j) {
                s.unexpected += 1;
            }
            let id = String::from_utf8_lossy(&call.id).into_owned();
            let src = src.clone();
            self.error(|| {
                format!(
                    "Unexpected sender for the received peer message (expected From: {src}) for Call-Id '{id}': {}",
                    String::from_utf8_lossy(bytes)
                )
            });
            return Flow::Failed(FailReason::UnexpectedMessage);
        }
        if let Some(s) = self.stats.step(j) {
            s.received += 1;
        }
        // As SIPp: the command is not the call's last message (later
        // steps' [last_*] still name the last SIP message); its actions
        // search its own text, trailing line ends off.
        let mut text = bytes;
        while let Some(t) = text
            .strip_suffix(b"\n")
            .or_else(|| text.strip_suffix(b"\r"))
        {
            text = t;
        }
        let mut parsed = Vec::with_capacity(text.len() + 32);
        parsed.extend_from_slice(b"TWIN sip:twin SIP/2.0\r\n");
        parsed.extend_from_slice(text);
        self.rtd(call, j, now);
        let msg = Message::parse(&parsed).ok();
        if let Err(fatal) = self.actions_on(call, j, msg.as_ref(), Some(text), now) {
            return Flow::Failed(fatal);
        }
        call.step = self.next_of(call, j);
        call.wait = Wait::Running;
        self.advance(call, now)
    }

    /// The 3PCC twin is gone: no new calls, and the calls waiting for its
    /// message fail (it can no longer come).
    pub fn twin_closed(&mut self, now: Instant) {
        let now = self.clock(now);
        self.close();
        for slot in 0..self.slab.len() {
            let waiting = self
                .slab
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| matches!(c.wait, Wait::RecvCmd { .. }));
            if waiting {
                let slot = u32::try_from(slot).unwrap_or(u32::MAX);
                self.run(slot, now, |_, _, _| Flow::Failed(FailReason::Aborted));
            }
        }
    }

    /// Starts one call of a caller scenario. Returns false when this
    /// endpoint has no destination or reached its call limit.
    pub fn start_call(&mut self, now: Instant) -> bool {
        !matches!(self.start_call_on(now, 0), Start::Nothing)
    }

    /// Starts one call as [`Endpoint::start_call`] does, its messages
    /// naming `port` as `[local_port]` (0: the thread's own; `-t un` gives
    /// each call a socket of its own): what came of it.
    pub fn start_call_on(&mut self, now: Instant, port: u16) -> Start {
        let now = self.clock(now);
        let Some(remote) = self.remote else {
            return Start::Nothing;
        };
        if !self.scn.starts_with_send() {
            return Start::Nothing;
        }
        // With -users, a call needs a free user (SIPp: the last one).
        let user = if self.cfg.users.is_some() {
            match self.free_users.pop_back() {
                Some(u) => u,
                None => return Start::Nothing,
            }
        } else {
            0
        };
        if !self.take_quota() {
            if user > 0 {
                self.free_users.push_back(user);
            }
            return Start::Nothing;
        }
        // With -tdmmap, a call needs a free circuit (SIPp looks from a
        // random one on); without, it is created and fails at once.
        let tdm = if self.tdm_busy.is_empty() {
            0
        } else {
            let n = self.tdm_busy.len();
            let from = (next_random(&mut self.rng) as usize) % n;
            match (0..n).map(|i| (from + i) % n).find(|&i| !self.tdm_busy[i]) {
                Some(i) => {
                    self.tdm_busy[i] = true;
                    u32::try_from(i + 1).unwrap_or(u32::MAX)
                }
                None => {
                    if user > 0 {
                        self.free_users.push_back(user);
                    }
                    self.stats.created += 1;
                    self.stats.fail(FailReason::OutboundCongestion);
                    self.stats.warnings += 1;
                    self.error(|| {
                        "Can't create new outgoing call: all tdm_map circuits busy".into()
                    });
                    return Start::Failed;
                }
            }
        };
        let Some(slot) = self.new_call(now, remote, b"", user) else {
            if user > 0 {
                self.free_users.push_back(user);
            }
            self.free_tdm(tdm);
            return Start::Nothing;
        };
        let serial = self.serial;
        if let Some(call) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) {
            call.tdm = tdm;
            call.port = port;
        }
        if let Some(field) = self.cfg.ip_field {
            let mut source = std::mem::take(&mut self.started_source);
            source.clear();
            if let Some(call) = self.slab.get(slot as usize).and_then(Option::as_ref) {
                own_field(&self.inject, call, (0, field), &mut source);
            }
            self.started_source = source;
        }
        if user > 0
            && let Some(call) = self.slab.get_mut(slot as usize).and_then(Option::as_mut)
        {
            for (id, v) in self.user_vars.get(&user).into_iter().flatten() {
                if let Some(slot) = call.vars.get_mut(usize::from(id.0)) {
                    slot.clone_from(v);
                }
            }
        }
        self.run(slot, now, |ep, call, now| ep.advance(call, now));
        Start::Call(serial)
    }

    /// `-t ui`: the address (field `-ip_field` of its `-inf` line) the call
    /// started last sends from.
    pub fn started_source(&self) -> &[u8] {
        &self.started_source
    }

    /// A TCP connection is gone (`reason`: it could not open, or closed):
    /// the open calls it carried fail, as in SIPp — those whose messages
    /// go to `peer`, or call `serial` (`-t tn`).
    pub fn connection_lost(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        serial: Option<u64>,
        reason: FailReason,
    ) {
        let now = self.clock(now);
        for slot in 0..self.slab.len() {
            let hit = self
                .slab
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| match serial {
                    Some(s) => c.serial == s,
                    None => c.dst() == peer,
                });
            if hit {
                let slot = u32::try_from(slot).unwrap_or(u32::MAX);
                self.run(slot, now, |_, _, _| Flow::Failed(reason));
            }
        }
    }

    /// Gives circuit `tdm` (plus one; 0: none) back.
    fn free_tdm(&mut self, tdm: u32) {
        if let Some(b) = (tdm as usize)
            .checked_sub(1)
            .and_then(|i| self.tdm_busy.get_mut(i))
        {
            *b = false;
        }
    }

    /// With `-users`: this thread's users are `first` to
    /// `first + count - 1` (SIPp numbers them from 1).
    pub fn set_users(&mut self, first: u32, count: u32) {
        self.free_users = (first..first.saturating_add(count)).collect();
    }

    /// More users (`-users` raised during the run): ids `first..first +
    /// count`, taken after the ones already free.
    pub fn add_users(&mut self, first: u32, count: u32) {
        for id in first..first.saturating_add(count) {
            self.free_users.push_front(id);
        }
    }

    /// Takes a call out of its slot, runs `f`, and puts it back or ends it.
    fn run<F>(&mut self, slot: u32, now: u64, f: F)
    where
        F: FnOnce(&mut Self, &mut Call, u64) -> Flow,
    {
        let Some(mut call) = self.slab.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        // An out-of-call call runs its own scenario, with its own figures.
        let ooc = call.ooc;
        if ooc {
            self.trade_scenarios();
        }
        self.current = call.serial;
        // <Global> variables: this thread's values in, whatever changed out.
        for (id, value) in &self.globals {
            if let Some(v) = call.vars.get_mut(usize::from(id.0)) {
                v.clone_from(value);
            }
        }
        let first_out = self.out.len();
        let mut flow = f(self, &mut call, now);
        // A message `_unexp.main` queued goes to the first <recv> the
        // call waits at.
        while matches!(flow, Flow::Waiting) && matches!(call.wait, Wait::Recv { .. }) {
            let Some(bytes) = call.queued.take() else {
                break;
            };
            if let Ok(m) = Message::parse(&bytes) {
                call.unexpected_jumped = true;
                flow = self.on_message(&mut call, now, &m, &bytes);
                call.unexpected_jumped = false;
            }
        }
        if self.cfg.calldebug {
            let id = String::from_utf8_lossy(&call.id).into_owned();
            for k in first_out..self.out.len() {
                let Some(o) = self.out.get(k).copied() else {
                    break;
                };
                let text = self
                    .out_buf
                    .get(o.start..o.start + o.len)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                self.note(
                    &mut call,
                    now,
                    format_args!(
                        "Sending {} message for call {id}:\n{text}\n\n",
                        self.cfg.transport
                    ),
                );
            }
        }
        self.save_globals(&call);
        // `current` stays the call's through the clean-up below, so that
        // its CANCEL/BYE go where its messages went (its own connection
        // with -t tn).
        match flow {
            Flow::Waiting => {
                // One timer entry per call at a time: a later deadline is
                // put on the heap when the earlier entry comes due.
                if let Some(d) = call.deadline()
                    && call.scheduled.is_none_or(|s| d < s)
                {
                    call.scheduled = Some(d);
                    self.timers.push(Reverse((d, slot, call.serial)));
                }
                if let Some(e) = self.slab.get_mut(slot as usize) {
                    *e = Some(call);
                }
            }
            Flow::Finished => {
                // Ended by answering a request: answer its retransmissions
                // for a while (the answer may be lost).
                if let Some(k) = call.last_recv
                    && call.sent_after == Some(k)
                    && call.last_sent.starts_with(b"SIP/2.0 ")
                    && self.cfg.timewait_ms > 0
                    && let Some(&h) = call.recv_hashes.get(k)
                {
                    let mut answer = self.spare_answers.pop().unwrap_or_default();
                    std::mem::swap(&mut answer, &mut call.last_sent);
                    if self.answers.insert(h, (call.peer, answer)).is_none() {
                        self.answers_fifo
                            .push_back((now + self.cfg.timewait_ms * 1000, h));
                    }
                }
                match call.doomed {
                    Some(reason) => self.stats.fail(reason),
                    None => {
                        self.stats.succeeded += 1;
                        Stats::record(
                            &mut self.stats.call_length,
                            now.saturating_sub(call.started),
                        );
                    }
                }
                self.end(slot, call, now);
            }
            // However a call in its <timewait> ends, it succeeded (SIPp),
            // but for an <error> or the loss of its connection.
            Flow::Failed(reason)
                if call.timewait
                    && call.doomed.is_none()
                    && !matches!(
                        reason,
                        FailReason::ErrorAction | FailReason::TcpClosed | FailReason::TcpConnect
                    ) =>
            {
                self.stats.succeeded += 1;
                self.end(slot, call, now);
            }
            Flow::Failed(reason) => {
                self.stats.fail(reason);
                self.debug_out(&mut call, now);
                // Not after an <error> (SIPp stops there), nor when the peer
                // hung up (its unexpected BYE or CANCEL was answered).
                if self.cfg.behaviors.bye
                    && !matches!(
                        reason,
                        FailReason::ErrorAction
                            | FailReason::Rejected
                            | FailReason::TcpClosed
                            | FailReason::TcpConnect
                    )
                    && !call.peer_hung_up
                {
                    self.abort(&call, now);
                }
                self.end(slot, call, now);
            }
        }
        self.current = 0;
        if ooc {
            self.trade_scenarios();
        }
    }

    /// A request of no call, with an out-of-call scenario: a call of that
    /// scenario takes it (SIPp's warning; counted as auto-answered).
    fn out_of_call(
        &mut self,
        now: u64,
        src: SocketAddr,
        cid: &[u8],
        msg: &Message<'_>,
        bytes: &[u8],
    ) {
        let method = msg
            .request_line()
            .map(|r| String::from_utf8_lossy(r.method_raw).into_owned())
            .unwrap_or_default();
        self.stats.warnings += 1;
        self.stats.auto_answered += 1;
        self.errors.push(format!(
            "Received out-of-call {method} message, using the out-of-call scenario"
        ));
        self.trade_scenarios();
        let slot = self.new_call(now, src, cid, 0);
        self.trade_scenarios();
        let Some(slot) = slot else {
            self.stats.out_of_call_msgs += 1;
            return;
        };
        if let Some(Some(c)) = self.slab.get_mut(slot as usize) {
            c.ooc = true;
        }
        self.run(slot, now, |ep, call, now| match ep.advance(call, now) {
            Flow::Waiting => ep.on_message(call, now, msg, bytes),
            done => done,
        });
    }

    /// The main and the out-of-call scenario trade places (see [`Other`]).
    fn trade_scenarios(&mut self) {
        if let Some(o) = self.ooc.as_deref_mut() {
            std::mem::swap(&mut self.scn, &mut o.scn);
            std::mem::swap(&mut self.globals, &mut o.globals);
            std::mem::swap(&mut self.plays_media, &mut o.plays_media);
            std::mem::swap(&mut self.needs_last, &mut o.needs_last);
            std::mem::swap(&mut self.stats, &mut o.stats);
        }
    }

    /// `-oocsf`/`-oocsn`: a request that belongs to no call starts a call
    /// of this scenario (a caller's only, as in SIPp).
    pub fn set_out_of_call(&mut self, scn: Arc<Scenario>) {
        let (globals, plays_media, needs_last) = scenario_parts(&self.cfg, &scn);
        let stats = Stats::new(scn.steps.len());
        self.ooc = Some(Box::new(Other {
            scn,
            globals,
            plays_media,
            needs_last,
            stats,
        }));
    }

    /// The out-of-call scenario's figures (its calls, their messages).
    pub fn out_of_call_stats(&self) -> Option<&Stats> {
        self.ooc.as_deref().map(|o| &o.stats)
    }

    fn end(&mut self, slot: u32, call: Box<Call>, now: u64) {
        self.free_tdm(call.tdm);
        if self.cfg.report_ended {
            self.ended.push(call.serial);
        }
        // Its user is free again (SIPp: at the front) and keeps its
        // <User> variables.
        if call.user > 0 {
            let kept = self.scn.user_vars.iter().map(|&id| {
                let v = call
                    .vars
                    .get(usize::from(id.0))
                    .cloned()
                    .unwrap_or_default();
                (id, v)
            });
            self.user_vars.insert(call.user, kept.collect());
            self.free_users.push_front(call.user);
        }
        // A call's playback stops with it (SIPp cancels its media thread).
        self.playbacks.remove(&call.serial);
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let key = media_key(call.serial, kind);
            if let Some(s) = self.streams.remove(&key) {
                self.stream_over(key, s);
            }
            self.echo_op(&call, EchoOp::Stop, kind);
        }
        let h = self.hash(&call.id);
        self.by_id.remove(&h);
        self.free.push(slot);
        if self.dead.insert(h) {
            self.dead_fifo
                .push_back((now + self.cfg.deadcall_ms * 1000, h));
        }
        if self.spare.len() < SPARE_CALLS {
            self.spare.push(call);
        }
    }

    /// Ends every open call as failed (`Aborted`): the run is over.
    pub fn abort_all(&mut self, now: Instant) {
        let now = self.clock(now);
        for slot in 0..self.slab.len() {
            if let Some(mut call) = self.slab.get_mut(slot).and_then(Option::take) {
                let ooc = call.ooc;
                if ooc {
                    self.trade_scenarios();
                }
                // A call in its <timewait> has done its work (SIPp).
                if call.timewait && call.doomed.is_none() {
                    self.stats.succeeded += 1;
                } else {
                    self.stats.fail(FailReason::Aborted);
                    self.debug_out(&mut call, now);
                }
                self.end(u32::try_from(slot).unwrap_or(u32::MAX), call, now);
                if ooc {
                    self.trade_scenarios();
                }
            }
        }
    }

    /// Handles one received datagram from `src`.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        let now = self.clock(now);
        self.stats.msgs_received += 1;
        let Ok(msg) = Message::parse(bytes) else {
            self.stats.parse_errors += 1;
            return;
        };
        let Some(mut cid) = msg.value(HeaderName::CallId).map(<[u8]>::trim_ascii) else {
            self.stats.parse_errors += 1;
            return;
        };
        if !self.cfg.callid_slash_ign
            && let Some(at) = cid.windows(3).position(|w| w == b"///")
        {
            cid = &cid[at + 3..];
        }
        let key = self.hash(cid);
        if let Some(&slot) = self.by_id.get(&key)
            && self
                .slab
                .get(slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == cid)
        {
            self.run(slot, now, |ep, call, now| {
                ep.on_message(call, now, &msg, bytes)
            });
            return;
        }
        if self.dead.contains(&key) {
            if let Some((peer, answer)) = self.answers.get(&self.recv_hash(&msg, bytes)) {
                let (peer, answer) = (*peer, answer.clone());
                self.emit(peer, &answer);
                self.stats.retrans_received += 1;
                self.stats.retrans_sent += 1;
                return;
            }
            self.stats.dead_call_msgs += 1;
            return;
        }
        let starts_here = match (msg.start_line(), self.scn.first_request()) {
            (StartLine::Request(r), Some(e)) => e.matches_method(r.method_raw),
            _ => false,
        };
        if !starts_here && self.ooc.is_some() && msg.request_line().is_some() {
            self.out_of_call(now, src, cid, &msg, bytes);
            return;
        }
        if !starts_here || !self.take_quota() {
            self.stats.out_of_call_msgs += 1;
            // -aa: an INFO, NOTIFY, OPTIONS or UPDATE of no call is
            // answered too.
            if self.cfg.auto_answer
                && !starts_here
                && msg.request_line().is_some_and(|r| {
                    matches!(r.method_raw, b"INFO" | b"NOTIFY" | b"OPTIONS" | b"UPDATE")
                })
            {
                let mut out = Vec::with_capacity(512);
                ok_response(&msg, &mut out);
                self.emit(src, &out);
                self.stats.auto_answered += 1;
            }
            return;
        }
        let Some(slot) = self.new_call(now, src, cid, 0) else {
            self.stats.out_of_call_msgs += 1;
            return;
        };
        if self.cfg.ip_field.is_some() {
            self.started.push(self.serial);
        }
        self.run(slot, now, |ep, call, now| match ep.advance(call, now) {
            Flow::Waiting => ep.on_message(call, now, &msg, bytes),
            done => done,
        });
    }

    /// Runs due timers: retransmissions, pauses, receive timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some(&Reverse((at, slot, serial))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let live = self
                .slab
                .get(slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.serial == serial);
            if live {
                self.run(slot, now, |ep, call, now| {
                    call.scheduled = None;
                    ep.on_call_timer(call, now)
                });
            }
        }
        // Media after the calls' timers: what their steps do now (start,
        // pause, resume, end) holds for the packets due now.
        self.play_due(now);
        self.stream_due(now);
        while let Some(&(expire, h)) = self.dead_fifo.front() {
            if expire > now {
                break;
            }
            self.dead_fifo.pop_front();
            self.dead.remove(&h);
        }
        while let Some(&(expire, h)) = self.answers_fifo.front() {
            if expire > now {
                break;
            }
            self.answers_fifo.pop_front();
            if let Some((_, mut buf)) = self.answers.remove(&h)
                && self.spare_answers.len() < SPARE_CALLS
            {
                buf.clear();
                self.spare_answers.push(buf);
            }
        }
    }

    fn on_call_timer(&mut self, call: &mut Call, now: u64) -> Flow {
        if let Some(mut r) = call.retrans
            && r.next_at <= now
        {
            if r.count >= r.max {
                self.error(|| {
                    format!(
                        "Aborting call on UDP retransmission timeout for Call-ID '{}'",
                        String::from_utf8_lossy(&call.id)
                    )
                });
                return Flow::Failed(FailReason::MaxRetrans);
            }
            let bytes = std::mem::take(&mut call.last_sent);
            // `lost` holds for every sending, retransmissions too.
            if self.lost(r.step) {
                if let Some(s) = self.stats.step(r.step) {
                    s.lost += 1;
                }
            } else {
                self.emit(call.dst(), &bytes);
            }
            call.last_sent = bytes;
            self.stats.retrans_sent += 1;
            if let Some(s) = self.stats.step(r.step) {
                s.retransmissions += 1;
            }
            r.count += 1;
            r.interval = if r.invite {
                r.interval * 2
            } else {
                (r.interval * 2).min(self.cfg.t2_ms * 1000)
            };
            r.next_at = now + r.interval;
            call.retrans = Some(r);
        }
        match call.wait {
            Wait::Pause { until } if until <= now => {
                call.wait = Wait::Running;
                call.step = match call.pause_jump.take() {
                    Some(to) => to,
                    None => self.next_of(call, call.step),
                };
                self.advance(call, now)
            }
            Wait::RecvCmd { deadline: Some(d) } if d <= now => {
                if let Some(s) = self.stats.step(call.step) {
                    s.timeouts += 1;
                }
                Flow::Failed(FailReason::RecvTimeout)
            }
            Wait::Recv { deadline: Some(d) } if d <= now => {
                if let Some(s) = self.stats.step(call.step) {
                    s.timeouts += 1;
                }
                let (target, expect) = match self.scn.steps.get(call.step).map(|s| &s.kind) {
                    Some(StepKind::Recv(r)) => (r.on_timeout, r.expect.to_string()),
                    _ => (None, String::new()),
                };
                let (id, idx) = (String::from_utf8_lossy(&call.id).into_owned(), call.step);
                self.error(|| match target {
                    Some(t) => format!(
                        "Call-Id: {id}, receive timeout on message {expect}:{idx}, jumping to label {t}"
                    ),
                    None => format!(
                        "Call-Id: {id}, receive timeout on message {expect}:{idx} without label to jump to (ontimeout attribute): aborting call"
                    ),
                });
                match target {
                    Some(t) => {
                        call.wait = Wait::Running;
                        call.retrans = None;
                        call.step = t;
                        self.advance(call, now)
                    }
                    None => Flow::Failed(FailReason::RecvTimeout),
                }
            }
            _ => Flow::Waiting,
        }
    }

    /// The step after `idx`, following `next` (with `test` / `chance`).
    fn next_of(&mut self, call: &Call, idx: usize) -> usize {
        let scn = Arc::clone(&self.scn);
        match scn.steps.get(idx) {
            Some(step) => self.next_from(call, step, idx),
            None => idx + 1,
        }
    }

    /// Where a call goes after `step` (at `idx`): its `next` (when its
    /// `test` variable is true, at its `chance`), else the step after.
    fn next_from(&mut self, call: &Call, step: &crate::scenario::Step, idx: usize) -> usize {
        let Some(target) = step.next else {
            return idx + 1;
        };
        if let Some(v) = step.test
            && !call.vars.get(usize::from(v.0)).is_some_and(Value::truthy)
        {
            return idx + 1;
        }
        if let Some(c) = step.chance {
            let r = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
            if r >= c {
                return idx + 1;
            }
        }
        target
    }

    fn rtd(&mut self, call: &mut Call, idx: usize, now: u64) {
        let Some(step) = self.scn.steps.get(idx) else {
            return;
        };
        if let Some(r) = step.start_rtd.map(usize::from)
            && let Some(t) = call.rtd_start.get_mut(r)
        {
            *t = now;
            if let Some(d) = call.rtd_done.get_mut(r) {
                *d = false;
            }
        }
        if let Some(r) = step.rtd.map(usize::from) {
            let started = call.rtd_start.get(r).copied().unwrap_or(0);
            let done = call.rtd_done.get(r).copied().unwrap_or(true);
            if (!done || step.repeat_rtd)
                && let Some(h) = self.stats.rtd.get_mut(r)
            {
                let from = if started == 0 { call.started } else { started };
                Stats::record(h, now.saturating_sub(from));
                if self.cfg.trace_rtt {
                    let rtd = u8::try_from(r).unwrap_or(u8::MAX);
                    self.rtt_samples.push((now, now.saturating_sub(from), rtd));
                }
                if let Some(d) = call.rtd_done.get_mut(r) {
                    *d = true;
                }
            }
        }
    }

    fn on_message(&mut self, call: &mut Call, now: u64, msg: &Message<'_>, bytes: &[u8]) -> Flow {
        if self.cfg.pause_msg_ign && matches!(call.wait, Wait::Pause { .. }) {
            return Flow::Waiting;
        }
        let h = self.recv_hash(msg, bytes);
        if self.cfg.calldebug {
            let id = String::from_utf8_lossy(&call.id).into_owned();
            self.note(
                call,
                now,
                format_args!(
                    "Processing {} byte incoming message for call-ID {id} (hash {h}):\n{}\n\n",
                    bytes.len(),
                    String::from_utf8_lossy(bytes)
                ),
            );
        }
        if let Some(k) = call.recv_hashes.iter().position(|&x| x == h) {
            // A retransmission may be lost too (the step's `lost`).
            if self.lost(k) {
                if let Some(s) = self.stats.step(k) {
                    s.lost += 1;
                }
                return Flow::Waiting;
            }
            self.stats.retrans_received += 1;
            if let Some(s) = self.stats.step(k) {
                s.retransmissions += 1;
            }
            if call.sent_after == Some(k) && !call.last_sent.is_empty() {
                let bytes = std::mem::take(&mut call.last_sent);
                self.emit(call.dst(), &bytes);
                call.last_sent = bytes;
                self.stats.retrans_sent += 1;
            }
            return Flow::Waiting;
        }
        // What any message of the call tells, matched or not.
        match msg.start_line() {
            StartLine::Response(s) => {
                if let Some(n) = self.stats.responses.get_mut(usize::from(s.code)) {
                    *n += 1;
                }
                let for_invite = msg
                    .value(HeaderName::CSeq)
                    .and_then(CSeq::parse)
                    .is_some_and(|c| c.method_raw == b"INVITE");
                if for_invite && let Some(sent) = call.invite_at {
                    call.invite_status = call.invite_status.max(s.code);
                    if s.code >= 200 {
                        call.invite_to.clear();
                        if let Some(to) = msg.value(HeaderName::To) {
                            call.invite_to.extend_from_slice(to);
                        }
                    }
                    if (s.code == 180 || s.code == 183) && !call.got_18x {
                        call.got_18x = true;
                        Stats::record(&mut self.stats.invite_to_18x, now.saturating_sub(sent));
                    } else if (200..300).contains(&s.code) && !call.got_200 {
                        call.got_200 = true;
                        Stats::record(&mut self.stats.invite_to_200, now.saturating_sub(sent));
                    }
                }
            }
            StartLine::Request(_) => {}
        }
        // Where the peer wants media: from any response with a body and
        // from INVITE, ACK and PRACK, as SIPp reads it for pcap play.
        let ignore_sdp = matches!(
            self.scn.steps.get(call.step).map(|s| &s.kind),
            Some(StepKind::Recv(Recv {
                ignore_sdp: true,
                ..
            }))
        );
        if self.plays_media && !ignore_sdp {
            let reads = match msg.start_line() {
                StartLine::Response(_) => true,
                StartLine::Request(r) => matches!(r.method_raw, b"INVITE" | b"ACK" | b"PRACK"),
            };
            if reads && !msg.body().is_empty() {
                remote_media(msg.body(), self.cfg.media_ip.is_ipv6(), &mut call.media_to);
                if call.keys.is_some() || crate::rtpcheck::has_crypto(msg.body()) {
                    call.keys.get_or_insert_default().received(msg.body());
                }
            }
        }

        let scn = Arc::clone(&self.scn);
        let branch = match msg.start_line() {
            StartLine::Response(_) if !scn.txns.is_empty() => via_branch(msg),
            _ => b"",
        };
        let cseq_method = msg
            .value(HeaderName::CSeq)
            .and_then(CSeq::parse)
            .map_or(&b""[..], |c| c.method_raw);
        // As SIPp's matches_scenario: the status or method, then for a
        // response its transaction's branch, or (past the first step)
        // its CSeq method among the requests sent before in the file.
        let matches = |j: usize, r: &Recv| match msg.start_line() {
            StartLine::Request(rl) => r.expect.matches_method(rl.method_raw),
            StartLine::Response(s) => {
                r.expect.matches_status(s.code)
                    && match r.response_txn {
                        Some(t) => call
                            .txns
                            .get(usize::from(t))
                            .is_some_and(|b| !b.is_empty() && b.as_slice() == branch),
                        None => {
                            j == 0
                                || (!r.methods.is_empty()
                                    && (cseq_method.is_empty()
                                        || r.methods
                                            .windows(cseq_method.len())
                                            .any(|w| w == cseq_method)))
                        }
                    }
            }
        };
        let mut found = None;
        if matches!(call.wait, Wait::Recv { .. }) {
            let mut j = call.step;
            while let Some(StepKind::Recv(r)) = scn.steps.get(j).map(|s| &s.kind) {
                if matches(j, r) {
                    found = Some(j);
                    break;
                }
                if !r.optional {
                    break;
                }
                j += 1;
            }
        }
        // SIPp's optional="global": an earlier step still takes it.
        let mut behind = false;
        if found.is_none() {
            found = (0..call.step.min(scn.steps.len())).rev().find(|&j| {
                matches!(scn.steps.get(j).map(|s| &s.kind),
                    Some(StepKind::Recv(r)) if r.optional_global && matches(j, r))
            });
            behind = found.is_some();
        }
        let Some(j) = found else {
            let late_optional = (0..call.step.min(scn.steps.len())).rev().any(|j| {
                matches!(scn.steps.get(j).map(|s| &s.kind),
                    Some(StepKind::Recv(r)) if r.optional && matches(j, r))
            });
            if late_optional {
                self.stats.absorbed += 1;
                return Flow::Waiting;
            }
            // A late answer of a named transaction already answered: a
            // provisional is ignored, a final one gets its ACK again
            // (SIPp).
            if let StartLine::Response(s) = msg.start_line()
                && !branch.is_empty()
                && let Some(t) = call.txns.iter().position(|b| b.as_slice() == branch)
                && (0..call.step.min(scn.steps.len())).any(|j| {
                    matches!(scn.steps.get(j).map(|s| &s.kind),
                        Some(StepKind::Recv(r)) if r.response_txn.is_some_and(|x| usize::from(x) == t))
                })
            {
                if s.code >= 200
                    && let Some(ack) = call.txn_acks.get(t).filter(|a| !a.is_empty())
                {
                    let ack = ack.clone();
                    self.emit(call.dst(), &ack);
                    self.stats.retrans_sent += 1;
                }
                self.stats.absorbed += 1;
                return Flow::Waiting;
            }
            // SIPp's `_unexp.main`: the call jumps there and the message
            // goes to the steps that follow (a call there already,
            // `_unexp.retaddr` not 0, handles it as unexpected).
            if let Some(u) = scn.unexpected_jump
                && !call.unexpected_jumped
                && !u.retaddr.is_some_and(
                    |v| matches!(call.vars.get(usize::from(v.0)), Some(Value::Num(n)) if *n != 0.0),
                )
            {
                let paused_ms = match call.wait {
                    Wait::Pause { until } => until / 1000,
                    _ => 0,
                };
                for (var, n) in [(u.retaddr, call.step as u64), (u.pausedaddr, paused_ms)] {
                    if let Some(slot) = var.and_then(|v| call.vars.get_mut(usize::from(v.0))) {
                        *slot = Value::Num(n as f64);
                    }
                }
                call.step = u.step;
                call.wait = Wait::Running;
                // Kept for `pauserestore` to put back with the pause.
                call.unexp_pause_jump = call.pause_jump.take();
                let flow = self.advance(call, now);
                if !matches!(flow, Flow::Waiting) {
                    return flow;
                }
                // Not at a <recv> yet (a pause first): the message waits
                // for the first one the call reaches (SIPp's queue).
                if !matches!(call.wait, Wait::Recv { .. }) {
                    call.queued = Some(bytes.to_vec());
                    return flow;
                }
                call.unexpected_jumped = true;
                let flow = self.on_message(call, now, msg, bytes);
                call.unexpected_jumped = false;
                return flow;
            }
            // -aa: answered, and the call goes on; `pingreply`: a PING in
            // the call is answered the same way.
            if let Some(r) = msg.request_line()
                && ((self.cfg.auto_answer
                    && matches!(r.method_raw, b"INFO" | b"NOTIFY" | b"OPTIONS" | b"UPDATE"))
                    || (self.cfg.behaviors.ping_reply && r.method_raw == b"PING"))
            {
                let mut out = Vec::with_capacity(512);
                ok_response(msg, &mut out);
                self.emit(call.dst(), &out);
                self.stats.auto_answered += 1;
                return Flow::Waiting;
            }
            if let Some(s) = self.stats.step(call.step) {
                s.unexpected += 1;
            }
            if self.cfg.trace_error_codes
                && let Some(status) = msg.status_line()
            {
                self.error_codes.push(status.code);
            }
            let abort = self.cfg.behaviors.abort_unexpected;
            self.error(|| {
                let expecting = match scn.steps.get(call.step).map(|s| &s.kind) {
                    Some(StepKind::Recv(r)) => format!("while expecting '{}' ", r.expect),
                    Some(StepKind::Send { .. }) => "while sending ".into(),
                    Some(StepKind::Pause { .. }) => "while pausing ".into(),
                    _ => String::new(),
                };
                format!(
                    "{} call on unexpected message for Call-Id '{}': {expecting}(index {}), received '{}'",
                    if abort { "Aborting" } else { "Continuing" },
                    String::from_utf8_lossy(&call.id),
                    call.step,
                    String::from_utf8_lossy(bytes)
                )
            });
            if !self.cfg.behaviors.abort_unexpected {
                // Ignored: the call waits on for what it expects.
                return Flow::Waiting;
            }
            // SIPp answers an unexpected BYE or CANCEL before giving up
            // (its `bye` behaviour), and sends nothing more in that call.
            if let Some(r) = msg.request_line()
                && matches!(r.method_raw, b"BYE" | b"CANCEL")
            {
                call.peer_hung_up = true;
                if self.cfg.behaviors.bye {
                    match scn.default_message(DefaultMessage::Ok200) {
                        Some(t) => self.send_default(t, call, now, Some(bytes)),
                        None => {
                            let mut out = Vec::with_capacity(512);
                            ok_response(msg, &mut out);
                            self.emit(call.dst(), &out);
                        }
                    }
                }
            }
            // Classic 3PCC: the twin's call aborts too (SIPp).
            if scn.uses_twin() && scn.command_peers().is_empty() && call.step > 0 {
                let cmd = match scn.default_message(DefaultMessage::ThreePccAbort) {
                    Some(t) => {
                        let mut buf = Vec::new();
                        let last = Message::parse(bytes).ok();
                        let failed = self
                            .render(t, &mut buf, call, (call.step, now), (last.as_ref(), bytes))
                            .is_some();
                        (!failed).then_some(buf)
                    }
                    None => {
                        let mut buf = b"call-id: ".to_vec();
                        buf.extend_from_slice(&call.id);
                        buf.extend_from_slice(b"\ninternal-cmd: abort_call\n\n");
                        Some(buf)
                    }
                };
                if let Some(cmd) = cmd {
                    self.twin_out.push((None, cmd));
                }
            }
            return Flow::Failed(FailReason::UnexpectedMessage);
        };
        // `lost`: as if it never came (a retransmission may).
        if self.lost(j) {
            if let Some(s) = self.stats.step(j) {
                s.lost += 1;
            }
            return Flow::Waiting;
        }
        if let Some(s) = self.stats.step(j) {
            s.received += 1;
        }
        if let Some(slot) = call.recv_hashes.get_mut(j) {
            *slot = h;
        }
        // A message taken by an earlier step (optional="global") or by
        // `_unexp.main` ends the retransmissions only if it answers them
        // (SIPp: a response, ACK, CANCEL, BYE or PRACK, to a later step).
        let aside = behind || call.unexpected_jumped;
        let answers = msg
            .request_line()
            .is_none_or(|r| matches!(r.method_raw, b"ACK" | b"CANCEL" | b"BYE" | b"PRACK"));
        if !aside || (answers && call.retrans.is_some_and(|r| j > r.step)) {
            call.retrans = None;
        }
        // advance_state="false": its actions run, the call stays as it
        // stood (SIPp returns before keeping the message or moving).
        if let Some(StepKind::Recv(r)) = scn.steps.get(j).map(|s| &s.kind)
            && !r.advance_state
        {
            self.rtd(call, j, now);
            return match self.actions(call, j, Some(msg), now) {
                Err(fatal) => Flow::Failed(fatal),
                Ok(_) => Flow::Waiting,
            };
        }
        if self.needs_last {
            call.last_msg.clear();
            call.last_msg.extend_from_slice(bytes);
        }

        let is_response = !msg.is_request();
        // [peer_tag_param]: the To tag of the last response.
        if is_response
            && let Some(tag) = msg
                .value(HeaderName::To)
                .and_then(|v| NameAddr::parse(v).ok())
                .and_then(|na| na.tag())
                .filter(|t| !t.is_empty())
        {
            call.peer_tag.clear();
            call.peer_tag.extend_from_slice(tag);
        }
        if let Some(StepKind::Recv(r)) = scn.steps.get(j).map(|s| &s.kind)
            && r.rrs
            && call.next_url.is_empty()
        {
            remember_route_set(call, msg, is_response);
        }
        self.rtd(call, j, now);
        // A jump in a <recv> is overruled by the reception, as in SIPp.
        if let Err(fatal) = self.actions(call, j, Some(msg), now) {
            return Flow::Failed(fatal);
        }
        // [cseq] follows the peer's requests once their actions ran
        // (SIPp: never below).
        if !is_response && let Some(c) = msg.value(HeaderName::CSeq).and_then(CSeq::parse) {
            call.cseq = call.cseq.max(u64::from(c.seq));
        }
        call.last_recv = Some(j);
        // An earlier global optional step moves the call only when it
        // has a `next` whose test holds (SIPp); else the call waits on.
        if behind {
            let jumps = scn.steps.get(j).is_some_and(|s| {
                s.next.is_some()
                    && s.test
                        .is_none_or(|v| call.vars.get(usize::from(v.0)).is_some_and(Value::truthy))
            });
            if !jumps {
                return Flow::Waiting;
            }
        }
        call.step = self.next_of(call, j);
        call.wait = Wait::Running;
        call.pause_restore = None;
        self.advance(call, now)
    }

    /// A call failed: like SIPp, a caller cleans up its INVITE
    /// transaction: CANCEL while only provisional responses came, ACK a
    /// final error, ACK and BYE an answered call.
    fn abort(&mut self, call: &Call, now: u64) {
        if call.invite.is_empty() || call.invite_status == 0 {
            return;
        }
        // The scenario's own <DefaultMessage>s, where it has them.
        let scn = Arc::clone(&self.scn);
        let own = |kind| scn.default_message(kind);
        let (cancel, ack, bye) = (
            own(DefaultMessage::Cancel),
            own(DefaultMessage::Ack),
            own(DefaultMessage::Bye),
        );
        if cancel.is_some() || ack.is_some() || bye.is_some() {
            let send = |ep: &mut Self, t: Option<&Template>| {
                if let Some(t) = t {
                    ep.send_default(t, call, now, None);
                }
            };
            match call.invite_status {
                100..=199 if cancel.is_some() => return send(self, cancel),
                200..=299 if ack.is_some() && bye.is_some() => {
                    send(self, ack);
                    return send(self, bye);
                }
                300.. if ack.is_some() => return send(self, ack),
                _ => {}
            }
        }
        let Ok(inv) = Message::parse(&call.invite) else {
            return;
        };
        let Some(rl) = inv.request_line() else {
            return;
        };
        let seq = inv
            .value(HeaderName::CSeq)
            .and_then(CSeq::parse)
            .map_or(1, |c| c.seq);
        let mut out = Vec::with_capacity(512);
        let request = |out: &mut Vec<u8>, method: &[u8], seq: u32, new_branch: bool, to: &[u8]| {
            out.clear();
            out.extend_from_slice(method);
            out.push(b' ');
            out.extend_from_slice(rl.uri);
            out.extend_from_slice(b" SIP/2.0\r\n");
            if let Some(via) = inv.value(HeaderName::Via) {
                out.extend_from_slice(b"Via: ");
                if new_branch {
                    // A new transaction: the INVITE's branch, suffixed.
                    with_branch_suffix(via, method, out);
                } else {
                    out.extend_from_slice(via);
                }
                out.extend_from_slice(b"\r\n");
            }
            for (name, v) in [
                (&b"From"[..], inv.value(HeaderName::From)),
                (b"To", Some(to)),
                (b"Call-ID", inv.value(HeaderName::CallId)),
            ] {
                if let Some(v) = v {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"CSeq: ");
            out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
            out.push(b' ');
            out.extend_from_slice(method);
            out.extend_from_slice(b"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
        };
        let inv_to = inv.value(HeaderName::To).unwrap_or(b"");
        match call.invite_status {
            100..=199 => {
                request(&mut out, b"CANCEL", seq, false, inv_to);
                self.emit(call.dst(), &out);
            }
            200..=299 => {
                let to = call.invite_to.clone();
                request(&mut out, b"ACK", seq, true, &to);
                self.emit(call.dst(), &out);
                // Above any CSeq the scenario used (a BYE it sent already,
                // say), or the peer takes it for an old request.
                let last = Message::parse(&call.last_sent)
                    .ok()
                    .filter(Message::is_request)
                    .and_then(|m| m.value(HeaderName::CSeq).and_then(CSeq::parse))
                    .map_or(0, |c| c.seq);
                let bye_seq = seq.max(last).saturating_add(1);
                request(&mut out, b"BYE", bye_seq, true, &to);
                self.emit(call.dst(), &out);
            }
            _ => {
                let to = call.invite_to.clone();
                request(&mut out, b"ACK", seq, false, &to);
                self.emit(call.dst(), &out);
            }
        }
    }

    /// Runs steps from `call.step` until the call waits or ends.
    fn advance(&mut self, call: &mut Call, now: u64) -> Flow {
        let scn = Arc::clone(&self.scn);
        let last_bytes = std::mem::take(&mut call.last_msg);
        let last = if self.needs_last {
            Message::parse(&last_bytes).ok()
        } else {
            None
        };
        let budget = scn.steps.len() * 8 + 64;
        let mut flow = Flow::Failed(FailReason::ScenarioLoop);
        for _ in 0..budget {
            let idx = call.step;
            // `pauserestore`: back into the pause it kept, as SIPp's
            // paused_until; past it, on to the next step.
            if let Some(until_ms) = call.pause_restore.take() {
                let until = until_ms.saturating_mul(1000);
                call.pause_jump = call.unexp_pause_jump.take();
                if until > now {
                    call.wait = Wait::Pause { until };
                    flow = Flow::Waiting;
                    break;
                }
                call.step = call
                    .pause_jump
                    .take()
                    .unwrap_or_else(|| self.next_of(call, idx));
                continue;
            }
            let Some(step) = scn.steps.get(idx) else {
                flow = Flow::Finished;
                break;
            };
            // `condexec`: a step whose variable is not set is gone past.
            if !self.runs(call, step) {
                call.step = self.next_from(call, step, idx);
                continue;
            }
            match &step.kind {
                StepKind::Send { msg, retrans_ms } => {
                    let method = msg.method();
                    // [cseq] counts the requests sent, except ACK and CANCEL.
                    if method.is_some_and(|m| m != b"ACK" && m != b"CANCEL") {
                        call.cseq += 1;
                    }
                    let mut buf = std::mem::take(&mut call.last_sent);
                    buf.clear();
                    if let Some(r) = self.render(
                        msg,
                        &mut buf,
                        call,
                        (idx, now),
                        (last.as_ref(), &last_bytes),
                    ) {
                        call.last_sent = buf;
                        flow = Flow::Failed(r);
                        break;
                    }
                    // `lost`: not sent this time (a retransmission may be).
                    let lost = self.lost(idx);
                    if !lost {
                        self.emit(call.dst(), &buf);
                    }
                    if self.plays_media {
                        let sdp = crate::rtpcheck::body(&buf);
                        own_media_ports(sdp, &mut call.media_from);
                        if call.keys.is_some() || crate::rtpcheck::has_crypto(sdp) {
                            call.keys.get_or_insert_default().sent(sdp);
                        }
                    }
                    // Named transactions: the request's branch, the ACK.
                    if let Some(t) = step
                        .start_txn
                        .and_then(|t| call.txns.get_mut(usize::from(t)))
                        && let Ok(sent) = Message::parse(&buf)
                    {
                        t.clear();
                        t.extend_from_slice(via_branch(&sent));
                    }
                    if let Some(a) = step
                        .ack_txn
                        .and_then(|t| call.txn_acks.get_mut(usize::from(t)))
                    {
                        a.clone_from(&buf);
                    }
                    call.last_sent = buf;
                    if let Some(s) = self.stats.step(idx) {
                        s.sent += 1;
                        s.lost += u64::from(lost);
                    }
                    call.sent_after = call.last_recv;
                    let invite = method == Some(b"INVITE");
                    if invite && call.invite_at.is_none() {
                        call.invite_at = Some(now);
                        call.invite.clone_from(&call.last_sent);
                    }
                    // Only a <send retrans="T1"> is retransmitted (SIPp has
                    // no default).
                    call.retrans = match *retrans_ms {
                        Some(t1) if self.cfg.retrans_enabled && t1 > 0 => Some(Retrans {
                            next_at: now + t1 * 1000,
                            interval: t1 * 1000,
                            count: 0,
                            max: if invite {
                                self.cfg.max_invite_retrans
                            } else {
                                self.cfg.max_non_invite_retrans
                            },
                            invite,
                            step: idx,
                        }),
                        _ => None,
                    };
                    self.rtd(call, idx, now);
                    // SIPp runs a <send>'s actions on the message it sent.
                    let mut jump = None;
                    if !step.actions.is_empty() {
                        let sent = std::mem::take(&mut call.last_sent);
                        let ran = self.actions(call, idx, Message::parse(&sent).ok().as_ref(), now);
                        call.last_sent = sent;
                        match ran {
                            Ok(to) => jump = to,
                            Err(fatal) => {
                                flow = Flow::Failed(fatal);
                                break;
                            }
                        }
                    }
                    call.step = jump.unwrap_or_else(|| self.next_of(call, idx));
                }
                StepKind::Recv(r) => {
                    let timeout = r.timeout_ms.or(self.cfg.recv_timeout_ms);
                    call.wait = Wait::Recv {
                        deadline: timeout.map(|t| now + t * 1000),
                    };
                    flow = Flow::Waiting;
                    break;
                }
                StepKind::Pause { length, timewait } => {
                    self.rtd(call, idx, now);
                    call.timewait = *timewait;
                    if let Some(s) = self.stats.step(idx) {
                        s.passed += 1;
                    }
                    // SIPp runs a <pause>'s actions as it starts; a jump
                    // takes effect when it ends.
                    match self.actions(call, idx, last.as_ref(), now) {
                        Ok(to) => call.pause_jump = to,
                        Err(fatal) => {
                            flow = Flow::Failed(fatal);
                            break;
                        }
                    }
                    let ms = match *length {
                        PauseLength::Default => self.cfg.pause_ms,
                        PauseLength::Fixed { ms } => ms,
                        // As SIPp: below 1 ms none, past INT_MAX ms cut.
                        PauseLength::Drawn(d) => {
                            let v = sample(d, &mut self.rng);
                            if v >= 1.0 {
                                v.min(f64::from(i32::MAX)) as u64
                            } else {
                                0
                            }
                        }
                        // As SIPp's getDouble: 0 unless it holds a number.
                        PauseLength::Variable(v) => match call.vars.get(usize::from(v.0)) {
                            Some(Value::Num(n)) if n.is_finite() && *n > 0.0 => *n as u64,
                            _ => 0,
                        },
                    };
                    // `pauserestore` among its actions: the pause ends
                    // then instead (SIPp).
                    let until = match call.pause_restore.take() {
                        Some(until_ms) => until_ms.saturating_mul(1000),
                        None => now.saturating_add(ms.saturating_mul(1000)),
                    };
                    if until <= now {
                        call.step = call
                            .pause_jump
                            .take()
                            .unwrap_or_else(|| self.next_of(call, idx));
                        continue;
                    }
                    call.wait = Wait::Pause { until };
                    flow = Flow::Waiting;
                    break;
                }
                StepKind::SendCmd { msg, dest } => {
                    let mut buf = Vec::with_capacity(512);
                    if let Some(r) = self.render(
                        msg,
                        &mut buf,
                        call,
                        (idx, now),
                        (last.as_ref(), &last_bytes),
                    ) {
                        flow = Flow::Failed(r);
                        break;
                    }
                    self.twin_out.push((dest.clone(), buf));
                    self.stats.msgs_sent += 1;
                    if let Some(s) = self.stats.step(idx) {
                        s.sent += 1;
                    }
                    self.rtd(call, idx, now);
                    match self.actions(call, idx, last.as_ref(), now) {
                        Ok(jump) => call.step = jump.unwrap_or_else(|| self.next_of(call, idx)),
                        Err(fatal) => {
                            flow = Flow::Failed(fatal);
                            break;
                        }
                    }
                }
                StepKind::RecvCmd { .. } => {
                    call.wait = Wait::RecvCmd {
                        deadline: self.cfg.recv_timeout_ms.map(|t| now + t * 1000),
                    };
                    flow = Flow::Waiting;
                    break;
                }
                StepKind::Nop => {
                    self.rtd(call, idx, now);
                    if let Some(s) = self.stats.step(idx) {
                        s.passed += 1;
                    }
                    match self.actions(call, idx, last.as_ref(), now) {
                        Ok(jump) => {
                            call.step = jump.unwrap_or_else(|| self.next_of(call, idx));
                        }
                        Err(fatal) => {
                            flow = Flow::Failed(fatal);
                            break;
                        }
                    }
                }
            }
        }
        call.last_msg = last_bytes;
        flow
    }
}

/// Copies a Via value with its branch parameter suffixed by `-tag`.
fn with_branch_suffix(via: &[u8], tag: &[u8], out: &mut Vec<u8>) {
    let at = via
        .windows(7)
        .position(|w| w.eq_ignore_ascii_case(b"branch="));
    let Some(at) = at else {
        out.extend_from_slice(via);
        return;
    };
    let end = via[at..]
        .iter()
        .position(|&b| matches!(b, b';' | b',' | b' ' | b'\t'))
        .map_or(via.len(), |e| at + e);
    out.extend_from_slice(&via[..end]);
    out.push(b'-');
    out.extend_from_slice(tag);
    out.extend_from_slice(&via[end..]);
}

/// A 200 OK for a request, from its Via, From, To, Call-ID and CSeq.
fn ok_response(req: &Message<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    for h in req.headers() {
        use HeaderName::{CSeq, CallId, From, To, Via};
        if !matches!(h.name, Via | From | To | CallId | CSeq) {
            continue;
        }
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// `[last_X:]`: every X header of the last message, on one line (values
/// joined with ", ", as SIPp does).
fn write_last(last: Option<&Message<'_>>, h: &LastHeader, out: &mut Vec<u8>) {
    let Some(m) = last else {
        return;
    };
    let mut first = true;
    for hdr in m.headers().filter(|x| h.matches(x.name, x.raw_name)) {
        if first && !h.value_only {
            out.extend_from_slice(&h.display);
            out.extend_from_slice(b": ");
        }
        if !first {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(hdr.value);
        first = false;
    }
}

/// `rrs="true"`: the route set and remote target for in-dialog requests
/// (RFC 3261 §12.1): Record-Route reversed for a caller (from a
/// response), in order for a callee (from a request); the Contact URI.
fn remember_route_set(call: &mut Call, msg: &Message<'_>, from_response: bool) {
    let mut entries: Vec<&[u8]> = msg
        .all(HeaderName::RecordRoute)
        .flat_map(|h| CommaList::new(h.value))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
        .collect();
    if from_response {
        entries.reverse();
    }
    call.routes.clear();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            call.routes.extend_from_slice(b", ");
        }
        call.routes.extend_from_slice(e);
    }
    call.next_url.clear();
    if let Some(uri) = msg
        .value(HeaderName::Contact)
        .and_then(|v| CommaList::new(v).next())
        .and_then(|c| NameAddr::parse(c).ok())
        .map(|na| na.uri)
    {
        call.next_url.extend_from_slice(uri);
    }
}

/// Why a keyword could not be rendered.
enum KwError {
    /// The call fails for this reason.
    Fail(FailReason),
    /// SIPp's fatal error: the whole run stops.
    Fatal(String),
}

/// What rendering a keyword reads besides the call and its last message:
/// the endpoint's addresses and the run's settings. Messages and action
/// values render through it alike.
struct Env<'a> {
    cfg: &'a Config,
    pid: &'a [u8],
    local_ip: &'a [u8],
    local_port: u16,
    media_ip: &'a [u8],
    /// The caller's destination, and its address as text.
    remote: Option<SocketAddr>,
    remote_ip: &'a [u8],
    /// The `-inf` files.
    inject: &'a RefCell<Option<Arc<Injection>>>,
    /// The engine's time (µs since the run started).
    now: u64,
}

impl Env<'_> {
    /// The wall clock now, µs since the Unix epoch.
    fn wall_us(&self) -> u64 {
        self.cfg.wall_epoch_us.saturating_add(self.now)
    }

    /// Writes a keyword's value for a message of `call` at step `idx`;
    /// `last` is the last message received (`last_raw` its bytes).
    fn keyword(
        &self,
        kw: &Keyword,
        call: &Call,
        idx: usize,
        (last, last_raw): (Option<&Message<'_>>, &[u8]),
        out: &mut Vec<u8>,
    ) -> Result<(), KwError> {
        let num = |out: &mut Vec<u8>, n: u64| {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        };
        let signed = |out: &mut Vec<u8>, n: i64| {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        };
        match kw {
            Keyword::CallId => out.extend_from_slice(&call.id),
            Keyword::CallNumber => num(out, call.number),
            Keyword::Branch(off) => {
                out.extend_from_slice(sbc_core::sip::BRANCH_COOKIE);
                out.push(b'-');
                out.extend_from_slice(self.pid);
                out.push(b'-');
                num(out, call.number);
                out.push(b'-');
                signed(out, idx as i64 + off);
            }
            Keyword::Cseq(off) => num(out, call.cseq.saturating_add_signed(*off)),
            Keyword::Len(_) => {}
            Keyword::Last(h) => write_last(last, h, out),
            Keyword::LastMessage => out.extend_from_slice(last_raw),
            Keyword::LastRequestUri => {
                if let Some(r) = last.and_then(Message::request_line) {
                    out.extend_from_slice(r.uri);
                }
            }
            // As SIPp: 0 (plus the offset) without a CSeq.
            Keyword::LastCseqNumber(off) => {
                let n = last
                    .and_then(|m| m.value(HeaderName::CSeq))
                    .and_then(CSeq::parse)
                    .map_or(0, |c| i64::from(c.seq));
                signed(out, n + off);
            }
            Keyword::PeerTagParam => {
                if !call.peer_tag.is_empty() {
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(&call.peer_tag);
                }
            }
            Keyword::Routes => {
                if !call.routes.is_empty() {
                    out.extend_from_slice(b"Route: ");
                    out.extend_from_slice(&call.routes);
                }
            }
            Keyword::NextUrl => out.extend_from_slice(&call.next_url),
            Keyword::LocalIp => out.extend_from_slice(self.local_ip),
            Keyword::LocalIpType => out.extend_from_slice(ip_type(self.cfg.local_ip)),
            Keyword::LocalPort(off) => {
                let port = if call.port != 0 {
                    call.port
                } else {
                    self.local_port
                };
                signed(out, i64::from(port) + off);
            }
            Keyword::ServerIp => out.extend_from_slice(self.cfg.local_ip.to_string().as_bytes()),
            Keyword::RemoteIp if Some(call.peer) == self.remote => {
                out.extend_from_slice(self.remote_ip);
            }
            Keyword::RemoteIp => out.extend_from_slice(&ip_text(call.peer.ip())),
            Keyword::RemoteHost => out.extend_from_slice(&self.cfg.remote_host),
            Keyword::RemoteIpType => out.extend_from_slice(ip_type(call.peer.ip())),
            Keyword::RemotePort(off) => signed(out, i64::from(call.peer.port()) + off),
            Keyword::Transport => out.extend_from_slice(self.cfg.transport.as_bytes()),
            Keyword::MediaIp => out.extend_from_slice(self.media_ip),
            Keyword::MediaIpType => out.extend_from_slice(ip_type(self.cfg.media_ip)),
            Keyword::MediaPort(off) => signed(out, i64::from(self.cfg.media_port) + off),
            // As SIPp: four ports a call, wrapping after 10,000.
            Keyword::AutoMediaPort(off) => {
                let port = i64::from(self.cfg.media_port)
                    + off
                    + ((4 * call.number.saturating_sub(1)) % 10_000) as i64;
                signed(out, port);
            }
            Keyword::Service => out.extend_from_slice(&self.cfg.service),
            Keyword::CryptoTag(n) => num(out, u64::from(*n)),
            Keyword::CryptoSuite(suite) => out.extend_from_slice(suite.name().as_bytes()),
            Keyword::Unencrypted => out.extend_from_slice(b"UNENCRYPTED_SRTP"),
            Keyword::CryptoKey { video, line, reuse } => {
                let kept = call
                    .keys
                    .as_ref()
                    .filter(|_| *reuse)
                    .and_then(|k| k.local_master(*video, u32::from(*line)));
                let master = match kept.or_else(crate::srtp::Sdes::random_master) {
                    Some(m) => m,
                    None => {
                        return Err(KwError::Fatal(
                            "no randomness for an SRTP master key".into(),
                        ));
                    }
                };
                out.extend_from_slice(crate::srtp::Sdes::inline(&master).as_bytes());
            }
            Keyword::Pid => out.extend_from_slice(self.pid),
            Keyword::DynamicId => {
                let d = self.cfg.dynamic;
                let step = |id: u64| {
                    let next = id.saturating_add(d.step);
                    Some(if next > d.max { d.start } else { next })
                };
                let id = self
                    .cfg
                    .dynamic_id
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
                    .unwrap_or(d.start);
                num(out, id);
            }
            Keyword::MsgIndex => num(out, idx as u64),
            Keyword::ClockTick => num(out, self.now / 1000),
            Keyword::Users => match self.cfg.users {
                Some(u) => num(out, u as u64),
                None => out.extend_from_slice(b"-1"),
            },
            Keyword::UserId => num(out, u64::from(call.user)),
            Keyword::Timestamp => {
                let t = if self.cfg.rfc3339 {
                    crate::statfile::rfc3339_time(self.wall_us())
                } else {
                    crate::statfile::wall_time(self.wall_us())
                };
                out.extend_from_slice(t.as_bytes());
            }
            Keyword::Date => {
                out.extend_from_slice(crate::statfile::http_date(self.wall_us()).as_bytes());
            }
            Keyword::SippVersion => out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes()),
            Keyword::TdmMap => {
                if let Some(t) = &self.cfg.tdmmap {
                    t.write(call.tdm, out);
                }
            }
            Keyword::File(name) => {
                let mut path = Vec::new();
                name.render_value(&mut path, |k, o| {
                    let _ = self.keyword(k, call, idx, (last, last_raw), o);
                });
                let path = String::from_utf8_lossy(&path).into_owned();
                match self.cfg.files.get(&path) {
                    Some(bytes) => out.extend_from_slice(bytes),
                    None => match std::fs::read(&path) {
                        Ok(bytes) => out.extend_from_slice(&bytes),
                        // As SIPp: a file it cannot open is a fatal error.
                        Err(e) => {
                            return Err(KwError::Fatal(format!("could not open '{path}': {e}")));
                        }
                    },
                }
            }
            Keyword::Fill { text, var } => {
                let n = call.vars.get(usize::from(var.0)).map_or(0.0, Value::number);
                let n = if n.is_finite() && n > 0.0 {
                    n as usize
                } else {
                    0
                };
                out.extend(text.iter().copied().cycle().take(n));
            }
            Keyword::Authentication { username, password } => {
                self.authentication(username.as_ref(), password.as_ref(), call, last, out)
                    .map_err(KwError::Fail)?;
            }
            Keyword::Field {
                field,
                file,
                line: None,
            } => own_field(self.inject, call, (*file, *field), out),
            Keyword::Field {
                field,
                file,
                line: Some(t),
            } => {
                let inj = self.inject.borrow();
                let Some(f) = inj.as_ref().and_then(|i| i.files.get(*file)) else {
                    return Ok(());
                };
                let mut text = Vec::new();
                t.render_value(&mut text, |k, o| {
                    let _ = self.keyword(k, call, idx, (last, last_raw), o);
                });
                // As SIPp: strtod, truncated; past the end is none.
                let row = match c_number(&text) {
                    Some(n) if n > f.lines() as f64 => -1,
                    Some(n) => n as i64,
                    None => {
                        return Err(KwError::Fatal(format!(
                            "invalid line number generated: '{}'",
                            String::from_utf8_lossy(&text)
                        )));
                    }
                };
                f.write_field(row, *field, out);
            }
            Keyword::Var(v) => {
                if let Some(val) = call.vars.get(usize::from(v.0)) {
                    val.write(out);
                }
            }
        }
        Ok(())
    }

    /// `[authentication]`: the answer to the last message's challenge.
    fn authentication(
        &self,
        username: Option<&Vec<u8>>,
        password: Option<&Vec<u8>>,
        call: &Call,
        last: Option<&Message<'_>>,
        out: &mut Vec<u8>,
    ) -> Result<(), FailReason> {
        let user = username.or(self.cfg.auth_user.as_ref());
        let pass = password.or(self.cfg.auth_pass.as_ref());
        let (Some(user), Some(pass), Some(last)) = (user, pass, last) else {
            return Err(FailReason::AuthFailed);
        };
        let (challenge, header): (_, &[u8]) = match last.value(HeaderName::ProxyAuthenticate) {
            Some(v) => (v, b"Proxy-Authorization: "),
            None => match last.value(HeaderName::WwwAuthenticate) {
                Some(v) => (v, b"Authorization: "),
                None => return Err(FailReason::AuthFailed),
            },
        };
        // sbc-load answers MD5 challenges only.
        let Some(c) = Challenge::parse(challenge)
            .ok()
            .filter(|c| c.algorithm == Algorithm::Md5)
        else {
            return Err(FailReason::AuthFailed);
        };
        // The request line rendered so far gives method and URI.
        let line_end = out
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(out.len());
        let mut words = out[..line_end].split(|&b| b == b' ');
        let method = words.next().unwrap_or(b"").to_vec();
        let uri = match &self.cfg.auth_uri {
            Some(u) => [b"sip:".as_slice(), u].concat(),
            None => words.next().unwrap_or(b"").to_vec(),
        };
        let mut cnonce = [0u8; 16];
        sbc_core::hex::write_hex(&mut cnonce, call.number ^ (u64::from(self.cfg.pid) << 32));
        let creds = Credentials {
            username: user,
            password: pass,
        };
        let Ok(answer) = digest::answer(&c, &creds, &method, &uri, &cnonce, 1) else {
            return Err(FailReason::AuthFailed);
        };
        out.extend_from_slice(header);
        if answer.write(out).is_err() {
            return Err(FailReason::AuthFailed);
        }
        Ok(())
    }

    /// An action's value with its keywords, as a message renders them
    /// (`[authentication]` without a challenge renders empty); `Err` is
    /// SIPp's fatal error (a `[file]` that cannot be read).
    fn value(
        &self,
        value: &crate::template::Template,
        call: &Call,
        idx: usize,
        msg: Option<&Message<'_>>,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let raw = msg.map_or(&[][..], Message::as_bytes);
        let mut fatal = None;
        value.render_value(&mut out, |kw, out| {
            if let Err(KwError::Fatal(m)) = self.keyword(kw, call, idx, (msg, raw), out) {
                fatal.get_or_insert(m);
            }
        });
        fatal.map_or(Ok(out), Err)
    }
}

/// A number as C's strtod reads a whole string: leading blanks skipped,
/// empty is 0, anything after the number is not a number.
fn c_number(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?.trim_start();
    if s.is_empty() {
        return Some(0.0);
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The branch of a message's first Via (SIPp's transaction id): after
/// the first `;branch=` of the Via values, up to `;`, `,` or a blank.
fn via_branch<'a>(m: &Message<'a>) -> &'a [u8] {
    let Some(via) = m.value(HeaderName::Via) else {
        return b"";
    };
    let Some(at) = via.windows(8).position(|w| w == b";branch=") else {
        return b"";
    };
    let rest = &via[at + 8..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b';' | b',' | b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// SIPp's fatal error `text`, kept in `fatal`.
fn fatal_error(fatal: &mut Option<String>, text: String) -> FailReason {
    *fatal = Some(text);
    FailReason::ErrorAction
}

/// `<setdest>`'s address: host (an IP address, IPv6 without brackets, or
/// a name resolved as SIPp does), port (a number), protocol (the run's:
/// over TCP only with a connection per call, `-t tn`, as in SIPp).
fn set_dest(host: &[u8], port: &[u8], protocol: &[u8], cfg: &Config) -> Result<SocketAddr, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let named = match protocol {
        b"udp" | b"UDP" => "UDP",
        b"tcp" | b"TCP" => "TCP",
        b"tls" | b"TLS" => "TLS",
        b"sctp" | b"SCTP" => "SCTP",
        p => return Err(format!("Unknown transport for setdest: '{}'", text(p))),
    };
    if named != cfg.transport {
        return Err("Can not switch protocols during setdest.".into());
    }
    if matches!(named, "TCP" | "TLS") && !cfg.report_ended {
        return Err(format!(
            "setdest over {named} needs a connection per call (-t tn or -t ln)."
        ));
    }
    let Some(port) = c_number(port).filter(|p| (0.0..65_536.0).contains(p)) else {
        return Err(format!("Invalid port for setdest: '{}'", text(port)));
    };
    let port = port as u16;
    let host = text(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    use std::net::ToSocketAddrs;
    (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("Unknown host '{host}' for setdest"))
}

/// [`Env::value`], a fatal error kept in `fatal`.
fn env_value(
    env: &Env<'_>,
    value: &crate::template::Template,
    call: &Call,
    idx: usize,
    msg: Option<&Message<'_>>,
    fatal: &mut Option<String>,
) -> Result<Vec<u8>, FailReason> {
    env.value(value, call, idx, msg).map_err(|m| {
        *fatal = Some(m);
        FailReason::ErrorAction
    })
}

/// SIPp's `verifyauth`: the request's Authorization is for `username`
/// and its digest answers the
/// nonce it names with `password` (the nonce's freshness is the
/// scenario's business, as in SIPp).
fn verify_auth(msg: Option<&Message<'_>>, username: &[u8], password: &[u8]) -> bool {
    let Some(msg) = msg else {
        return false;
    };
    let Some(method) = msg.request_line().map(|r| r.method_raw) else {
        return false;
    };
    // SIPp's verifyauth reads Authorization only.
    let Some(value) = msg.value(HeaderName::Authorization) else {
        return false;
    };
    let Ok(auth) = digest::Authorization::parse(value) else {
        return false;
    };
    if *auth.username != *username {
        return false;
    }
    let qop: Vec<_> = auth.qop.into_iter().collect();
    let challenge = digest::Expected {
        realm: &auth.realm,
        nonce: &auth.nonce,
        opaque: auth.opaque.as_deref(),
        algorithm: auth.algorithm,
        qop: &qop,
    };
    digest::verify_expected(challenge, &auth, method, digest::Secret::Password(password)).is_ok()
}

/// `<warning>` messages printed per thread; the rest are counted.
const WARNINGS_SHOWN: u64 = 10;

/// xorshift64* on `state`.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A uniform draw in [0, 1).
fn unit(state: &mut u64) -> f64 {
    (next_random(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// A draw from `d`.
fn sample(d: Distribution, state: &mut u64) -> f64 {
    d.sample(&mut || unit(state))
}

/// Percent-encodes all but the unreserved characters (RFC 3986 §2.3), or
/// decodes `%XX` (a malformed escape is kept as it is).
fn url_code(s: &[u8], decode: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    if decode {
        let hex = |b: u8| char::from(b).to_digit(16);
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            if b == b'+' {
                // As SIPp's url_decode: a plus is a space.
                out.push(b' ');
                i += 1;
                continue;
            }
            if b == b'%'
                && let (Some(h), Some(l)) = (
                    s.get(i + 1).copied().and_then(hex),
                    s.get(i + 2).copied().and_then(hex),
                )
            {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            out.push(b);
            i += 1;
        }
    } else {
        for &b in s {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
    }
    out
}

/// Runs a step's actions; `Ok(Some(step))` when one of them jumped.
fn run_actions(
    actions: &[Action],
    call: &mut Call,
    (msg, raw): (Option<&Message<'_>>, Option<&[u8]>),
    (env, idx): (&Env<'_>, usize),
    (rng, fatal, warnings): (&mut u64, &mut Option<String>, &mut u64),
    (execs, mut notes): (&mut Vec<Exec>, Option<&mut Vec<String>>),
) -> Result<Option<usize>, FailReason> {
    let mut jump = None;
    // A variable's string, as SIPp's getString: empty unless it holds one.
    let text = |call: &Call, v: VarId| match call.vars.get(usize::from(v.0)) {
        Some(Value::Str(s)) => s.clone(),
        _ => Vec::new(),
    };
    // A variable's number, as SIPp's getDouble: 0 unless it holds one.
    let number = |call: &Call, n: &NumOperand| match n {
        NumOperand::Value(v) => *v,
        NumOperand::Variable(v) => match call.vars.get(usize::from(v.0)) {
            Some(Value::Num(n)) => *n,
            _ => 0.0,
        },
    };
    let set = |call: &mut Call, v: VarId, value: Value| {
        if let Some(slot) = call.vars.get_mut(usize::from(v.0)) {
            *slot = value;
        }
    };
    for a in actions {
        match a {
            Action::Ereg {
                regex,
                search_in,
                check_it,
                check_it_inverse,
                assign_to,
            } => {
                let var_text;
                let text: &[u8] = match (msg, search_in) {
                    (_, SearchIn::Var(v)) => {
                        var_text = match call.vars.get(usize::from(v.0)) {
                            Some(Value::Str(s)) => Some(s.clone()),
                            _ => None,
                        };
                        match &var_text {
                            Some(s) => s,
                            None if *check_it => return Err(FailReason::RegexpHdrNotFound),
                            None => b"",
                        }
                    }
                    (_, SearchIn::Msg) => raw.or(msg.map(Message::as_bytes)).unwrap_or(b""),
                    (_, SearchIn::Body) => match (raw, msg) {
                        (Some(r), _) => r
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(&b""[..], |p| &r[p + 4..]),
                        (None, Some(m)) => m.body(),
                        (None, None) => b"",
                    },
                    (
                        _,
                        SearchIn::Hdr {
                            name,
                            case_indep,
                            start_line,
                            occurrence,
                        },
                    ) => {
                        let text = raw.or(msg.map(Message::as_bytes)).unwrap_or(b"");
                        let found = header_text(text, name, *case_indep, *start_line, *occurrence);
                        // As SIPp: found empty is not found.
                        match found {
                            Some(t) if !t.is_empty() => t,
                            _ if *check_it => return Err(FailReason::RegexpHdrNotFound),
                            _ => b"",
                        }
                    }
                };
                let caps = regex.captures(text);
                let matched = caps.is_some();
                for (i, v) in assign_to.iter().enumerate() {
                    let val = caps
                        .as_ref()
                        .and_then(|c| c.get(i))
                        .map(|m| Value::Str(m.as_bytes().to_vec()))
                        .unwrap_or(Value::Unset);
                    if let Some(slot) = call.vars.get_mut(usize::from(v.0)) {
                        *slot = val;
                    }
                }
                if *check_it && !matched {
                    return Err(FailReason::RegexpNoMatch);
                }
                if *check_it_inverse && matched {
                    return Err(FailReason::RegexpShouldntMatch);
                }
            }
            Action::AssignStr { var, value } => {
                let out = env_value(env, value, call, idx, msg, fatal)?;
                if let Some(slot) = call.vars.get_mut(usize::from(var.0)) {
                    *slot = Value::Str(out);
                }
            }
            Action::VerifyAuth {
                var,
                username,
                password,
            } => {
                let user = env_value(env, username, call, idx, msg, fatal)?;
                let pass = env_value(env, password, call, idx, msg, fatal)?;
                let ok = verify_auth(msg, &user, &pass);
                if let Some(slot) = call.vars.get_mut(usize::from(var.0)) {
                    *slot = Value::Bool(ok);
                }
            }
            Action::Error { message } => {
                let m = env_value(env, message, call, idx, msg, fatal)?;
                *fatal = Some(String::from_utf8_lossy(&m).into_owned());
                return Err(FailReason::ErrorAction);
            }
            Action::Log { message } => {
                if env.cfg.trace_logs {
                    execs.push(Exec::Log(env_value(env, message, call, idx, msg, fatal)?));
                }
            }
            Action::Warning { message } => {
                // Counted; the first few printed (under load, one a call
                // would flood the terminal and slow the run).
                *warnings += 1;
                if let Some(n) = notes.as_deref_mut() {
                    let m = env_value(env, message, call, idx, msg, fatal)?;
                    n.push(String::from_utf8_lossy(&m).into_owned());
                }
                if *warnings <= WARNINGS_SHOWN {
                    let m = env_value(env, message, call, idx, msg, fatal)?;
                    eprintln!("sbc-load: warning: {}", String::from_utf8_lossy(&m));
                    if *warnings == WARNINGS_SHOWN {
                        eprintln!("sbc-load: further warnings are only counted");
                    }
                }
            }
            Action::Strcmp {
                var,
                variable,
                other,
            } => {
                let a = text(call, *variable);
                let b = match other {
                    StrOperand::Variable(v) => text(call, *v),
                    StrOperand::Value(v) => v.clone(),
                };
                let r = match a.cmp(&b) {
                    std::cmp::Ordering::Less => -1.0,
                    std::cmp::Ordering::Equal => 0.0,
                    std::cmp::Ordering::Greater => 1.0,
                };
                set(call, *var, Value::Num(r));
            }
            Action::Jump(to) => {
                let n = number(call, to);
                // A negative or endless number is out of range (see
                // `Endpoint::actions`).
                jump = Some(if n.is_finite() && n >= 0.0 {
                    n as usize
                } else {
                    usize::MAX
                });
            }
            Action::GetTimeOfDay { seconds, micros } => {
                set(
                    call,
                    *seconds,
                    Value::Num((env.wall_us() / 1_000_000) as f64),
                );
                set(
                    call,
                    *micros,
                    Value::Num((env.wall_us() % 1_000_000) as f64),
                );
            }
            Action::UrlEncode { var, decode } => {
                let v = url_code(&text(call, *var), *decode);
                set(call, *var, Value::Str(v));
            }
            Action::ToDouble { var, variable } => {
                // As SIPp (strtod, leading white space skipped): the rest
                // must be a number; otherwise the target is left as it was.
                let n = std::str::from_utf8(&text(call, *variable))
                    .ok()
                    .and_then(|s| s.trim_start().parse::<f64>().ok());
                if let Some(n) = n {
                    set(call, *var, Value::Num(n));
                }
            }
            Action::Trim { var } => {
                let v = text(call, *var).trim_ascii().to_vec();
                set(call, *var, Value::Str(v));
            }
            Action::Sample { var, distribution } => {
                let v = sample(*distribution, rng);
                set(call, *var, Value::Num(v));
            }
            Action::PlayPcap { media, capture } => {
                execs.push(Exec::Play(*media, Arc::clone(capture)));
            }
            Action::PlayDtmf(digits) => {
                execs.push(Exec::Dtmf(env_value(env, digits, call, idx, msg, fatal)?));
            }
            Action::Command(command) => {
                execs.push(Exec::Command(env_value(
                    env, command, call, idx, msg, fatal,
                )?));
            }
            Action::RtpStream(s) => execs.push(Exec::Stream(s.clone())),
            Action::RtpEcho(op, kind) => execs.push(Exec::Echo(*op, *kind)),
            Action::Lookup { var, file, key } => {
                let key = env_value(env, key, call, idx, msg, fatal)?;
                let found = env
                    .inject
                    .borrow()
                    .as_ref()
                    .and_then(|i| i.files.get(*file))
                    .map(|f| f.lookup(&key));
                match found {
                    Some(Ok(line)) => set(call, *var, Value::Num(line)),
                    Some(Err(e)) => return Err(fatal_error(fatal, e)),
                    None => {}
                }
            }
            Action::Insert { file, value } => {
                let value = env_value(env, value, call, idx, msg, fatal)?;
                if let Some(inj) = env.inject.borrow_mut().as_mut()
                    && let Some(f) = Arc::make_mut(inj).files.get_mut(*file)
                {
                    f.insert(value).map_err(|e| fatal_error(fatal, e))?;
                }
            }
            Action::Replace { file, line, value } => {
                let text = env_value(env, line, call, idx, msg, fatal)?;
                let Some(n) = c_number(&text) else {
                    return Err(fatal_error(
                        fatal,
                        format!(
                            "invalid line number for replace: '{}'",
                            String::from_utf8_lossy(&text)
                        ),
                    ));
                };
                let value = env_value(env, value, call, idx, msg, fatal)?;
                if let Some(inj) = env.inject.borrow_mut().as_mut()
                    && let Some(f) = Arc::make_mut(inj).files.get_mut(*file)
                {
                    f.replace(n as i64, value)
                        .map_err(|e| fatal_error(fatal, e))?;
                }
            }
            Action::SetDest {
                host,
                port,
                protocol,
            } => {
                let host = env_value(env, host, call, idx, msg, fatal)?;
                let port = env_value(env, port, call, idx, msg, fatal)?;
                let protocol = env_value(env, protocol, call, idx, msg, fatal)?;
                let to = set_dest(&host, &port, &protocol, env.cfg)
                    .map_err(|e| fatal_error(fatal, e))?;
                call.dest = Some(to);
            }
            // As SIPp: the actions after it do not run.
            Action::IntCmd(IntCmd::StopCall) => return Err(FailReason::Rejected),
            Action::IntCmd(cmd) => execs.push(Exec::Stop(*cmd)),
            Action::Index(var) => set(call, *var, Value::Num(idx as f64)),
            Action::PauseRestore(until) => {
                let ms = number(call, until);
                // 0 (SIPp's "no pause"), or a time: the call waits until
                // then where its next step would have run.
                call.pause_restore = (ms.is_finite() && ms >= 1.0).then_some(ms as u64);
            }
            Action::CloseCon => execs.push(Exec::CloseCon),
            Action::Assign { var, value } => {
                if let Some(slot) = call.vars.get_mut(usize::from(var.0)) {
                    *slot = Value::Num(*value);
                }
            }
            Action::Arith { op, var, value } => {
                if let Some(slot) = call.vars.get_mut(usize::from(var.0)) {
                    let x = slot.number();
                    *slot = Value::Num(match op {
                        Arith::Add => x + value,
                        Arith::Subtract => x - value,
                        Arith::Multiply => x * value,
                        Arith::Divide => x / value,
                    });
                }
            }
            Action::Test {
                var,
                variable,
                compare,
                value,
            } => {
                let x = call
                    .vars
                    .get(usize::from(variable.0))
                    .map_or(0.0, Value::number);
                let r = match compare {
                    Compare::Equal => x == *value,
                    Compare::NotEqual => x != *value,
                    Compare::Greater => x > *value,
                    Compare::Less => x < *value,
                    Compare::GreaterEqual => x >= *value,
                    Compare::LessEqual => x <= *value,
                };
                if let Some(slot) = call.vars.get_mut(usize::from(var.0)) {
                    *slot = Value::Bool(r);
                }
            }
        }
    }
    Ok(jump)
}

/// The value after `prefix` up to a space or line end, as SIPp's
/// `find_in_sdp`.
fn sdp_value<'a>(sdp: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let at = sdp.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let rest = &sdp[at..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Reads an SDP's connection address (of the media address's family) and
/// its audio, video and image ports into `to`, as SIPp does for pcap play:
/// a stream the SDP does not name keeps what it had.
fn remote_media(sdp: &[u8], ipv6: bool, to: &mut [Option<SocketAddr>; 3]) {
    let c: &[u8] = if ipv6 { b"c=IN IP6 " } else { b"c=IN IP4 " };
    let Some(ip) = sdp_value(sdp, c)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.parse::<IpAddr>().ok())
    else {
        return;
    };
    for kind in MediaKind::ALL {
        let m = [b"m=", kind.name().as_bytes(), b" "].concat();
        if let Some(port) = sdp_value(sdp, &m)
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.parse::<u16>().ok())
            && let Some(slot) = to.get_mut(kind as usize)
        {
            *slot = Some(SocketAddr::new(ip, port));
        }
    }
}

/// The ports our own SDP (the body of a message we sent) gave each
/// stream.
fn own_media_ports(sdp: &[u8], from: &mut [Option<u16>; 3]) {
    for kind in MediaKind::ALL {
        let m = [b"m=", kind.name().as_bytes(), b" "].concat();
        if let Some(port) = sdp_value(sdp, &m)
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.parse::<u16>().ok())
            && let Some(slot) = from.get_mut(kind as usize)
        {
            *slot = Some(port);
        }
    }
}

/// SIPp's `extractSubMessage`: the rest of the line after the
/// `occurrence`-th place `name` appears in `msg` (at the start of a line
/// only with `start_line`; in any case with `case_indep`), leading spaces
/// kept; `None` when it does not appear.
fn header_text<'m>(
    msg: &'m [u8],
    name: &[u8],
    case_indep: bool,
    start_line: bool,
    occurrence: usize,
) -> Option<&'m [u8]> {
    if name.is_empty() {
        return None;
    }
    let mut left = occurrence.max(1);
    let mut at = 0;
    while at + name.len() <= msg.len() {
        let here = &msg[at..at + name.len()];
        let same = if case_indep {
            here.eq_ignore_ascii_case(name)
        } else {
            here == name
        };
        let at_line_start = at == 0 || msg[at - 1] == b'\n';
        if same && (!start_line || at_line_start) {
            if left == 1 {
                let rest = &msg[at + name.len()..];
                let end = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                return Some(&rest[..end]);
            }
            left -= 1;
        }
        at += 1;
    }
    None
}

/// The next entry of a media timer heap (time, call serial, generation)
/// due by `now`: its call serial and generation.
fn pop_due(heap: &mut BinaryHeap<Reverse<(u64, u64, u64)>>, now: u64) -> Option<(u64, u64)> {
    let &Reverse((at, serial, generation)) = heap.peek()?;
    if at > now {
        return None;
    }
    heap.pop();
    Some((serial, generation))
}

/// The peer an extended-3PCC command says it comes from, as SIPp reads
/// it: the first line starting `From:` (case counts), its value up to
/// the first space, tab or line end.
fn command_sender(cmd: &[u8]) -> Option<&[u8]> {
    let line = cmd
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"From:"))?;
    let rest = line.get(5..)?;
    let rest = rest
        .get(rest.iter().position(|&b| b != b' ' && b != b'\t')?..)
        .unwrap_or(&[]);
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    rest.get(..end)
}

/// The Call-ID a 3PCC command names: its `Call-ID:` (or `i:`) line.
/// SIPp's internal command in a twin's message (`internal-cmd: NAME`),
/// as it reads it: after the first `internal-cmd:`, the word past the
/// spaces.
fn internal_command(cmd: &[u8]) -> Option<&[u8]> {
    let at = cmd.windows(13).position(|w| w == b"internal-cmd:")?;
    let rest = cmd.get(at + 13..)?;
    let rest = &rest[rest.iter().position(|b| !matches!(b, b' ' | b'\t'))?..];
    let end = rest.iter().position(u8::is_ascii_whitespace)?;
    Some(&rest[..end])
}

fn command_call_id(cmd: &[u8]) -> Option<&[u8]> {
    cmd.split(|&b| b == b'\n').find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        let name = name.trim_ascii();
        (name.eq_ignore_ascii_case(b"Call-ID") || name.eq_ignore_ascii_case(b"i"))
            .then(|| value[1..].trim_ascii())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_text_is_found_as_sipp_finds_it() {
        let m = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;x=Contact:\r\nContact: <sip:b>\r\ncontact: <sip:c>\r\nl: 0\r\n\r\n";
        let find = |name: &str, ci, sl, occ| {
            header_text(m, name.as_bytes(), ci, sl, occ)
                .map(|t| String::from_utf8_lossy(t).into_owned())
        };
        // Anywhere in the message, the leading space kept, first match.
        assert_eq!(find("Contact:", false, false, 1).as_deref(), Some(""));
        // At a line start only.
        assert_eq!(
            find("Contact:", false, true, 1).as_deref(),
            Some(" <sip:b>")
        );
        // In any case, the second at a line start.
        assert_eq!(find("contact:", true, true, 2).as_deref(), Some(" <sip:c>"));
        assert_eq!(find("Contact:", false, true, 2), None);
        assert_eq!(find("Route:", false, false, 1), None);
    }

    #[test]
    fn a_twin_command_names_its_call_as_sipp_reads_it() {
        assert_eq!(
            command_call_id(b"Call-ID: 1-22@h\r\nContent-Type: x\r\n\r\nv=0"),
            Some(&b"1-22@h"[..])
        );
        assert_eq!(command_call_id(b"X: y\ni: abc \n"), Some(&b"abc"[..]));
        assert_eq!(command_call_id(b"Content-Type: x\r\n"), None);
        assert_eq!(command_call_id(b"Call-ID:\r\n"), None);
    }
}
