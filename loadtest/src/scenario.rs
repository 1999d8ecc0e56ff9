//! SIPp XML scenarios, parsed into steps.
//!
//! The elements and attributes sbc-load runs are listed in
//! `STEP_ATTRS` and the action parsers below; anything else is an error
//! that names the element (and the attribute), never a silent skip.
//! Step indexes count `send`, `recv`, `pause` and `nop` elements, not
//! labels, as SIPp does (`[branch-N]` depends on it).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};
use roxmltree::{Document, Node, ParsingOptions};

use crate::pcap::Capture;
use crate::template::{Keyword, Template, TemplateError, VarTable};

/// A call variable (`$name` in templates, `assign_to` in actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VarId(pub u16);

/// A scenario that cannot run, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: <{element}>: {message}")]
pub struct ScenarioError {
    pub origin: String,
    pub line: u32,
    pub element: String,
    pub message: String,
}

/// The number of response-time counters (`rtd="1"` .. `rtd="5"`).
pub const RTD_COUNT: usize = 5;

#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
    /// Variable names; a [`VarId`] indexes this.
    pub vars: Vec<String>,
    /// Which response-time counters the scenario uses.
    pub rtds_used: [bool; RTD_COUNT],
    /// Variables declared in `<Global variables="...">`: shared by the
    /// calls (of one sbc-load thread), set with `-set`.
    pub globals: Vec<VarId>,
    /// Variables declared in `<User variables="...">`: with `-users`,
    /// each user keeps them from one of its calls to the next; without,
    /// they are each call's own.
    pub user_vars: Vec<VarId>,
    /// Transaction names (`start_txn`, `response_txn`, `ack_txn`).
    pub txns: Vec<String>,
    /// Names of the `counter` attributes, in order of first use.
    pub counters: Vec<String>,
    /// `<ResponseTimeRepartition value="10, 20, ...">` and
    /// `<CallLengthRepartition>`: bucket borders (ms, ascending) of the
    /// statistics file (`-trace_stat`).
    pub response_time_repartition: Vec<u64>,
    pub call_length_repartition: Vec<u64>,
    /// Some `<send>` has a `timeout` (SIPp's send timeout).
    pub send_timeouts: bool,
    /// SIPp's `_unexp.main` label: where an unexpected message goes.
    pub unexpected_jump: Option<UnexpectedJump>,
    /// `<init>`: `<nop>`s run once when the run starts (their jumps go to
    /// the stanza's own labels), to set `<Global>` variables.
    pub init: Vec<Step>,
    /// `<DefaultMessage id="...">`: the scenario's own text for a message
    /// SIPp sends by itself.
    pub default_messages: Vec<(DefaultMessage, Template)>,
}

/// The messages SIPp sends by itself, which `<DefaultMessage>` rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultMessage {
    /// A failed caller's CANCEL of its unanswered INVITE.
    Cancel,
    /// A failed caller's ACK of a final answer.
    Ack,
    /// SIPp's second ACK form (SIPp itself sends none).
    Ack2,
    /// A failed caller's BYE of an answered call.
    Bye,
    /// The 200 to an unexpected BYE or CANCEL (the `bye` behaviour).
    Ok200,
    /// Told to the 3PCC twin when a call aborts on an unexpected message.
    ThreePccAbort,
}

impl DefaultMessage {
    fn parse(id: &str) -> Option<Self> {
        Some(match id {
            "cancel" => DefaultMessage::Cancel,
            "ack" => DefaultMessage::Ack,
            "ack2" => DefaultMessage::Ack2,
            "bye" => DefaultMessage::Bye,
            "200" => DefaultMessage::Ok200,
            "3pcc_abort" => DefaultMessage::ThreePccAbort,
            _ => return None,
        })
    }
}

/// The label `_unexp.main`: a call that gets a message it does not
/// expect jumps there (the message then goes to the steps that follow),
/// keeping where it was in `_unexp.retaddr` and the end of the pause it
/// was in (ms of the run's clock, 0: none) in `_unexp.pausedaddr`, when
/// the scenario names those variables. A call already there (retaddr not
/// 0) handles the message as unexpected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnexpectedJump {
    pub step: usize,
    pub retaddr: Option<VarId>,
    pub pausedaddr: Option<VarId>,
}

/// What a received message must be to match a `<recv>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Response(u16),
    Request(Vec<u8>),
    /// `regexp_match="true"`: a pattern (unanchored, as SIPp's regexec)
    /// the status code, written in decimal, must match.
    ResponseLike(Pattern),
    /// `regexp_match="true"`: a pattern the method must match.
    RequestLike(Pattern),
}

/// A `regexp_match` pattern (compared by its text).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::bytes::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl Expect {
    /// Whether a response with this status code matches.
    pub fn matches_status(&self, code: u16) -> bool {
        match self {
            Expect::Response(c) => *c == code,
            Expect::ResponseLike(p) => p.0.is_match(itoa::Buffer::new().format(code).as_bytes()),
            _ => false,
        }
    }

    /// Whether a request with this method matches (SIPp reads at most
    /// 64 bytes of it).
    pub fn matches_method(&self, method: &[u8]) -> bool {
        match self {
            Expect::Request(m) => m.as_slice() == method,
            Expect::RequestLike(p) => p.0.is_match(&method[..method.len().min(64)]),
            _ => false,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Response(c) => write!(f, "{c}"),
            Expect::Request(m) => f.write_str(&String::from_utf8_lossy(m)),
            Expect::ResponseLike(p) | Expect::RequestLike(p) => f.write_str(p.0.as_str()),
        }
    }
}

#[derive(Debug)]
pub struct Recv {
    pub expect: Expect,
    pub optional: bool,
    /// `optional="global"`: a message that matches it later, from any
    /// step after it, is still taken here (its actions run; the call
    /// moves only if the step jumps).
    pub optional_global: bool,
    /// Remember Record-Route and Contact for `[routes]` and `[next_url]`.
    pub rrs: bool,
    /// `ignoresdp="true"`: while the call waits here, received SDP does
    /// not change where its media goes (nor its SRTP keys).
    pub ignore_sdp: bool,
    /// SIPp's `advance_state="false"` (an optional step only): a message
    /// taken here runs its actions and leaves the call as it stood (no
    /// last message, no move).
    pub advance_state: bool,
    pub timeout_ms: Option<u64>,
    /// Step to go to on timeout (instead of failing the call).
    pub on_timeout: Option<usize>,
    /// `response_txn`: the transaction (index into
    /// [`Scenario::txns`]) whose branch the response must carry.
    pub response_txn: Option<u16>,
    /// For a response without `response_txn`: the methods of the requests
    /// sent before this step in the file, run together as SIPp keeps
    /// them; the response's CSeq method must appear in it.
    pub methods: Vec<u8>,
}

#[derive(Debug)]
pub enum StepKind {
    Send {
        msg: Template,
        /// T1 of this message's retransmissions (UDP), when asked for.
        retrans_ms: Option<u64>,
    },
    Recv(Recv),
    /// `<pause>`, or `<timewait>` (the last step: a pause during which
    /// the call still answers retransmissions, and that counts as a
    /// success however the call ends).
    Pause {
        length: PauseLength,
        timewait: bool,
    },
    Nop,
    /// `<sendCmd>`: a message to the twin sbc-load or sipp of a 3PCC
    /// scenario (`-3pcc`), or in extended mode (`-master`/`-slave`) to
    /// the peer `dest` names; it names the call by its `Call-ID:` line.
    SendCmd {
        msg: Template,
        dest: Option<Box<str>>,
    },
    /// `<recvCmd>`: wait for the twin's message for this call; in
    /// extended mode, from the peer `src` names (its `From:` line).
    RecvCmd {
        src: Option<Box<str>>,
    },
}

/// How long a `<pause>` lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PauseLength {
    /// `-d`.
    Default,
    Fixed {
        ms: u64,
    },
    /// A draw (milliseconds) for each call.
    Drawn(Distribution),
    /// The number a call variable holds (milliseconds).
    Variable(VarId),
}

impl PauseLength {
    /// A typical length, ms (the mean of a distribution), with `-d` for
    /// the default: for sizing, not for running.
    pub fn typical_ms(&self, default_ms: u64) -> u64 {
        let ms = match *self {
            PauseLength::Default => return default_ms,
            PauseLength::Fixed { ms } => return ms,
            PauseLength::Variable(_) => return default_ms,
            PauseLength::Drawn(d) => d.mean(),
        };
        if ms.is_finite() && ms > 0.0 {
            ms as u64
        } else {
            0
        }
    }
}

impl fmt::Display for PauseLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PauseLength::Default => write!(f, "-d"),
            PauseLength::Fixed { ms } => write!(f, "{ms} ms"),
            PauseLength::Drawn(d) => write!(f, "{d:?}"),
            PauseLength::Variable(_) => write!(f, "variable"),
        }
    }
}

#[derive(Debug)]
pub struct Step {
    pub kind: StepKind,
    pub actions: Vec<Action>,
    /// Jump target (a step index; `steps.len()` ends the call).
    pub next: Option<usize>,
    /// Jump only when this variable is true.
    pub test: Option<VarId>,
    /// Jump with this probability.
    pub chance: Option<f64>,
    /// Response-time counter started here (0-based).
    pub start_rtd: Option<u8>,
    /// Response-time counter stopped here (0-based).
    pub rtd: Option<u8>,
    pub repeat_rtd: bool,
    /// `lost`: the share (percent) of these messages dropped, sent or
    /// received, to exercise retransmissions.
    pub lost: Option<f64>,
    /// `counter`: the scenario counter this step counts under.
    pub counter: Option<u16>,
    /// `hide`: left out of the counts file (`-trace_counts`).
    pub hide: bool,
    /// `condexec` (with `condexec_inverse`): the step runs only when
    /// this variable is set (not set), else the call goes past it.
    pub condexec: Option<(VarId, bool)>,
    /// `start_txn` on a request `<send>`: the transaction it starts.
    pub start_txn: Option<u16>,
    /// `ack_txn` on an ACK `<send>`: the INVITE transaction it ends.
    pub ack_txn: Option<u16>,
}

/// Where an `ereg` looks.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchIn {
    Msg,
    Body,
    /// As SIPp: the rest of the line after the `occurrence`-th place the
    /// text `name` (as written, colon included) appears in the message,
    /// leading spaces kept; `start_line`: only at the start of a line;
    /// `case_indep`: in any case.
    Hdr {
        name: Vec<u8>,
        case_indep: bool,
        start_line: bool,
        occurrence: usize,
    },
    /// A call variable's string.
    Var(VarId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Subtract,
    Multiply,
    Divide,
}

#[derive(Debug)]
pub enum Action {
    Ereg {
        regex: Regex,
        search_in: SearchIn,
        check_it: bool,
        check_it_inverse: bool,
        /// First: the whole match; then the groups.
        assign_to: Vec<VarId>,
    },
    AssignStr {
        var: VarId,
        value: Template,
    },
    Assign {
        var: VarId,
        value: f64,
    },
    Arith {
        op: Arith,
        var: VarId,
        value: f64,
    },
    Test {
        var: VarId,
        variable: VarId,
        compare: Compare,
        value: f64,
    },
    /// `verifyauth`: whether the last message's Authorization (or
    /// Proxy-Authorization) answers its digest with these credentials.
    VerifyAuth {
        var: VarId,
        username: Template,
        password: Template,
    },
    /// `error`: as in SIPp, a fatal error: the message goes to stderr and
    /// the whole run stops (exit status 255).
    Error {
        message: Template,
    },
    /// `log`: the message, rendered, to the `-trace_logs` file.
    Log {
        message: Template,
    },
    /// `warning`: the message, rendered, to standard error.
    Warning {
        message: Template,
    },
    /// `strcmp`: `var` = the byte order of two strings (negative, 0 or
    /// positive, as C's strcmp), the second a variable or a value.
    Strcmp {
        var: VarId,
        variable: VarId,
        other: StrOperand,
    },
    /// `jump`: go on at this step (a number, or a variable's number).
    Jump(NumOperand),
    /// `gettimeofday`: seconds and microseconds since the epoch.
    GetTimeOfDay {
        seconds: VarId,
        micros: VarId,
    },
    /// `urlencode` / `urldecode`, in place.
    UrlEncode {
        var: VarId,
        decode: bool,
    },
    /// `todouble`: `var` = the number `variable` holds as text.
    ToDouble {
        var: VarId,
        variable: VarId,
    },
    /// `trim`: white space off both ends, in place.
    Trim {
        var: VarId,
    },
    /// `sample`: a draw from a distribution.
    Sample {
        var: VarId,
        distribution: Distribution,
    },
    /// `exec play_pcap_audio|video|image`: replay a capture's datagrams,
    /// paced as captured, from the call's media port of that kind to the
    /// peer's (from the last SDP received); it replaces the call's
    /// playback in progress and stops when the call ends.
    PlayPcap {
        media: MediaKind,
        capture: Arc<Capture>,
    },
    /// `exec command`: a shell command, started and not waited for.
    Command(Template),
    /// `exec play_dtmf="DIGITS[,MS]"`: RFC 4733 events played on the
    /// audio stream as SIPp makes them (it replaces a playback).
    PlayDtmf(Template),
    /// `exec rtp_stream`: RTP made from a file's bytes or a check
    /// pattern, or pausing and resuming it.
    RtpStream(RtpStream),
    /// `exec rtp_echo`: sending back the RTP of one kind that reaches
    /// the call's port (SRTP with the SDP's keys), or stopping.
    RtpEcho(EchoOp, MediaKind),
    /// `exec int_cmd`.
    IntCmd(IntCmd),
    /// `index assign_to`: the step's index.
    Index(VarId),
    /// `pauserestore`: the call pauses until this time (ms of the run's
    /// clock), then goes past the step it is at.
    PauseRestore(NumOperand),
    /// `closecon`: the call's TCP or TLS connection closes.
    CloseCon,
    /// `lookup`: the line of an indexed `-inf` file whose key field is
    /// `key` (-1: none).
    Lookup {
        var: VarId,
        file: usize,
        key: Template,
    },
    /// `insert`: a new last line of an `-inf` file (in memory).
    Insert {
        file: usize,
        value: Template,
    },
    /// `replace`: line `line` of an `-inf` file becomes `value`.
    Replace {
        file: usize,
        line: Template,
        value: Template,
    },
    /// `setdest`: the call's next messages go to this host and port.
    SetDest {
        host: Template,
        port: Template,
        protocol: Template,
    },
}

/// The stream a capture is played on (its `m=` line in SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio = 0,
    Video = 1,
    Image = 2,
}

impl MediaKind {
    pub const ALL: [MediaKind; 3] = [MediaKind::Audio, MediaKind::Video, MediaKind::Image];

    /// The media name in SDP (`m=audio ...`).
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Image => "image",
        }
    }
}

/// `exec rtp_stream`.
#[derive(Debug, Clone)]
pub enum RtpStream {
    /// Stream the file or pattern (from the call's port of its kind to
    /// the peer's address of that kind), replacing the call's stream of
    /// that kind in progress.
    Play(Arc<StreamFile>),
    /// `pause`, `resume`: every stream of the call; `pauseapattern` and
    /// the like: the one of that kind.
    Pause(Option<MediaKind>),
    Resume(Option<MediaKind>),
}

/// `exec rtp_echo`: what it does to the call's echo of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoOp {
    /// Send back what arrives, with the keys of the SDP exchanged last.
    Start,
    /// Take the keys of the SDP exchanged since.
    Update,
    Stop,
}

/// SIPp's six RTP check patterns: every payload byte is the pattern's.
pub const PATTERNS: [u8; 6] = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

/// An audio file (or a check pattern) streamed as RTP, as SIPp's
/// rtpstream does: the raw bytes in packets of `bytes_per_packet` every
/// `ms_per_packet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFile {
    pub data: Vec<u8>,
    /// Times the file is played; -1 (or any negative): until the call
    /// ends.
    pub loops: i64,
    pub payload_type: u8,
    pub bytes_per_packet: usize,
    pub ticks_per_packet: u32,
    pub ms_per_packet: u64,
    /// The call's stream it is (audio, or video for `vpattern`).
    pub kind: MediaKind,
    /// SIPp's RTP check: the pattern's id (1 to 6); what comes back to
    /// the stream's port is checked against it.
    pub pattern: Option<u8>,
}

/// What SIPp's rtpstream knows of a payload type: packet size and
/// pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub bytes_per_packet: usize,
    pub ticks_per_packet: u32,
    pub ms_per_packet: u64,
    pub video: bool,
}

impl Codec {
    /// SIPp's table; `name` is required for a type it does not know
    /// by number and must match one it does.
    pub fn of(payload_type: i64, name: &str) -> Result<Codec, String> {
        let codec = |pt, bytes, ticks, ms, video| Codec {
            payload_type: pt,
            bytes_per_packet: bytes,
            ticks_per_packet: ticks,
            ms_per_packet: ms,
            video,
        };
        let (default_name, c) = match payload_type {
            0 => ("PCMU/8000", codec(0, 160, 160, 20, false)),
            8 => ("PCMA/8000", codec(8, 160, 160, 20, false)),
            9 => ("G722/8000", codec(9, 160, 160, 20, false)),
            // Comfort noise: one byte every 150 ms, whatever its name.
            13 => return Ok(codec(13, 1, 1200, 150, false)),
            18 => ("G729/8000", codec(18, 20, 160, 20, false)),
            pt @ 96..=127 => {
                let pt = pt as u8;
                return match name {
                    "iLBC/8000" => Ok(codec(pt, 50, 240, 30, false)),
                    // SIPp's arbitrary H.264 packets.
                    "H264/90000" => Ok(codec(pt, 1280, 1280, 160, true)),
                    "" => Err(format!(
                        "payload type {pt} needs its name (iLBC/8000 or H264/90000)"
                    )),
                    other => Err(format!(
                        "payload type {pt} is {other}, which sbc-load cannot pace (iLBC/8000, H264/90000)"
                    )),
                };
            }
            other => {
                return Err(format!(
                    "payload type {other} is not supported by sbc-load (0, 8, 9, 13, 18; 96-127 as iLBC/8000 or H264/90000)"
                ));
            }
        };
        if !name.is_empty() && !name.eq_ignore_ascii_case(default_name) {
            return Err(format!(
                "payload type {} is {default_name}, not {name}",
                c.payload_type
            ));
        }
        Ok(c)
    }
}

/// Where a WAV file's audio starts (0: not a WAV file), as SIPp finds
/// it: after the `data` chunk's header.
fn wav_header_len(data: &[u8]) -> usize {
    if data.len() < 42 || !data.starts_with(b"RIFF") {
        return 0;
    }
    if data.get(8..12) != Some(b"WAVE") {
        return 8;
    }
    let mut at: usize = 12;
    while let Some(chunk) = at.checked_add(8).and_then(|end| data.get(at..end)) {
        let size = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]) as usize;
        at += 8;
        if chunk.starts_with(b"data") {
            return at;
        }
        at = at.saturating_add(size);
    }
    at.min(data.len())
}

/// `exec int_cmd`: what SIPp's internal commands do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntCmd {
    /// `stop_call`: in a `<recv>`, the call fails here as rejected (SIPp's
    /// `rejectCall`); elsewhere the actions after it are skipped.
    StopCall,
    /// `stop_gracefully`: no new calls; the open ones finish.
    StopGracefully,
    /// `stop_now`: the run ends at once.
    StopNow,
}

/// The second string of a `strcmp`.
#[derive(Debug, Clone)]
pub enum StrOperand {
    Variable(VarId),
    Value(Vec<u8>),
}

/// A number given as a value or held by a variable.
#[derive(Debug, Clone, Copy)]
pub enum NumOperand {
    Value(f64),
    Variable(VarId),
}

pub use crate::distribution::Distribution;

struct Vars<'a>(&'a mut Vec<String>, &'a LoadContext);

impl VarTable for Vars<'_> {
    fn var(&mut self, name: &str) -> VarId {
        if let Some(i) = self.0.iter().position(|v| v == name) {
            return VarId(i as u16);
        }
        self.0.push(name.to_string());
        VarId(u16::try_from(self.0.len() - 1).unwrap_or(u16::MAX))
    }

    fn generic(&self, name: &str) -> Option<&str> {
        // As SIPp: the last -key of a name wins.
        self.1
            .keys
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn inf_file(&self, name: Option<&str>) -> Result<usize, String> {
        match name {
            // Checked when the run starts: [fieldN] needs an -inf.
            None => Ok(0),
            Some(n) => self.1.inf.iter().position(|f| f == n).ok_or_else(|| {
                format!("no -inf file is named {n} (files are named by their base name)")
            }),
        }
    }
}

/// What the command line adds to a scenario's meaning.
#[derive(Debug, Clone, Default)]
pub struct LoadContext {
    /// `-key NAME VALUE`: generic keywords, `[NAME]` in messages.
    pub keys: Vec<(String, String)>,
    /// The `-inf` files' base names, the first one first (`[fieldN]`
    /// without `file=` reads it).
    pub inf: Vec<String>,
    /// `-rtp_payload`: the payload type of an `rtp_stream` that names
    /// none (SIPp's default 0, PCMU).
    pub rtp_payload: u8,
}

/// Attributes every step element accepts (display-only ones included).
const STEP_COMMON: &[&str] = &[
    "start_rtd",
    "rtd",
    "repeat_rtd",
    "crlf",
    "next",
    "test",
    "chance",
    "display",
    // Keep steps off SIPp's screen; sbc-load has none.
    "hide",
    "hiderest",
    "condexec",
    "condexec_inverse",
    "counter",
];

/// The parameters of every distribution (`<pause>`, `<sample>`).
const DISTRIBUTION_PARAMS: &[&str] = &[
    "value", "min", "max", "mean", "stdev", "lambda", "k", "x_m", "shape", "scale", "location",
    "theta", "p", "n",
];

/// Attributes each step element accepts besides [`STEP_COMMON`] (and,
/// for a pause, [`DISTRIBUTION_PARAMS`]).
const STEP_ATTRS: &[(&str, &[&str])] = &[
    (
        "send",
        &["retrans", "lost", "start_txn", "ack_txn", "timeout"],
    ),
    (
        "recv",
        &[
            "response",
            "request",
            "optional",
            "lost",
            // SIPp keeps a message received with auth="true" for the
            // next [authentication]; sbc-load always answers from the
            // last message received, so the attribute changes nothing.
            "auth",
            "rrs",
            "timeout",
            "ontimeout",
            "regexp_match",
            "response_txn",
            "ignoresdp",
            "advance_state",
        ],
    ),
    (
        "pause",
        &[
            "milliseconds",
            "variable",
            "distribution",
            "sanity_check",
            // SIPp's older forms name the distribution by an attribute.
            "normal",
            "exponential",
            "lognormal",
            "weibull",
            "pareto",
            "gamma",
        ],
    ),
    ("sendCmd", &["dest"]),
    ("recvCmd", &["src"]),
    ("nop", &[]),
];

/// Elements that configure SIPp's own screens and files; they change no
/// message and are accepted (sbc-load reports percentiles instead).
const DISPLAY_ONLY: &[&str] = &["Reference"];

struct Parser<'d> {
    origin: String,
    ctx: &'d LoadContext,
    doc: &'d Document<'d>,
    vars: Vec<String>,
    labels: HashMap<String, usize>,
    /// (step index, label, attribute, line) to resolve at the end.
    jumps: Vec<(usize, String, &'static str, u32)>,
    counters: Vec<String>,
    /// Transactions: name, and how many starts, responses and ACKs name
    /// it, and whether its request is an INVITE.
    txns: Vec<(String, [u32; 3], bool)>,
    /// The `<send>` step's (start_txn, ack_txn), taken by `step`.
    pending_txn: Option<(Option<u16>, Option<u16>)>,
    /// The methods of the requests sent so far in the file (not those
    /// that start or acknowledge a named transaction), run together.
    methods: Vec<u8>,
    /// A `<send timeout>` was given.
    send_timeouts: bool,
    /// `hiderest`: whether the steps from here on are hidden by default.
    hide_default: bool,
}

impl Parser<'_> {
    fn line(&self, node: Node<'_, '_>) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }

    fn err(&self, node: Node<'_, '_>, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            origin: self.origin.clone(),
            line: self.line(node),
            element: node.tag_name().name().to_string(),
            message: message.into(),
        }
    }

    fn var(&mut self, name: &str) -> VarId {
        Vars(&mut self.vars, self.ctx).var(name)
    }

    fn bool_attr(&self, node: Node<'_, '_>, name: &str) -> Result<bool, ScenarioError> {
        match node.attribute(name) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.err(node, format!("{name}=\"{v}\": expected true or false"))),
        }
    }

    fn u64_attr(&self, node: Node<'_, '_>, name: &str) -> Result<Option<u64>, ScenarioError> {
        node.attribute(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| self.err(node, format!("{name}=\"{v}\": expected a whole number")))
            })
            .transpose()
    }

    fn f64_attr(&self, node: Node<'_, '_>, name: &str) -> Result<f64, ScenarioError> {
        let Some(v) = node.attribute(name) else {
            return Err(self.err(node, format!("the {name} attribute is required")));
        };
        v.trim()
            .parse::<f64>()
            .map_err(|_| self.err(node, format!("{name}=\"{v}\": expected a number")))
    }

    fn rtd_attr(&self, node: Node<'_, '_>, name: &str) -> Result<Option<u8>, ScenarioError> {
        match node.attribute(name) {
            None | Some("false") => Ok(None),
            Some("true") => Ok(Some(0)),
            Some(v) => match v.parse::<u8>() {
                Ok(n @ 1..=5) => Ok(Some(n - 1)),
                _ => Err(self.err(
                    node,
                    format!("{name}=\"{v}\": expected true or a counter 1 to 5"),
                )),
            },
        }
    }

    fn check_attrs(&self, node: Node<'_, '_>, allowed: &[&str]) -> Result<(), ScenarioError> {
        for a in node.attributes() {
            if !allowed.contains(&a.name()) {
                return Err(self.err(
                    node,
                    format!("attribute {} is not supported by sbc-load", a.name()),
                ));
            }
        }
        Ok(())
    }

    fn template_err(&self, node: Node<'_, '_>, e: TemplateError) -> ScenarioError {
        self.err(node, e.to_string())
    }

    /// The message template a `<send>` or `<sendCmd>` holds as text.
    fn message(&mut self, node: Node<'_, '_>) -> Result<Template, ScenarioError> {
        let text: String = node
            .children()
            .filter(|c| c.is_text())
            .filter_map(|c| c.text())
            .collect();
        Template::compile(&text, &mut Vars(&mut self.vars, self.ctx))
            .map_err(|e| self.template_err(node, e))
    }

    fn step(&mut self, node: Node<'_, '_>, index: usize) -> Result<Step, ScenarioError> {
        let name = node.tag_name().name();
        // <timewait> takes what <pause> takes.
        let key = if name == "timewait" { "pause" } else { name };
        let own = STEP_ATTRS
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, a)| *a)
            .unwrap_or(&[]);
        let params = if key == "pause" {
            DISTRIBUTION_PARAMS
        } else {
            &[]
        };
        let allowed: Vec<&str> = own
            .iter()
            .chain(STEP_COMMON)
            .chain(params)
            .copied()
            .collect();
        self.check_attrs(node, &allowed)?;
        let kind = match name {
            "send" => {
                // SIPp's send timeout: for a message held back by
                // congestion, which sbc-load never holds (the report says
                // so).
                self.send_timeouts |= self.u64_attr(node, "timeout")?.is_some();
                let msg = self.message(node)?;
                self.send_txn(node, &msg, index)?;
                StepKind::Send {
                    msg,
                    retrans_ms: self.u64_attr(node, "retrans")?,
                }
            }
            "recv" => {
                let like = node.attribute("regexp_match") == Some("true");
                let pattern = |p: &Parser<'_>, text: &str| {
                    Regex::new(text).map(Pattern).map_err(|e| {
                        p.err(
                            node,
                            format!("regexp_match: \"{text}\" is not a regular expression: {e}"),
                        )
                    })
                };
                let expect = match (node.attribute("response"), node.attribute("request")) {
                    (Some(code), None) if like => Expect::ResponseLike(pattern(self, code)?),
                    (None, Some(method)) if like => Expect::RequestLike(pattern(self, method)?),
                    (Some(code), None) => match code.trim().parse::<u16>() {
                        Ok(c @ 100..=699) => Expect::Response(c),
                        _ => {
                            return Err(self.err(
                                node,
                                format!("response=\"{code}\": expected a status code"),
                            ));
                        }
                    },
                    (None, Some(method)) if !method.trim().is_empty() => {
                        Expect::Request(method.trim().as_bytes().to_vec())
                    }
                    _ => {
                        return Err(self.err(node, "needs exactly one of response= and request="));
                    }
                };
                let (optional, optional_global) = match node.attribute("optional") {
                    None | Some("false") => (false, false),
                    Some("true") => (true, false),
                    Some("global") => (true, true),
                    Some(v) => {
                        return Err(
                            self.err(node, format!("optional=\"{v}\": true, false or global"))
                        );
                    }
                };
                if let Some(label) = node.attribute("ontimeout") {
                    self.jumps
                        .push((index, label.to_string(), "ontimeout", self.line(node)));
                }
                let is_response = matches!(expect, Expect::Response(_) | Expect::ResponseLike(_));
                if !is_response && node.attribute("response_txn").is_some() {
                    return Err(self.err(node, "response_txn is only for a <recv response>"));
                }
                let response_txn = self.txn(node, "response_txn")?;
                if let Some(x) = response_txn.and_then(|t| self.txns.get_mut(usize::from(t))) {
                    x.1[1] += 1;
                }
                StepKind::Recv(Recv {
                    expect,
                    optional,
                    optional_global,
                    rrs: self.bool_attr(node, "rrs")?,
                    ignore_sdp: self.bool_attr(node, "ignoresdp")?,
                    advance_state: match node.attribute("advance_state") {
                        None => true,
                        Some(_) if !optional => {
                            return Err(self
                                .err(node, "advance_state is for optional messages only (SIPp)"));
                        }
                        Some(_) => self.bool_attr(node, "advance_state")?,
                    },
                    timeout_ms: self.u64_attr(node, "timeout")?,
                    on_timeout: None,
                    response_txn,
                    methods: if is_response {
                        self.methods.clone()
                    } else {
                        Vec::new()
                    },
                })
            }
            "pause" | "timewait" => {
                let length = if let Some(v) = node.attribute("variable") {
                    PauseLength::Variable(self.var(v))
                } else if let Some(d) = distribution_name(node, true) {
                    let d = self.distribution(node, d)?;
                    // As SIPp: a pause whose 99th percentile passes
                    // INT_MAX ms is refused unless sanity_check="false".
                    let p99 = d.percentile_99();
                    let sanity = node.attribute("sanity_check").is_none()
                        || self.bool_attr(node, "sanity_check")?;
                    // (a NaN percentile fails too)
                    if sanity && (p99.is_nan() || p99 > f64::from(i32::MAX)) {
                        return Err(self.err(
                            node,
                            format!(
                                "the {} distribution has a 99th percentile of {p99:.0} ms, which is larger than INT_MAX: choose other parameters (or sanity_check=\"false\")",
                                d.name()
                            ),
                        ));
                    }
                    PauseLength::Drawn(d)
                } else {
                    match self.u64_attr(node, "milliseconds")? {
                        Some(ms) => PauseLength::Fixed { ms },
                        None => PauseLength::Default,
                    }
                };
                self.bool_attr(node, "sanity_check")?;
                StepKind::Pause {
                    length,
                    timewait: name == "timewait",
                }
            }
            "nop" => StepKind::Nop,
            "sendCmd" => StepKind::SendCmd {
                msg: self.message(node)?,
                dest: node.attribute("dest").map(|d| d.trim().into()),
            },
            "recvCmd" => StepKind::RecvCmd {
                src: node.attribute("src").map(|d| d.trim().into()),
            },
            _ => return Err(self.err(node, "this element is not supported by sbc-load")),
        };
        if name != "send"
            && name != "sendCmd"
            && let Some(c) = node.children().find(|c| c.is_text())
            && c.text().is_some_and(|t| !t.trim().is_empty())
        {
            return Err(self.err(node, "unexpected text inside the element"));
        }
        if let Some(label) = node.attribute("next") {
            self.jumps
                .push((index, label.to_string(), "next", self.line(node)));
        }
        let test = node.attribute("test").map(|v| self.var(v));
        let chance = match node.attribute("chance") {
            None => None,
            Some(_) => {
                let c = self.f64_attr(node, "chance")?;
                if !(0.0..=1.0).contains(&c) {
                    return Err(self.err(node, "chance must be between 0 and 1"));
                }
                Some(c)
            }
        };
        let (start_txn, ack_txn) = self.pending_txn.take().unwrap_or((None, None));
        let mut actions = Vec::new();
        for child in node.children().filter(|c| c.is_element()) {
            match child.tag_name().name() {
                "action" => {
                    self.check_attrs(child, &[])?;
                    for a in child.children().filter(|c| c.is_element()) {
                        actions.push(self.action(a)?);
                    }
                }
                _ => return Err(self.err(child, "this element is not supported by sbc-load")),
            }
        }
        Ok(Step {
            kind,
            actions,
            next: None,
            test,
            chance,
            start_rtd: self.rtd_attr(node, "start_rtd")?,
            rtd: self.rtd_attr(node, "rtd")?,
            repeat_rtd: self.bool_attr(node, "repeat_rtd")?,
            lost: match node.attribute("lost") {
                None => None,
                Some(_) => {
                    let pct = self.f64_attr(node, "lost")?;
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(self.err(node, "lost is a percentage, 0 to 100"));
                    }
                    Some(pct)
                }
            },
            hide: {
                // SIPp: hiderest sets the default of this step and those
                // after it, hide this one's.
                if node.attribute("hiderest").is_some() {
                    self.hide_default = self.bool_attr(node, "hiderest")?;
                }
                match node.attribute("hide") {
                    Some(_) => self.bool_attr(node, "hide")?,
                    None => self.hide_default,
                }
            },
            condexec: match node.attribute("condexec") {
                Some(v) => Some((self.var(v), self.bool_attr(node, "condexec_inverse")?)),
                None => None,
            },
            start_txn,
            ack_txn,
            counter: node.attribute("counter").map(|c| {
                let i = self
                    .counters
                    .iter()
                    .position(|n| n == c)
                    .unwrap_or_else(|| {
                        self.counters.push(c.to_string());
                        self.counters.len() - 1
                    });
                u16::try_from(i).unwrap_or(u16::MAX)
            }),
        })
    }

    fn assign_to(&mut self, node: Node<'_, '_>) -> Result<Vec<VarId>, ScenarioError> {
        let Some(list) = node.attribute("assign_to") else {
            return Err(self.err(node, "the assign_to attribute is required"));
        };
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(self.err(node, format!("assign_to=\"{list}\": empty variable name")));
        }
        Ok(names.into_iter().map(|n| self.var(n)).collect())
    }

    /// A number from `value=` or the variable named by `variable=`.
    fn num_operand(&mut self, node: Node<'_, '_>) -> Result<NumOperand, ScenarioError> {
        match (node.attribute("value"), node.attribute("variable")) {
            (Some(_), None) => Ok(NumOperand::Value(self.f64_attr(node, "value")?)),
            (None, Some(v)) => Ok(NumOperand::Variable(self.var(v))),
            _ => Err(self.err(node, "needs exactly one of value= and variable=")),
        }
    }

    fn one_var(&mut self, node: Node<'_, '_>) -> Result<VarId, ScenarioError> {
        let vars = self.assign_to(node)?;
        match vars.as_slice() {
            [v] => Ok(*v),
            _ => Err(self.err(node, "assign_to must name one variable")),
        }
    }

    /// A transaction named by `attr` (declared at its first use).
    fn txn(&mut self, node: Node<'_, '_>, attr: &str) -> Result<Option<u16>, ScenarioError> {
        let Some(name) = node.attribute(attr) else {
            return Ok(None);
        };
        if name.is_empty() || name.contains(['$', ',']) {
            return Err(self.err(
                node,
                format!("{attr}=\"{name}\": a transaction name has no $ or ,"),
            ));
        }
        let i = match self.txns.iter().position(|(n, ..)| n == name) {
            Some(i) => i,
            None => {
                self.txns.push((name.to_string(), [0; 3], false));
                self.txns.len() - 1
            }
        };
        Ok(u16::try_from(i).ok())
    }

    /// A `<send>`'s `start_txn`/`ack_txn`, as SIPp allows them; a request
    /// sent outside named transactions joins the method list.
    fn send_txn(
        &mut self,
        node: Node<'_, '_>,
        msg: &Template,
        _index: usize,
    ) -> Result<(), ScenarioError> {
        let start = self.txn(node, "start_txn")?;
        let ack = self.txn(node, "ack_txn")?;
        let method = msg.method();
        if let Some(t) = start {
            match method {
                None => return Err(self.err(node, "Responses can not start a transaction")),
                Some(b"ACK") => {
                    return Err(self.err(node, "An ACK message can not start a transaction!"));
                }
                Some(m) => {
                    let invite = m == b"INVITE";
                    if let Some(x) = self.txns.get_mut(usize::from(t)) {
                        x.1[0] += 1;
                        x.2 |= invite;
                    }
                }
            }
        }
        if let Some(t) = ack {
            if method != Some(b"ACK") {
                return Err(self.err(node, "ack_txn is only for an ACK"));
            }
            if let Some(x) = self.txns.get_mut(usize::from(t)) {
                x.1[2] += 1;
            }
        }
        if start.is_none()
            && ack.is_none()
            && let Some(m) = method
        {
            self.methods.extend_from_slice(m);
        }
        self.pending_txn = Some((start, ack));
        Ok(())
    }

    /// Every transaction is started and answered; an INVITE one is
    /// acknowledged, another is not (SIPp's `validate_txn_usage`).
    fn check_txns(&self, root: Node<'_, '_>) -> Result<(), ScenarioError> {
        for (name, [starts, responses, acks], invite) in &self.txns {
            let problem = if *starts == 0 {
                "is never started (start_txn)"
            } else if *responses == 0 {
                "has no response (response_txn)"
            } else if *invite && *acks == 0 {
                "is an INVITE transaction with no ack_txn"
            } else if !*invite && *acks > 0 {
                "is not an INVITE transaction but has an ack_txn"
            } else {
                continue;
            };
            return Err(self.err(root, format!("transaction \"{name}\" {problem}")));
        }
        Ok(())
    }

    /// A required attribute holding a value with keywords.
    fn value_attr(&mut self, node: Node<'_, '_>, name: &str) -> Result<Template, ScenarioError> {
        let Some(v) = node.attribute(name) else {
            return Err(self.err(node, format!("the {name} attribute is required")));
        };
        Template::compile_value(v, &mut Vars(&mut self.vars, self.ctx))
            .map_err(|e| self.template_err(node, e))
    }

    /// The `-inf` file `file=` names (by its base name).
    fn inf_attr(&self, node: Node<'_, '_>) -> Result<usize, ScenarioError> {
        let Some(name) = node.attribute("file") else {
            return Err(self.err(node, "the file attribute is required"));
        };
        self.ctx.inf.iter().position(|f| f == name).ok_or_else(|| {
            self.err(
                node,
                format!(
                    "file=\"{name}\": no -inf file is named so (files are named by their base name)"
                ),
            )
        })
    }

    fn action(&mut self, node: Node<'_, '_>) -> Result<Action, ScenarioError> {
        let name = node.tag_name().name();
        match name {
            "ereg" => {
                self.check_attrs(
                    node,
                    &[
                        "regexp",
                        "search_in",
                        "header",
                        "check_it",
                        "check_it_inverse",
                        "assign_to",
                        "case_indep",
                        "start_line",
                        "occurrence",
                        "occurence",
                        "variable",
                    ],
                )?;
                let Some(re) = node.attribute("regexp") else {
                    return Err(self.err(node, "the regexp attribute is required"));
                };
                if node.attribute("check_it").is_some()
                    && node.attribute("check_it_inverse").is_some()
                {
                    return Err(self.err(node, "check_it and check_it_inverse exclude each other"));
                }
                // POSIX extended, as SIPp compiles it: `.` matches line ends.
                let regex = RegexBuilder::new(re)
                    .dot_matches_new_line(true)
                    .build()
                    .map_err(|e| self.err(node, format!("regexp=\"{re}\": {e}")))?;
                let search_in = match (node.attribute("search_in"), node.attribute("header")) {
                    (None | Some("msg"), None) => SearchIn::Msg,
                    (Some("body"), None) => SearchIn::Body,
                    (Some("var"), None) => match node.attribute("variable") {
                        Some(v) => SearchIn::Var(self.var(v)),
                        None => return Err(self.err(node, "search_in=\"var\" needs variable=")),
                    },
                    (Some("hdr"), Some(h)) => {
                        if h.is_empty() {
                            return Err(self.err(node, "header=\"\" names no header"));
                        }
                        let occurrence =
                            match node.attribute("occurrence").or(node.attribute("occurence")) {
                                Some(n) => n.trim().parse::<usize>().map_err(|_| {
                                    self.err(node, format!("occurrence=\"{n}\" is not a number"))
                                })?,
                                None => 1,
                            };
                        SearchIn::Hdr {
                            name: h.as_bytes().to_vec(),
                            case_indep: self.bool_attr(node, "case_indep")?,
                            start_line: self.bool_attr(node, "start_line")?,
                            occurrence,
                        }
                    }
                    (Some("hdr"), None) => {
                        return Err(self.err(node, "search_in=\"hdr\" needs header="));
                    }
                    (_, Some(_)) => {
                        return Err(self.err(node, "header= goes with search_in=\"hdr\""));
                    }
                    (Some(v), None) => {
                        return Err(self.err(
                            node,
                            format!("search_in=\"{v}\": expected msg, hdr, body or var"),
                        ));
                    }
                };
                let assign_to = if node.attribute("assign_to").is_some() {
                    self.assign_to(node)?
                } else {
                    Vec::new()
                };
                Ok(Action::Ereg {
                    regex,
                    search_in,
                    check_it: self.bool_attr(node, "check_it")?,
                    check_it_inverse: self.bool_attr(node, "check_it_inverse")?,
                    assign_to,
                })
            }
            "assignstr" => {
                self.check_attrs(node, &["assign_to", "value"])?;
                let var = self.one_var(node)?;
                let Some(v) = node.attribute("value") else {
                    return Err(self.err(node, "the value attribute is required"));
                };
                let value = Template::compile_value(v, &mut Vars(&mut self.vars, self.ctx))
                    .map_err(|e| self.template_err(node, e))?;
                if value.keywords().any(|k| matches!(k, Keyword::Len(_))) {
                    return Err(self.err(node, "[len] has no meaning in a value"));
                }
                Ok(Action::AssignStr { var, value })
            }
            "lookup" => {
                self.check_attrs(node, &["assign_to", "file", "key"])?;
                let var = self.one_var(node)?;
                Ok(Action::Lookup {
                    var,
                    file: self.inf_attr(node)?,
                    key: self.value_attr(node, "key")?,
                })
            }
            "insert" => {
                self.check_attrs(node, &["file", "value"])?;
                Ok(Action::Insert {
                    file: self.inf_attr(node)?,
                    value: self.value_attr(node, "value")?,
                })
            }
            "replace" => {
                self.check_attrs(node, &["file", "line", "value"])?;
                Ok(Action::Replace {
                    file: self.inf_attr(node)?,
                    line: self.value_attr(node, "line")?,
                    value: self.value_attr(node, "value")?,
                })
            }
            "setdest" => {
                self.check_attrs(node, &["host", "port", "protocol"])?;
                Ok(Action::SetDest {
                    host: self.value_attr(node, "host")?,
                    port: self.value_attr(node, "port")?,
                    protocol: self.value_attr(node, "protocol")?,
                })
            }
            "assign" => {
                self.check_attrs(node, &["assign_to", "value"])?;
                let var = self.one_var(node)?;
                Ok(Action::Assign {
                    var,
                    value: self.f64_attr(node, "value")?,
                })
            }
            "add" | "subtract" | "multiply" | "divide" => {
                self.check_attrs(node, &["assign_to", "value"])?;
                let var = self.one_var(node)?;
                let op = match name {
                    "add" => Arith::Add,
                    "subtract" => Arith::Subtract,
                    "multiply" => Arith::Multiply,
                    _ => Arith::Divide,
                };
                let value = self.f64_attr(node, "value")?;
                if op == Arith::Divide && value == 0.0 {
                    return Err(self.err(node, "division by zero"));
                }
                Ok(Action::Arith { op, var, value })
            }
            "test" => {
                self.check_attrs(node, &["assign_to", "variable", "compare", "value"])?;
                let var = self.one_var(node)?;
                let Some(variable) = node.attribute("variable") else {
                    return Err(self.err(node, "the variable attribute is required"));
                };
                let variable = self.var(variable);
                let compare = match node.attribute("compare") {
                    Some("equal") => Compare::Equal,
                    Some("not_equal") => Compare::NotEqual,
                    Some("greater_than") => Compare::Greater,
                    Some("less_than") => Compare::Less,
                    Some("greater_than_equal") => Compare::GreaterEqual,
                    Some("less_than_equal") => Compare::LessEqual,
                    other => {
                        return Err(self.err(
                            node,
                            format!(
                                "compare=\"{}\": expected equal, not_equal, greater_than, \
                                 less_than, greater_than_equal or less_than_equal",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                };
                Ok(Action::Test {
                    var,
                    variable,
                    compare,
                    value: self.f64_attr(node, "value")?,
                })
            }
            "verifyauth" => {
                self.check_attrs(node, &["assign_to", "username", "password"])?;
                let var = self.one_var(node)?;
                let mut value = |name: &str| -> Result<Template, ScenarioError> {
                    let Some(v) = node.attribute(name) else {
                        return Err(self.err(node, format!("the {name} attribute is required")));
                    };
                    Template::compile_value(v, &mut Vars(&mut self.vars, self.ctx))
                        .map_err(|e| self.template_err(node, e))
                };
                let username = value("username")?;
                let password = value("password")?;
                Ok(Action::VerifyAuth {
                    var,
                    username,
                    password,
                })
            }
            "error" => {
                self.check_attrs(node, &["message"])?;
                let m = node.attribute("message").unwrap_or("");
                let message = Template::compile_value(m, &mut Vars(&mut self.vars, self.ctx))
                    .map_err(|e| self.template_err(node, e))?;
                Ok(Action::Error { message })
            }
            "log" | "warning" => {
                self.check_attrs(node, &["message"])?;
                let Some(m) = node.attribute("message") else {
                    return Err(self.err(node, "the message attribute is required"));
                };
                let message = Template::compile_value(m, &mut Vars(&mut self.vars, self.ctx))
                    .map_err(|e| self.template_err(node, e))?;
                if name == "log" {
                    Ok(Action::Log { message })
                } else {
                    Ok(Action::Warning { message })
                }
            }
            "strcmp" => {
                self.check_attrs(node, &["assign_to", "variable", "variable2", "value"])?;
                let var = self.one_var(node)?;
                let Some(variable) = node.attribute("variable") else {
                    return Err(self.err(node, "the variable attribute is required"));
                };
                let variable = self.var(variable);
                let other = match (node.attribute("variable2"), node.attribute("value")) {
                    (Some(v), None) => StrOperand::Variable(self.var(v)),
                    (None, Some(v)) => StrOperand::Value(v.as_bytes().to_vec()),
                    _ => return Err(self.err(node, "needs exactly one of variable2= and value=")),
                };
                Ok(Action::Strcmp {
                    var,
                    variable,
                    other,
                })
            }
            "jump" => {
                self.check_attrs(node, &["value", "variable"])?;
                Ok(Action::Jump(self.num_operand(node)?))
            }
            "gettimeofday" => {
                self.check_attrs(node, &["assign_to"])?;
                let vars = self.assign_to(node)?;
                match vars.as_slice() {
                    [s, u] => Ok(Action::GetTimeOfDay {
                        seconds: *s,
                        micros: *u,
                    }),
                    _ => Err(self.err(node, "assign_to names the seconds and microseconds")),
                }
            }
            "urlencode" | "urldecode" => {
                self.check_attrs(node, &["variable"])?;
                let Some(v) = node.attribute("variable") else {
                    return Err(self.err(node, "the variable attribute is required"));
                };
                Ok(Action::UrlEncode {
                    var: self.var(v),
                    decode: name == "urldecode",
                })
            }
            "todouble" => {
                self.check_attrs(node, &["assign_to", "variable"])?;
                let var = self.one_var(node)?;
                let Some(v) = node.attribute("variable") else {
                    return Err(self.err(node, "the variable attribute is required"));
                };
                Ok(Action::ToDouble {
                    var,
                    variable: self.var(v),
                })
            }
            // SIPp's: the step's index into a variable.
            "index" => {
                self.check_attrs(node, &["assign_to"])?;
                Ok(Action::Index(self.one_var(node)?))
            }
            // SIPp's: the call pauses until that time (ms of the run's
            // clock), as the pause `_unexp.pausedaddr` kept.
            "pauserestore" => {
                self.check_attrs(node, &["value", "variable"])?;
                Ok(Action::PauseRestore(self.num_operand(node)?))
            }
            // SIPp's: the call's connection (TCP, TLS) closes.
            "closecon" => {
                self.check_attrs(node, &[])?;
                Ok(Action::CloseCon)
            }
            "trim" => {
                self.check_attrs(node, &["assign_to"])?;
                Ok(Action::Trim {
                    var: self.one_var(node)?,
                })
            }
            "sample" => {
                let allowed: Vec<&str> = ["assign_to", "distribution"]
                    .iter()
                    .chain(DISTRIBUTION_PARAMS)
                    .copied()
                    .collect();
                self.check_attrs(node, &allowed)?;
                let var = self.one_var(node)?;
                let Some(name) = distribution_name(node, false) else {
                    return Err(self.err(node, "the distribution attribute is required"));
                };
                let distribution = self.distribution(node, name)?;
                Ok(Action::Sample { var, distribution })
            }
            "exec" => self.exec(node),
            _ => Err(self.err(node, "this action is not supported by sbc-load")),
        }
    }

    /// `<label id>`: the step index it names.
    fn label(&mut self, node: Node<'_, '_>, index: usize) -> Result<(), ScenarioError> {
        self.check_attrs(node, &["id"])?;
        let Some(id) = node.attribute("id") else {
            return Err(self.err(node, "the id attribute is required"));
        };
        if self.labels.insert(id.to_string(), index).is_some() {
            return Err(self.err(node, format!("label \"{id}\" is defined twice")));
        }
        Ok(())
    }

    /// Points each `next` and `ontimeout` of `steps` at its label.
    fn resolve_jumps(&mut self, steps: &mut [Step]) -> Result<(), ScenarioError> {
        for (index, label, attr, line) in std::mem::take(&mut self.jumps) {
            let Some(&target) = self.labels.get(&label) else {
                return Err(ScenarioError {
                    origin: self.origin.clone(),
                    line,
                    element: "scenario".into(),
                    message: format!("{attr}=\"{label}\": no such label"),
                });
            };
            let Some(step) = steps.get_mut(index) else {
                continue;
            };
            match (attr, &mut step.kind) {
                ("ontimeout", StepKind::Recv(r)) => r.on_timeout = Some(target),
                _ => step.next = Some(target),
            }
        }
        Ok(())
    }

    /// `<init>`: its `<nop>`s, their jumps to the stanza's own labels.
    fn init(&mut self, node: Node<'_, '_>) -> Result<Vec<Step>, ScenarioError> {
        self.check_attrs(node, &[])?;
        let labels = std::mem::take(&mut self.labels);
        let jumps = std::mem::take(&mut self.jumps);
        let mut init = Vec::new();
        for c in node.children().filter(|c| c.is_element()) {
            match c.tag_name().name() {
                "nop" => {
                    let step = self.step(c, init.len())?;
                    init.push(step);
                }
                "label" => self.label(c, init.len())?,
                other => {
                    return Err(self.err(
                        c,
                        format!("<{other}> in <init>: the stanza holds <nop> and <label> only"),
                    ));
                }
            }
        }
        self.resolve_jumps(&mut init)?;
        (self.labels, self.jumps) = (labels, jumps);
        Ok(init)
    }

    /// Distribution `name` of a `<sample>` or `<pause>` with its
    /// parameters.
    fn distribution(&self, node: Node<'_, '_>, name: &str) -> Result<Distribution, ScenarioError> {
        let f = |a: &str| self.f64_attr(node, a);
        let d = match name {
            "fixed" => Distribution::Fixed(f("value")?),
            "uniform" => Distribution::Uniform {
                min: f("min")?,
                max: f("max")?,
            },
            "normal" => Distribution::Normal {
                mean: f("mean")?,
                stdev: f("stdev")?,
            },
            "lognormal" => Distribution::LogNormal {
                mean: f("mean")?,
                stdev: f("stdev")?,
            },
            "exponential" => Distribution::Exponential { mean: f("mean")? },
            "weibull" => Distribution::Weibull {
                lambda: f("lambda")?,
                k: f("k")?,
            },
            "pareto" => Distribution::Pareto {
                k: f("k")?,
                x_m: f("x_m")?,
            },
            "gpareto" => Distribution::GPareto {
                shape: f("shape")?,
                scale: f("scale")?,
                location: f("location")?,
            },
            "gamma" => Distribution::Gamma {
                k: f("k")?,
                theta: f("theta")?,
            },
            "negbin" => Distribution::NegBin {
                p: f("p")?,
                n: f("n")?,
            },
            d => {
                return Err(self.err(
                    node,
                    format!("unknown distribution \"{d}\" (fixed, uniform, normal, lognormal, exponential, weibull, pareto, gpareto, gamma, negbin)"),
                ));
            }
        };
        d.check()
            .map_err(|e| self.err(node, format!("{name} distribution: {e}")))?;
        Ok(d)
    }

    /// As SIPp's `find_file`: next to the scenario file, else as given
    /// (from the working directory).
    fn find_file(&self, name: &str) -> std::path::PathBuf {
        let given = Path::new(name);
        match Path::new(&self.origin).parent() {
            Some(dir) if !given.is_absolute() && dir.join(given).exists() => dir.join(given),
            _ => given.to_path_buf(),
        }
    }

    /// `<exec rtp_stream="FILE[,LOOPS[,PAYLOAD_TYPE[,PAYLOAD_NAME]]]">`;
    /// `"apattern|vpattern[,ID[,PAYLOAD_TYPE[,PAYLOAD_NAME]]]"` (SIPp's RTP
    /// check: pattern ID's byte, until the call ends, what comes back
    /// checked); `"pause"`, `"resume"` and their `apattern`/`vpattern`
    /// forms.
    fn rtp_stream(&mut self, node: Node<'_, '_>, value: &str) -> Result<Action, ScenarioError> {
        let play = match value.trim() {
            "pause" => return Ok(Action::RtpStream(RtpStream::Pause(None))),
            "resume" => return Ok(Action::RtpStream(RtpStream::Resume(None))),
            "pauseapattern" => {
                return Ok(Action::RtpStream(RtpStream::Pause(Some(MediaKind::Audio))));
            }
            "resumeapattern" => {
                return Ok(Action::RtpStream(RtpStream::Resume(Some(MediaKind::Audio))));
            }
            "pausevpattern" => {
                return Ok(Action::RtpStream(RtpStream::Pause(Some(MediaKind::Video))));
            }
            "resumevpattern" => {
                return Ok(Action::RtpStream(RtpStream::Resume(Some(MediaKind::Video))));
            }
            v if v.starts_with("apattern") => Some(MediaKind::Audio),
            v if v.starts_with("vpattern") => Some(MediaKind::Video),
            _ => None,
        };
        let mut parts = value.split(',').map(str::trim);
        let file = parts.next().unwrap_or("");
        let number = |p: Option<&str>, what: &str, default: i64| -> Result<i64, ScenarioError> {
            match p {
                None | Some("") => Ok(default),
                Some(n) => n.parse::<i64>().map_err(|_| {
                    self.err(node, format!("rtp_stream: {what} \"{n}\" is not a number"))
                }),
            }
        };
        // A pattern's second field is its id (1 by default) and it plays
        // until the call ends; a file's is its loop count.
        let (pattern, loops) = match play {
            Some(_) => {
                let id = number(parts.next(), "pattern id", 1)?;
                let id = u8::try_from(id)
                    .ok()
                    .filter(|i| (1..=PATTERNS.len() as u8).contains(i))
                    .ok_or_else(|| {
                        self.err(node, format!("rtp_stream: pattern id {id} is not 1 to 6"))
                    })?;
                (Some(id), -1)
            }
            None => (None, number(parts.next(), "loop count", 1)?),
        };
        let payload_type = number(
            parts.next(),
            "payload type",
            i64::from(self.ctx.rtp_payload),
        )?;
        let codec = Codec::of(payload_type, parts.next().unwrap_or(""))
            .map_err(|e| self.err(node, format!("rtp_stream: {e}")))?;
        let kind = match (play, codec.video) {
            (Some(kind), _) => kind,
            (None, _) => MediaKind::Audio,
        };
        let data = match pattern {
            Some(id) => vec![PATTERNS[usize::from(id - 1)]; codec.bytes_per_packet],
            None => {
                let path = self.find_file(file);
                let mut data = std::fs::read(&path)
                    .map_err(|e| self.err(node, format!("{}: {e}", path.display())))?;
                // As SIPp: a WAV file plays from its data chunk.
                data.drain(..wav_header_len(&data));
                if data.is_empty() {
                    return Err(self.err(node, format!("{}: the file is empty", path.display())));
                }
                data
            }
        };
        Ok(Action::RtpStream(RtpStream::Play(Arc::new(StreamFile {
            data,
            loops,
            payload_type: codec.payload_type,
            bytes_per_packet: codec.bytes_per_packet,
            ticks_per_packet: codec.ticks_per_packet,
            ms_per_packet: codec.ms_per_packet,
            kind,
            pattern,
        }))))
    }

    /// `<exec rtp_echo="startaudio|updateaudio|stopaudio|startvideo|
    /// updatevideo|stopvideo[,PAYLOAD_TYPE[,PAYLOAD_NAME]]">`: SIPp's RTP
    /// check's far end sends back what arrives on the call's port.
    fn rtp_echo(&mut self, node: Node<'_, '_>, value: &str) -> Result<Action, ScenarioError> {
        let mut parts = value.split(',').map(str::trim);
        let what = parts.next().unwrap_or("");
        let (op, kind) = match what {
            "startaudio" => (EchoOp::Start, MediaKind::Audio),
            "updateaudio" => (EchoOp::Update, MediaKind::Audio),
            "stopaudio" => (EchoOp::Stop, MediaKind::Audio),
            "startvideo" => (EchoOp::Start, MediaKind::Video),
            "updatevideo" => (EchoOp::Update, MediaKind::Video),
            "stopvideo" => (EchoOp::Stop, MediaKind::Video),
            other => {
                return Err(self.err(
                    node,
                    format!("rtp_echo=\"{other}\" is none of startaudio, updateaudio, stopaudio, startvideo, updatevideo, stopvideo"),
                ));
            }
        };
        let payload_type = match parts.next() {
            None | Some("") => i64::from(self.ctx.rtp_payload),
            Some(n) => n.parse::<i64>().map_err(|_| {
                self.err(
                    node,
                    format!("rtp_echo: payload type \"{n}\" is not a number"),
                )
            })?,
        };
        // Checked as SIPp does; the echo itself takes packets of any size.
        Codec::of(payload_type, parts.next().unwrap_or(""))
            .map_err(|e| self.err(node, format!("rtp_echo: {e}")))?;
        Ok(Action::RtpEcho(op, kind))
    }

    /// `<exec>`: one of its attributes says what it runs.
    fn exec(&mut self, node: Node<'_, '_>) -> Result<Action, ScenarioError> {
        self.check_attrs(
            node,
            &[
                "command",
                "int_cmd",
                "play_pcap_audio",
                "play_pcap_video",
                "play_pcap_image",
                "rtp_stream",
                "rtp_echo",
                "play_dtmf",
            ],
        )?;
        let given: Vec<_> = node.attributes().collect();
        let [a] = given.as_slice() else {
            return Err(self.err(node, "<exec> takes exactly one attribute"));
        };
        let media = match a.name() {
            "command" => {
                let command =
                    Template::compile_value(a.value(), &mut Vars(&mut self.vars, self.ctx))
                        .map_err(|e| self.template_err(node, e))?;
                return Ok(Action::Command(command));
            }
            "int_cmd" => {
                return match a.value() {
                    "stop_call" => Ok(Action::IntCmd(IntCmd::StopCall)),
                    "stop_gracefully" => Ok(Action::IntCmd(IntCmd::StopGracefully)),
                    "stop_now" => Ok(Action::IntCmd(IntCmd::StopNow)),
                    v => Err(self.err(
                        node,
                        format!("int_cmd=\"{v}\" is none of stop_call, stop_gracefully, stop_now"),
                    )),
                };
            }
            "rtp_stream" => return self.rtp_stream(node, a.value()),
            "rtp_echo" => return self.rtp_echo(node, a.value()),
            "play_dtmf" => {
                let digits =
                    Template::compile_value(a.value(), &mut Vars(&mut self.vars, self.ctx))
                        .map_err(|e| self.template_err(node, e))?;
                return Ok(Action::PlayDtmf(digits));
            }
            "play_pcap_audio" => MediaKind::Audio,
            "play_pcap_video" => MediaKind::Video,
            _ => MediaKind::Image,
        };
        // As SIPp: a value that is one `[KEY]` names the file by -key.
        let name = match a
            .value()
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
        {
            Some(key) => match self.ctx.keys.iter().rev().find(|(k, _)| k == key) {
                Some((_, v)) => v.as_str(),
                None => {
                    return Err(self.err(node, format!("[{key}]: no -key {key} VALUE was given")));
                }
            },
            None => a.value(),
        };
        let path = self.find_file(name);
        let capture = Capture::load(&path).map_err(|e| self.err(node, e))?;
        if capture.packets.is_empty() {
            return Err(self.err(
                node,
                format!("{}: the capture holds no UDP datagram", path.display()),
            ));
        }
        Ok(Action::PlayPcap {
            media,
            capture: Arc::new(capture),
        })
    }
}

/// The distribution an element names: its `distribution` attribute, or
/// (`old_style`, a pause) SIPp's older forms: an attribute named after
/// it (`normal="..."`), or `min`/`max` for uniform.
fn distribution_name<'n>(node: Node<'n, '_>, old_style: bool) -> Option<&'n str> {
    if let Some(d) = node.attribute("distribution") {
        return Some(d);
    }
    if !old_style {
        return None;
    }
    [
        "normal",
        "exponential",
        "lognormal",
        "weibull",
        "pareto",
        "gamma",
    ]
    .into_iter()
    .find(|a| node.attribute(*a).is_some())
    .or_else(|| {
        (node.attribute("min").is_some() || node.attribute("max").is_some()).then_some("uniform")
    })
}

impl Scenario {
    /// Parses a scenario; `origin` names it in errors (a file name).
    pub fn parse(xml: &str, origin: &str) -> Result<Self, ScenarioError> {
        Self::parse_with(xml, origin, &LoadContext::default())
    }

    /// [`Scenario::parse`] with the command line's generic keywords and
    /// injection files.
    pub fn parse_with(xml: &str, origin: &str, ctx: &LoadContext) -> Result<Self, ScenarioError> {
        let opts = ParsingOptions {
            allow_dtd: true,
            ..ParsingOptions::default()
        };
        let doc = Document::parse_with_options(xml, opts).map_err(|e| ScenarioError {
            origin: origin.to_string(),
            line: e.pos().row,
            element: "scenario".into(),
            message: format!("not well-formed XML: {e}"),
        })?;
        let root = doc.root_element();
        let mut p = Parser {
            origin: origin.to_string(),
            ctx,
            doc: &doc,
            vars: Vec::new(),
            labels: HashMap::new(),
            jumps: Vec::new(),
            counters: Vec::new(),
            txns: Vec::new(),
            pending_txn: None,
            methods: Vec::new(),
            send_timeouts: false,
            hide_default: false,
        };
        if root.tag_name().name() != "scenario" {
            return Err(p.err(root, "the root element must be <scenario>"));
        }
        p.check_attrs(root, &["name"])?;
        let mut steps = Vec::new();
        let (mut globals, mut user_vars) = (Vec::new(), Vec::new());
        let (mut response_time_repartition, mut call_length_repartition) = (Vec::new(), Vec::new());
        let (mut init, mut seen_init) = (Vec::new(), false);
        let mut default_messages = Vec::new();
        for node in root.children().filter(|c| c.is_element()) {
            let name = node.tag_name().name();
            match name {
                // Declarations: globals are shared by the calls; user
                // variables by the calls of one user (-users).
                "Global" | "User" => {
                    p.check_attrs(node, &["variables"])?;
                    let Some(list) = node.attribute("variables") else {
                        return Err(p.err(node, "the variables attribute is required"));
                    };
                    for v in list.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                        let id = p.var(v);
                        let list = if name == "Global" {
                            &mut globals
                        } else {
                            &mut user_vars
                        };
                        if !list.contains(&id) {
                            list.push(id);
                        }
                    }
                }
                "label" => p.label(node, steps.len())?,
                "DefaultMessage" => {
                    p.check_attrs(node, &["id"])?;
                    let id = node.attribute("id").unwrap_or("");
                    let Some(kind) = DefaultMessage::parse(id) else {
                        return Err(p.err(
                            node,
                            format!("id=\"{id}\" is none of SIPp's default messages (3pcc_abort, ack, ack2, bye, cancel, 200)"),
                        ));
                    };
                    let msg = p.message(node)?;
                    default_messages.retain(|(k, _)| *k != kind);
                    default_messages.push((kind, msg));
                }
                "init" => {
                    if seen_init {
                        return Err(p.err(node, "a scenario has one <init> stanza"));
                    }
                    seen_init = true;
                    init = p.init(node)?;
                }
                _ if DISPLAY_ONLY.contains(&name) => {}
                "ResponseTimeRepartition" | "CallLengthRepartition" => {
                    p.check_attrs(node, &["value"])?;
                    let v = node.attribute("value").unwrap_or("");
                    let mut borders = Vec::new();
                    for b in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                        borders.push(b.parse::<u64>().map_err(|_| {
                            p.err(node, format!("value=\"{v}\": {b} is not a number of ms"))
                        })?);
                    }
                    borders.sort_unstable();
                    borders.dedup();
                    if name == "ResponseTimeRepartition" {
                        response_time_repartition = borders;
                    } else {
                        call_length_repartition = borders;
                    }
                }
                _ if steps.last().is_some_and(|s: &Step| {
                    matches!(s.kind, StepKind::Pause { timewait: true, .. })
                }) =>
                {
                    return Err(p.err(node, "<timewait> must be the last step of a scenario"));
                }
                "send" | "recv" | "pause" | "timewait" | "nop" | "sendCmd" | "recvCmd" => {
                    let step = p.step(node, steps.len())?;
                    steps.push(step);
                }
                _ => return Err(p.err(node, "this element is not supported by sbc-load")),
            }
        }
        if steps.is_empty() {
            return Err(p.err(root, "the scenario has no steps"));
        }
        p.check_txns(root)?;
        p.resolve_jumps(&mut steps)?;
        let mut rtds_used = [false; RTD_COUNT];
        for s in &steps {
            for r in [s.start_rtd, s.rtd].into_iter().flatten() {
                if let Some(u) = rtds_used.get_mut(usize::from(r)) {
                    *u = true;
                }
            }
        }
        let unexpected_jump = p.labels.get("_unexp.main").map(|&step| {
            let var = |name: &str| {
                p.vars
                    .iter()
                    .position(|v| v == name)
                    .and_then(|i| u16::try_from(i).ok())
                    .map(VarId)
            };
            UnexpectedJump {
                step,
                retaddr: var("_unexp.retaddr"),
                pausedaddr: var("_unexp.pausedaddr"),
            }
        });
        Ok(Scenario {
            name: root.attribute("name").unwrap_or("").to_string(),
            steps,
            vars: p.vars,
            rtds_used,
            globals,
            user_vars,
            counters: p.counters,
            txns: p.txns.into_iter().map(|(n, ..)| n).collect(),
            response_time_repartition,
            call_length_repartition,
            send_timeouts: p.send_timeouts,
            unexpected_jump,
            init,
            default_messages,
        })
    }

    /// Whether `<insert>` or `<replace>` change an `-inf` file.
    pub fn changes_injection(&self) -> bool {
        self.steps
            .iter()
            .chain(&self.init)
            .flat_map(|s| &s.actions)
            .any(|a| matches!(a, Action::Insert { .. } | Action::Replace { .. }))
    }

    /// `-lost`: SIP messages sent or received by steps that set no `lost`
    /// of their own are dropped at random at `pct` percent.
    pub fn set_default_lost(&mut self, pct: f64) {
        for s in &mut self.steps {
            if s.lost.is_none() && matches!(s.kind, StepKind::Send { .. } | StepKind::Recv(_)) {
                s.lost = Some(pct);
            }
        }
    }

    /// Whether the scenario exchanges messages with a 3PCC twin.
    pub fn uses_twin(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::SendCmd { .. } | StepKind::RecvCmd { .. }))
    }

    /// Whether its first twin step sends (`<sendCmd>` before any
    /// `<recvCmd>`): SIPp's 3PCC A side, or the master in extended mode.
    pub fn sends_first_command(&self) -> bool {
        self.steps
            .iter()
            .find_map(|s| match s.kind {
                StepKind::SendCmd { .. } => Some(true),
                StepKind::RecvCmd { .. } => Some(false),
                _ => None,
            })
            .unwrap_or(true)
    }

    /// The peers its `<sendCmd dest>`s name (extended 3PCC), each once.
    pub fn command_peers(&self) -> Vec<&str> {
        let mut peers: Vec<&str> = Vec::new();
        for s in &self.steps {
            if let StepKind::SendCmd { dest: Some(d), .. } = &s.kind
                && !peers.contains(&&**d)
            {
                peers.push(d);
            }
        }
        peers
    }

    /// Extended 3PCC names every peer: the first `<sendCmd>` without
    /// `dest` or `<recvCmd>` without `src`, as SIPp's message says.
    pub fn unnamed_peer(&self) -> Option<&'static str> {
        self.steps.iter().find_map(|s| match &s.kind {
            StepKind::SendCmd { dest: None, .. } => {
                Some("you must specify a 'dest' for sendCmd with extended 3pcc mode")
            }
            StepKind::RecvCmd { src: None } => {
                Some("you must specify a 'src' for recvCmd with extended 3pcc mode")
            }
            _ => None,
        })
    }

    /// Whether its calls start with the twin's message (3PCC's B side of
    /// the controller: it listens for the twin).
    pub fn starts_with_recv_cmd(&self) -> bool {
        matches!(
            self.steps.first().map(|s| &s.kind),
            Some(StepKind::RecvCmd { .. })
        )
    }

    /// Whether a call of this scenario starts by sending (a caller, or a
    /// 3PCC master whose first step is a command); `<nop>`s and
    /// `<pause>`s before do not count (SIPp's `computeSippMode`).
    pub fn starts_with_send(&self) -> bool {
        matches!(
            self.steps
                .iter()
                .map(|s| &s.kind)
                .find(|k| !matches!(k, StepKind::Nop | StepKind::Pause { .. })),
            Some(StepKind::Send { .. } | StepKind::SendCmd { .. })
        )
    }

    /// The request a callee scenario waits for first.
    pub fn first_request(&self) -> Option<&Expect> {
        match self.steps.first().map(|s| &s.kind) {
            Some(StepKind::Recv(Recv {
                expect: e @ (Expect::Request(_) | Expect::RequestLike(_)),
                ..
            })) => Some(e),
            _ => None,
        }
    }

    /// Every template: messages and action values.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        let messages = self.steps.iter().filter_map(|s| match &s.kind {
            StepKind::Send { msg, .. } | StepKind::SendCmd { msg, .. } => Some(msg),
            _ => None,
        });
        let values = self.steps.iter().flat_map(|s| &s.actions).flat_map(|a| {
            let (one, two) = match a {
                Action::AssignStr { value: t, .. }
                | Action::Error { message: t }
                | Action::Warning { message: t }
                | Action::Log { message: t }
                | Action::PlayDtmf(t)
                | Action::Command(t) => (Some(t), None),
                Action::VerifyAuth {
                    username: a,
                    password: b,
                    ..
                }
                | Action::Replace {
                    line: a, value: b, ..
                }
                | Action::SetDest {
                    host: a, port: b, ..
                } => (Some(a), Some(b)),
                Action::Lookup { key: t, .. } | Action::Insert { value: t, .. } => (Some(t), None),
                _ => (None, None),
            };
            one.into_iter().chain(two)
        });
        let defaults = self.default_messages.iter().map(|(_, t)| t);
        messages.chain(values).chain(defaults)
    }

    /// The scenario's own text for a message SIPp sends by itself.
    pub fn default_message(&self, kind: DefaultMessage) -> Option<&Template> {
        self.default_messages
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| t)
    }

    /// Whether any message or action value uses a keyword.
    pub fn uses(&self, f: impl Fn(&Keyword) -> bool) -> bool {
        self.templates().any(|t| t.keywords().any(&f))
    }
}

/// Reads a scenario file as SIPp does: ISO-8859-1 when it is not UTF-8.
pub fn read_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(body: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(
            &format!("<?xml version=\"1.0\"?>\n<scenario name=\"t\">\n{body}\n</scenario>"),
            "t.xml",
        )
    }

    #[test]
    fn steps_labels_and_jumps() {
        let s = parse(
            r#"<send retrans="500" start_rtd="true"><![CDATA[
                 INVITE sip:a@b SIP/2.0
                 Call-ID: [call_id]
               ]]></send>
               <recv response="100" optional="true"/>
               <recv response="180" next="done" rtd="true"/>
               <pause milliseconds="10"/>
               <label id="done"/>
               <nop><action><assign assign_to="x" value="3"/></action></nop>
               <ResponseTimeRepartition value="10, 20"/>"#,
        )
        .unwrap();
        assert_eq!(s.steps.len(), 5);
        assert!(s.starts_with_send());
        assert_eq!(s.steps[2].next, Some(4), "labels do not count as steps");
        assert_eq!(s.steps[0].start_rtd, Some(0));
        assert!(s.rtds_used[0]);
        assert!(matches!(
            s.steps[0].kind,
            StepKind::Send {
                retrans_ms: Some(500),
                ..
            }
        ));
        assert_eq!(s.vars, vec!["x".to_string()]);
    }

    #[test]
    fn lost_sets_every_sip_step_without_its_own() {
        let mut s = parse(
            r#"<send lost="5"><![CDATA[x]]></send><recv response="200"/><nop/><sendCmd><![CDATA[Call-ID: 1]]></sendCmd>"#,
        )
        .unwrap();
        s.set_default_lost(20.0);
        let lost: Vec<Option<f64>> = s.steps.iter().map(|s| s.lost).collect();
        assert_eq!(lost, [Some(5.0), Some(20.0), None, None]);
    }

    /// `<send timeout>` is taken (SIPp's send timeout; the report notes
    /// that sbc-load holds no message back).
    #[test]
    fn a_send_timeout_is_taken_and_noted() {
        let s =
            parse("<send timeout=\"2000\"><![CDATA[OPTIONS sip:x SIP/2.0\n\n]]></send>").unwrap();
        assert!(s.send_timeouts);
        assert!(
            !parse("<send><![CDATA[OPTIONS sip:x SIP/2.0\n\n]]></send>")
                .unwrap()
                .send_timeouts
        );
        assert!(parse("<send timeout=\"soon\"><![CDATA[x]]></send>").is_err());
    }

    /// `-rtp_payload`: the payload type of an `rtp_stream` naming none.
    #[test]
    fn rtp_payload_is_the_default_payload_type_of_rtp_stream() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.raw");
        std::fs::write(&file, [1u8; 320]).unwrap();
        let xml = |v: &str| {
            format!(
                r#"<scenario><nop><action><exec rtp_stream="{},1{v}"/></action></nop></scenario>"#,
                file.display()
            )
        };
        let pt = |xml: &str, default: u8| -> u8 {
            let ctx = LoadContext {
                rtp_payload: default,
                ..LoadContext::default()
            };
            let s = Scenario::parse_with(xml, "t.xml", &ctx).unwrap();
            match &s.steps[0].actions[0] {
                Action::RtpStream(RtpStream::Play(f)) => f.payload_type,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(pt(&xml(""), 0), 0);
        assert_eq!(pt(&xml(""), 8), 8);
        // One the action names wins.
        assert_eq!(pt(&xml(",18"), 8), 18);
    }

    #[test]
    fn pauses_take_every_distribution_and_sipps_older_forms() {
        let length = |xml: &str| match parse(xml).unwrap().steps[0].kind {
            StepKind::Pause { length, .. } => length,
            ref other => panic!("{other:?}"),
        };
        let drawn = |xml: &str| match length(xml) {
            PauseLength::Drawn(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            drawn(r#"<pause distribution="weibull" lambda="3" k="4"/>"#),
            Distribution::Weibull {
                lambda: 3.0,
                k: 4.0
            }
        );
        assert_eq!(
            drawn(r#"<pause distribution="pareto" k="1" x_m="2"/>"#),
            Distribution::Pareto { k: 1.0, x_m: 2.0 }
        );
        assert_eq!(
            drawn(r#"<pause distribution="gpareto" shape="0.1" scale="5" location="1"/>"#),
            Distribution::GPareto {
                shape: 0.1,
                scale: 5.0,
                location: 1.0
            }
        );
        assert_eq!(
            drawn(r#"<pause distribution="gamma" k="3" theta="2"/>"#),
            Distribution::Gamma { k: 3.0, theta: 2.0 }
        );
        assert_eq!(
            drawn(r#"<pause distribution="negbin" p="0.1" n="2"/>"#),
            Distribution::NegBin { p: 0.1, n: 2.0 }
        );
        // SIPp's older forms: min/max is uniform, an attribute names it.
        assert_eq!(
            drawn(r#"<pause min="2000" max="5000"/>"#),
            Distribution::Uniform {
                min: 2000.0,
                max: 5000.0
            }
        );
        assert_eq!(
            drawn(r#"<pause normal="yes" mean="60000" stdev="15000"/>"#),
            Distribution::Normal {
                mean: 60_000.0,
                stdev: 15_000.0
            }
        );
        assert_eq!(
            length(r#"<pause milliseconds="7"/>"#),
            PauseLength::Fixed { ms: 7 }
        );
        // The 99th percentile past INT_MAX ms is refused, unless asked.
        let huge = r#"<pause distribution="exponential" mean="1e12"/>"#;
        let e = parse(huge).unwrap_err();
        assert!(e.message.contains("larger than INT_MAX"), "{e}");
        assert!(
            parse(r#"<pause distribution="exponential" mean="1e12" sanity_check="false"/>"#)
                .is_ok()
        );
        let e = parse(r#"<pause distribution="weibull" lambda="3" k="0"/>"#).unwrap_err();
        assert!(e.message.contains("k must be above 0"), "{e}");
        let e = parse(r#"<pause distribution="zipf" value="1"/>"#).unwrap_err();
        assert!(e.message.contains("unknown distribution"), "{e}");
        // <sample> takes them too.
        let s = parse(r#"<nop><action><sample assign_to="v" distribution="gamma" k="2" theta="1"/></action></nop>"#).unwrap();
        assert!(matches!(
            s.steps[0].actions[0],
            Action::Sample {
                distribution: Distribution::Gamma { .. },
                ..
            }
        ));
    }

    #[test]
    fn sipps_unexpected_label_index_pauserestore_closecon_and_ignoresdp() {
        let s = parse(
            r#"<recv request="INVITE" ignoresdp="true" hiderest="true"/>
            <nop><action><index assign_to="i"/><closecon/></action></nop>
            <label id="_unexp.main"/>
            <recv request="INFO"/>
            <nop><action><jump variable="_unexp.retaddr"/><pauserestore variable="_unexp.pausedaddr"/></action></nop>"#,
        )
        .unwrap();
        let StepKind::Recv(r) = &s.steps[0].kind else {
            panic!("not a recv");
        };
        assert!(r.ignore_sdp);
        assert!(matches!(
            s.steps[1].actions[..],
            [Action::Index(_), Action::CloseCon]
        ));
        assert!(matches!(
            s.steps[3].actions[1],
            Action::PauseRestore(NumOperand::Variable(_))
        ));
        let u = s.unexpected_jump.unwrap();
        assert_eq!(u.step, 2);
        assert_eq!(
            u.retaddr.map(|v| s.vars[usize::from(v.0)].as_str()),
            Some("_unexp.retaddr")
        );
        assert!(u.pausedaddr.is_some());
        assert!(parse("<nop/>").unwrap().unexpected_jump.is_none());
        // <init>: nops and labels of its own; its jumps stay inside.
        let s = parse(
            r#"<init><nop next="l"/><nop/><label id="l"/></init>
            <label id="l"/><nop condexec="x" condexec_inverse="true"/>"#,
        )
        .unwrap();
        assert_eq!((s.init.len(), s.init[0].next), (2, Some(2)));
        assert!(matches!(s.steps[0].condexec, Some((_, true))));
        let e = parse("<init><send><![CDATA[x]]></send></init><nop/>").unwrap_err();
        assert!(e.message.contains("<nop> and <label> only"), "{e}");
        let e = parse(r#"<init><nop next="nowhere"/></init><nop/>"#).unwrap_err();
        assert!(e.message.contains("no such label"), "{e}");
        let e = parse("<init></init><init></init><nop/>").unwrap_err();
        assert!(e.message.contains("one <init>"), "{e}");
        // hiderest: the default of its step and those after; hide wins.
        let s = parse(r#"<nop/><nop hiderest="true"/><nop/><nop hide="false"/>"#).unwrap();
        let hidden: Vec<bool> = s.steps.iter().map(|st| st.hide).collect();
        assert_eq!(hidden, [false, true, true, false]);
    }

    #[test]
    fn rtp_check_patterns_and_echoes_are_read_as_sipp_reads_them() {
        let action = |xml: &str| {
            let mut s = parse(&format!("<nop><action>{xml}</action></nop>")).unwrap();
            s.steps[0].actions.remove(0)
        };
        let Action::RtpStream(RtpStream::Play(f)) =
            action(r#"<exec rtp_stream="apattern,3,8,PCMA/8000"/>"#)
        else {
            panic!("not a stream");
        };
        assert_eq!(
            (f.kind, f.pattern, f.loops, f.payload_type, f.data.len()),
            (MediaKind::Audio, Some(3), -1, 8, 160)
        );
        assert!(f.data.iter().all(|&b| b == 0xcc), "pattern 3 is 0xCC");
        let Action::RtpStream(RtpStream::Play(f)) =
            action(r#"<exec rtp_stream="vpattern,6,99,H264/90000"/>"#)
        else {
            panic!("not a stream");
        };
        assert_eq!(
            (f.kind, f.data.len(), f.ms_per_packet, f.data[0]),
            (MediaKind::Video, 1280, 160, 0xff)
        );
        // Defaults: pattern 1, -rtp_payload's type.
        let Action::RtpStream(RtpStream::Play(f)) = action(r#"<exec rtp_stream="apattern"/>"#)
        else {
            panic!("not a stream");
        };
        assert_eq!((f.pattern, f.payload_type, f.data[0]), (Some(1), 0, 0xaa));
        for (xml, want) in [
            ("pauseapattern", RtpStream::Pause(Some(MediaKind::Audio))),
            ("resumevpattern", RtpStream::Resume(Some(MediaKind::Video))),
            ("pause", RtpStream::Pause(None)),
        ] {
            let got = action(&format!(r#"<exec rtp_stream="{xml}"/>"#));
            assert_eq!(format!("{got:?}"), format!("{:?}", Action::RtpStream(want)));
        }
        for (xml, op, kind) in [
            ("startaudio,0,PCMU/8000", EchoOp::Start, MediaKind::Audio),
            (
                "updatevideo,99,H264/90000",
                EchoOp::Update,
                MediaKind::Video,
            ),
            ("stopaudio", EchoOp::Stop, MediaKind::Audio),
        ] {
            let got = action(&format!(r#"<exec rtp_echo="{xml}"/>"#));
            assert!(
                matches!(got, Action::RtpEcho(o, k) if o == op && k == kind),
                "{xml}"
            );
        }
        // SIPp's other payload types: comfort noise and iLBC.
        assert_eq!(
            Codec::of(13, "").unwrap(),
            Codec {
                payload_type: 13,
                bytes_per_packet: 1,
                ticks_per_packet: 1200,
                ms_per_packet: 150,
                video: false
            }
        );
        assert_eq!(Codec::of(97, "iLBC/8000").unwrap().bytes_per_packet, 50);
        assert!(Codec::of(97, "opus/48000").unwrap_err().contains("opus"));
        assert!(Codec::of(40, "").is_err());
    }

    #[test]
    fn a_wav_file_streams_from_its_data_chunk() {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0".to_vec();
        wav.extend_from_slice(&[0u8; 16]);
        wav.extend_from_slice(b"data\x04\0\0\0");
        let header = wav.len();
        wav.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(wav_header_len(&wav), header);
        assert_eq!(
            wav_header_len(b"raw audio bytes, not a RIFF file at all......"),
            0
        );
        // RIFF but not WAVE: SIPp skips the first 8 bytes.
        let mut riff = b"RIFF\0\0\0\0AVI ".to_vec();
        riff.resize(64, 0);
        assert_eq!(wav_header_len(&riff), 8);
    }

    #[test]
    fn unsupported_constructs_name_the_element() {
        // An attribute SIPp does not define either.
        let e = parse(r#"<sendCmd to="s1"><![CDATA[x]]></sendCmd>"#).unwrap_err();
        assert_eq!(e.element, "sendCmd");
        assert!(e.message.contains("not supported"), "{e}");
        assert_eq!(e.line, 3);
        // Extended 3PCC's peer names are read.
        let s = parse(r#"<sendCmd dest="s1"><![CDATA[x]]></sendCmd><recvCmd src="s1"/>"#).unwrap();
        assert_eq!(s.command_peers(), vec!["s1"]);
        let e = parse("<bogus/>").unwrap_err();
        assert_eq!(e.element, "bogus");

        let e =
            parse(r#"<nop><action><exec rtp_stream="apattern,7"/></action></nop>"#).unwrap_err();
        assert_eq!(e.element, "exec");
        assert!(e.message.contains("pattern id 7"), "{e}");
        let e =
            parse(r#"<nop><action><exec rtp_stream="x.wav,1,97"/></action></nop>"#).unwrap_err();
        assert!(e.message.contains("payload type 97"), "{e}");
        let e = parse(r#"<nop><action><exec rtp_echo="startaudio,8,PCMU/8000"/></action></nop>"#)
            .unwrap_err();
        assert!(e.message.contains("PCMA/8000, not PCMU/8000"), "{e}");
        let e = parse(r#"<nop><action><exec rtp_echo="begin"/></action></nop>"#).unwrap_err();
        assert!(e.message.contains("none of startaudio"), "{e}");
        let e =
            parse(r#"<nop><action><exec rtp_stream="no-such.wav"/></action></nop>"#).unwrap_err();
        assert!(e.message.contains("no-such.wav"), "{e}");

        let e = parse(r#"<recv response="200" response_txn="x"/>"#).unwrap_err();
        assert!(e.message.contains("start_txn"), "{e}");

        let e = parse(r#"<recv response="200" next="nowhere"/>"#).unwrap_err();
        assert!(e.message.contains("nowhere"), "{e}");

        let e = parse(r#"<send><![CDATA[X [bogus]]]></send>"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");

        let e = parse(r#"<recv response="abc"/>"#).unwrap_err();
        assert!(e.message.contains("abc"), "{e}");

        let e = Scenario::parse("<scenario><send>", "x.xml").unwrap_err();
        assert!(e.message.contains("XML"), "{e}");
    }

    #[test]
    fn actions_parse() {
        let s = parse(
            r#"<recv request="INVITE">
                 <action>
                   <ereg regexp="From: (.*)" search_in="msg" check_it="true" assign_to="all,from"/>
                   <ereg regexp="INVITE" search_in="hdr" header="CSeq:" assign_to="m"/>
                   <assignstr assign_to="s" value="[call_id]-x"/>
                   <test assign_to="t" variable="n" compare="greater_than" value="2"/>
                   <add assign_to="n" value="1"/>
                 </action>
               </recv>"#,
        )
        .unwrap();
        let a = &s.steps[0].actions;
        assert_eq!(a.len(), 5);
        match &a[1] {
            Action::Ereg { search_in, .. } => {
                assert_eq!(
                    *search_in,
                    SearchIn::Hdr {
                        name: b"CSeq:".to_vec(),
                        case_indep: false,
                        start_line: false,
                        occurrence: 1
                    }
                )
            }
            x => panic!("{x:?}"),
        }
        assert_eq!(s.vars, ["all", "from", "m", "s", "t", "n"]);
    }

    #[test]
    fn latin1_files_are_read() {
        assert_eq!(read_text(b"caf\xe9"), "café");
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "xml") {
                continue;
            }
            let text = read_text(&std::fs::read(&path).unwrap());
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let r = Scenario::parse(&text, &name);
            // It plays the capture sip-tester installs; without it, the
            // error names the file.
            let pcap = "/usr/share/sip-tester/g711a.pcap";
            if name == "uac_pcap.xml" && !std::path::Path::new(pcap).exists() {
                assert!(r.unwrap_err().message.contains(pcap));
            } else {
                r.unwrap_or_else(|e| panic!("{e}"));
            }
            n += 1;
        }
        assert!(n >= 10);
    }

    #[test]
    fn exec_is_read_as_sipp_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let pcap =
            crate::pcap::tests::ethernet_pcap(&[(1, 0, 6000, b"a"), (1, 20_000, 6000, b"b")]);
        std::fs::write(dir.path().join("voice.pcap"), &pcap).unwrap();
        let xml = |body: &str| {
            format!(
                r#"<?xml version="1.0"?><scenario name="t"><nop><action>{body}</action></nop></scenario>"#
            )
        };
        // A capture is found next to the scenario file, and read at once.
        let origin = dir.path().join("s.xml").display().to_string();
        let s = Scenario::parse(&xml(r#"<exec play_pcap_video="voice.pcap"/>"#), &origin).unwrap();
        match &s.steps[0].actions[..] {
            [Action::PlayPcap { media, capture }] => {
                assert_eq!(*media, MediaKind::Video);
                assert_eq!(capture.packets.len(), 2);
                assert_eq!(capture.duration_us(), 20_000);
            }
            other => panic!("{other:?}"),
        }
        let e =
            Scenario::parse(&xml(r#"<exec play_pcap_audio="none.pcap"/>"#), &origin).unwrap_err();
        assert!(e.message.contains("none.pcap"), "{e}");
        let s = Scenario::parse(
            &xml(r#"<exec command="echo [call_id] >> /tmp/x"/><exec int_cmd="stop_gracefully"/>"#),
            "s.xml",
        )
        .unwrap();
        assert!(matches!(
            &s.steps[0].actions[..],
            [Action::Command(_), Action::IntCmd(IntCmd::StopGracefully)]
        ));
        for bad in [
            r#"<exec int_cmd="stop_later"/>"#,
            r#"<exec/>"#,
            r#"<exec command="a" int_cmd="stop_now"/>"#,
        ] {
            let e = Scenario::parse(&xml(bad), "s.xml").unwrap_err();
            assert_eq!(e.element, "exec", "{bad}: {e}");
        }
    }

    #[test]
    fn globals_verifyauth_and_error_are_read() {
        let s = parse(
            r#"<Global variables="password, realm"/><User variables="u"/>
            <recv request="REGISTER" hide="true"><action>
              <verifyauth assign_to="ok" username="[service]" password="[$password]"/>
            </action></recv>
            <nop hide="true" test="ok" next="good"/>
            <nop><action><error message="bad credentials"/></action></nop>
            <label id="good"/>"#,
        )
        .unwrap();
        let name = |id: &VarId| s.vars[usize::from(id.0)].as_str();
        assert_eq!(
            s.globals.iter().map(name).collect::<Vec<_>>(),
            ["password", "realm"]
        );
        assert!(matches!(s.steps[0].actions[0], Action::VerifyAuth { .. }));
        assert!(matches!(s.steps[2].actions[0], Action::Error { .. }));
        let e = parse(r#"<nop><action><verifyauth assign_to="ok" username="u"/></action></nop>"#)
            .unwrap_err();
        assert!(e.message.contains("password"), "{e}");
        let e = parse(r#"<Global/><nop/>"#).unwrap_err();
        assert!(e.message.contains("variables"), "{e}");
    }
}
