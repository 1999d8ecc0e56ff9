//! SIPp's command line, as far as sbc-load implements it: the options keep
//! SIPp's single-dash names and meaning, so a SIPp command line runs after
//! replacing the program name. sbc-load's own options use two dashes.

// The options' doc comments are their `--help` text, in SIPp's words:
// `[field]` names a scenario keyword and `<elem>` an XML element, not
// rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Parser;

/// SIPp options sbc-load accepts (without the dash). Each is rewritten to
/// `--name` before clap sees it.
const SIPP_OPTIONS: &[&str] = &[
    "sf",
    "sn",
    "i",
    "p",
    "s",
    "r",
    "rp",
    "m",
    "l",
    "d",
    "t",
    "au",
    "ap",
    "inf",
    "infindex",
    "mi",
    "mp",
    "timeout",
    "timeout_error",
    "recv_timeout",
    "nr",
    "max_retrans",
    "max_invite_retrans",
    "max_non_invite_retrans",
    "T2",
    "nostdin",
    "deadcall_wait",
    "base_cseq",
    "cp",
    "ci",
    "send_timeout",
    "sendbuffer_warn",
    "max_reconnect",
    "reconnect_close",
    "reconnect_sleep",
    "ip_field",
    "oocsf",
    "oocsn",
    "trace_calldebug",
    "calldebug_file",
    "calldebug_overwrite",
    "watchdog_interval",
    "watchdog_reset",
    "watchdog_minor_threshold",
    "watchdog_major_threshold",
    "watchdog_minor_maxtriggers",
    "watchdog_major_maxtriggers",
    "rsa",
    "rtcheck",
    "periodic_rtd",
    "rtt_freq",
    "rtp_payload",
    "rtp_buffsize",
    "rtp_threadtasks",
    "audiotolerance",
    "videotolerance",
    "random_base_ssrc",
    "rtpcheck_debug",
    "srtpcheck_debug",
    "mb",
    "rate_scale",
    "set",
    "aa",
    "nd",
    "default_behaviors",
    "rtp_echo",
    "trace_stat",
    "stf",
    "fd",
    "users",
    "rate_increase",
    "rate_max",
    "no_rate_quit",
    "trace_msg",
    "trace_err",
    "message_file",
    "error_file",
    "3pcc",
    "trace_screen",
    "screen_file",
    "trace_rtt",
    "key",
    "dynamicStart",
    "dynamicMax",
    "dynamicStep",
    "rfc3339",
    "bg",
    "trace_logs",
    "log_file",
    "trace_counts",
    "tdmmap",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "master",
    "slave",
    "slave_cfg",
    "sd",
    "max_socket",
    "tls_crl",
    "tls_version",
    "rate_interval",
    "trace_error_codes",
    "stat_delimiter",
    "lost",
    "sleep",
    "skip_rlimit",
    "bind_local",
    "buff_size",
    "cid_str",
    "auth_uri",
    "f",
    "timer_resol",
    "max_recv_loops",
    "max_sched_loops",
    "error_overwrite",
    "log_overwrite",
    "message_overwrite",
    "screen_overwrite",
    "max_log_size",
    "ringbuffer_files",
    "ringbuffer_size",
    "trace_shortmsg",
    "shortmessage_file",
    "shortmessage_overwrite",
    "pause_msg_ign",
    "callid_slash_ign",
];

/// SIPp options sbc-load knows but cannot take, and why: an error names
/// them rather than ignoring them.
const UNSUPPORTED: &[(&str, &str)] = &[(
    "plugin",
    "a SIPp plugin is a C++ shared object built against SIPp's own internals, which sbc-load does not have",
)];

/// SCTP's options (sbc-load has no SCTP transport).
const SCTP: &[&str] = &[
    "multihome",
    "heartbeat",
    "assocmaxret",
    "pathmaxret",
    "pmtu",
    "gracefulclose",
];

/// A SIP load generator that runs SIPp XML scenarios on every core.
#[derive(Debug, Parser)]
#[command(
    name = "sbc-load",
    version,
    // As SIPp: an option given twice takes its last value.
    args_override_self = true,
    about = "SIP load generator: runs SIPp XML scenarios (caller and callee) with SIPp's options, one io_uring thread per core",
    after_help = "SIPp options are written with one dash, as in SIPp (-sf, -sn, -r, -m ...). \
                  Exit status (as SIPp's): 0 every call succeeded, 1 some call failed (or the scenario \
                  could not be loaded), 97 -timeout reached with no call processed, 254 a socket \
                  could not be bound, 255 another error or -timeout_error reached."
)]
pub struct Args {
    /// Remote host[:port] the calls go to (caller scenarios).
    pub remote: Option<String>,

    /// Scenario file (SIPp XML).
    #[arg(long = "sf", value_name = "FILE")]
    pub scenario_file: Option<PathBuf>,
    /// Built-in scenario: uac (caller) or uas (callee).
    #[arg(long = "sn", value_name = "NAME")]
    pub scenario_name: Option<String>,
    /// Prints a built-in scenario (uac or uas) and exits.
    #[arg(long = "sd", value_name = "NAME")]
    pub dump_scenario: Option<String>,
    /// Local IP address (bind and [local_ip]).
    #[arg(long = "i", value_name = "IP")]
    pub local_ip: Option<IpAddr>,
    /// Local port; callers with several threads use port, port+1, ...
    /// (default: 5060 for a callee, any free port for a caller).
    #[arg(long = "p", value_name = "PORT")]
    pub local_port: Option<u16>,
    /// [service]: the user part of the Request-URI.
    #[arg(long = "s", value_name = "SERVICE", default_value = "service")]
    pub service: String,
    /// Calls per rate period (see -rp).
    #[arg(long = "r", value_name = "RATE", default_value_t = 10.0)]
    pub rate: f64,
    /// Rate period in milliseconds.
    #[arg(long = "rp", value_name = "MS", default_value_t = 1000)]
    pub rate_period_ms: u64,
    /// Stop after this many calls.
    #[arg(long = "m", value_name = "CALLS")]
    pub max_calls: Option<u64>,
    /// Most calls open at once (default, as SIPp: 3 x rate x the longer
    /// of the scenario's pauses, -d and 1 s).
    #[arg(long = "l", value_name = "CALLS")]
    pub limit: Option<usize>,
    /// Length of <pause/> without milliseconds, in ms.
    #[arg(long = "d", value_name = "MS", default_value_t = 0)]
    pub duration_ms: u64,
    /// Transport mode: u1 (UDP, one socket; sbc-load uses one per thread),
    /// t1 / tn (TCP, a connection per thread / per call), l1 / ln (TLS,
    /// likewise).
    #[arg(long = "t", value_name = "MODE", default_value = "u1")]
    pub transport: String,
    /// TLS: the certificate (chain) presented, PEM (SIPp's default
    /// cacert.pem). A side that listens needs it; a caller presents it
    /// when it loads (client authentication).
    #[arg(long = "tls_cert", value_name = "FILE", default_value = "cacert.pem")]
    pub tls_cert: std::path::PathBuf,
    /// TLS: the certificate's private key, PEM (default cakey.pem).
    #[arg(long = "tls_key", value_name = "FILE", default_value = "cakey.pem")]
    pub tls_key: std::path::PathBuf,
    /// TLS: verify the peer's certificate against these CA certificates,
    /// PEM: a caller the server's, a callee each caller's, which it then
    /// requires (without it, as SIPp, no certificate is checked; the
    /// handshake's signatures still are).
    #[arg(long = "tls_ca", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// TLS: the CA's revocation list (PEM); needs -tls_ca.
    #[arg(long = "tls_crl", value_name = "FILE")]
    pub tls_crl: Option<std::path::PathBuf>,
    /// TLS: the protocol version, 1.2 or 1.3 (default: negotiated).
    #[arg(long = "tls_version", value_name = "VERSION")]
    pub tls_version: Option<String>,
    /// Username for [authentication] (default: the -s service).
    #[arg(long = "au", value_name = "USER")]
    pub auth_user: Option<String>,
    /// Password for [authentication].
    #[arg(long = "ap", value_name = "PASSWORD", default_value = "password")]
    pub auth_pass: String,
    /// `-set NAME VALUE`: the starting value of the scenario's `<Global>`
    /// variable NAME (repeatable).
    #[arg(long = "set", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append, allow_hyphen_values = true)]
    pub set: Vec<String>,
    /// Injection file for [fieldN] (repeatable: [fieldN file=NAME] names
    /// one by its base name; the first is the default).
    #[arg(long = "inf", value_name = "FILE", action = clap::ArgAction::Append)]
    pub inject_files: Vec<PathBuf>,
    /// `-infindex FILE FIELD`: index an -inf file (its base name) by a
    /// field, for <lookup> (repeatable).
    #[arg(long = "infindex", num_args = 2, value_names = ["FILE", "FIELD"], action = clap::ArgAction::Append)]
    pub inf_index: Vec<String>,
    /// Media IP ([media_ip]).
    #[arg(long = "mi", value_name = "IP")]
    pub media_ip: Option<IpAddr>,
    /// Media port ([media_port]).
    #[arg(long = "mp", value_name = "PORT", default_value_t = 6000)]
    pub media_port: u16,
    /// After this long (seconds, or 500ms, 2m, 1h) no new call starts;
    /// open calls get 32 s more to end, then count as failed.
    #[arg(long = "timeout", value_name = "TIME")]
    pub timeout: Option<String>,
    /// With -timeout: stop at once at the timeout, exit status 255.
    #[arg(long = "timeout_error")]
    pub timeout_error: bool,
    /// Timeout in ms of a <recv> without its own timeout.
    #[arg(long = "recv_timeout", value_name = "MS")]
    pub recv_timeout_ms: Option<u64>,
    /// No UDP retransmissions.
    #[arg(long = "nr")]
    pub no_retrans: bool,
    /// Cap on retransmissions of any message (default 9; INVITE 5).
    #[arg(long = "max_retrans", value_name = "N")]
    pub max_retrans: Option<u32>,
    #[arg(long = "max_invite_retrans", value_name = "N")]
    pub max_invite_retrans: Option<u32>,
    #[arg(long = "max_non_invite_retrans", value_name = "N")]
    pub max_non_invite_retrans: Option<u32>,
    /// T2 (ms): the cap of non-INVITE retransmission intervals.
    #[arg(long = "T2", value_name = "MS", default_value_t = 4000)]
    pub t2_ms: u64,
    /// Do not read keys from the standard input.
    #[arg(long = "nostdin")]
    pub nostdin: bool,
    /// Answer INFO, NOTIFY, OPTIONS and UPDATE the scenario does not
    /// expect with 200 (the call goes on).
    #[arg(long = "aa")]
    pub auto_answer: bool,
    /// Echo the RTP (and video RTP) received on the media port (and port
    /// + 2) back to where it came from.
    #[arg(long = "rtp_echo")]
    pub rtp_echo: bool,
    /// Write SIPp's statistics file (CSV, SIPp's columns) every `-fd`
    /// seconds and at the end.
    #[arg(long = "trace_stat")]
    pub trace_stat: bool,
    /// The statistics file (default: SCENARIO_PID_.csv, as SIPp).
    #[arg(long = "stf", value_name = "FILE")]
    pub stat_file: Option<PathBuf>,
    /// Seconds between two lines of the statistics file.
    #[arg(long = "fd", value_name = "SECONDS", default_value_t = 60)]
    pub stat_period_s: u64,
    /// How often -rate_increase raises the rate (seconds, or 500ms, 2m;
    /// default: -fd).
    #[arg(long = "rate_interval", value_name = "TIME")]
    pub rate_interval: Option<String>,
    /// Write the status codes of unexpected responses, every -fd, to
    /// SCENARIO_PID_error_codes.csv (as SIPp).
    #[arg(long = "trace_error_codes")]
    pub trace_error_codes: bool,
    /// The separator of the statistics and counts files' columns.
    #[arg(long = "stat_delimiter", value_name = "TEXT", default_value = ";")]
    pub stat_delimiter: String,
    /// Percentage of messages dropped at random, each way, where a
    /// message sets no `lost` of its own.
    #[arg(long = "lost", value_name = "PERCENT")]
    pub lost: Option<f64>,
    /// Wait this long before starting (seconds, or 500ms, 2m).
    #[arg(long = "sleep", value_name = "TIME")]
    pub sleep: Option<String>,
    /// SIPp: do not check the descriptor limit. sbc-load never checks it
    /// (a socket that cannot open is reported when it happens).
    #[arg(long = "skip_rlimit")]
    pub skip_rlimit: bool,
    /// SIPp: bind sockets to -i. sbc-load always does.
    #[arg(long = "bind_local")]
    pub bind_local: bool,
    /// Send and receive buffer size of the UDP sockets (bytes; default 8
    /// MiB).
    #[arg(long = "buff_size", value_name = "BYTES")]
    pub buff_size: Option<usize>,
    /// A caller's Call-ID pattern: %u the call number, %p the process id,
    /// %s the local IP (SIPp's default %u-%p@%s).
    #[arg(long = "cid_str", value_name = "FORMAT")]
    pub cid_str: Option<String>,
    /// The URI of digest answers: sip:URI (default: the request's URI).
    #[arg(long = "auth_uri", value_name = "URI")]
    pub auth_uri: Option<String>,
    /// SIPp's screen refresh period; sbc-load prints its report at the
    /// end (taken, changes nothing).
    #[arg(long = "f", value_name = "SECONDS")]
    pub screen_period: Option<String>,
    /// SIPp's timer resolution; no effect on sbc-load's io_uring loop.
    #[arg(long = "timer_resol", value_name = "MS")]
    pub timer_resol: Option<String>,
    /// SIPp's receive batch per loop; no effect on sbc-load's loop.
    #[arg(long = "max_recv_loops", value_name = "N")]
    pub max_recv_loops: Option<String>,
    /// SIPp's scheduling batch per loop; no effect on sbc-load's loop.
    #[arg(long = "max_sched_loops", value_name = "N")]
    pub max_sched_loops: Option<String>,
    /// 3PCC: the twin's address. A scenario that sends the first twin
    /// message (`<sendCmd>` before any `<recvCmd>`) connects to it; one
    /// that starts with `<recvCmd>` listens there.
    #[arg(long = "3pcc", value_name = "IP:PORT")]
    pub three_pcc: Option<SocketAddr>,
    /// `-t un`: most call sockets open at once; past it, new calls share
    /// the open ones in turn (SIPp's default 50000).
    #[arg(long = "max_socket", value_name = "N", default_value_t = 50_000)]
    pub max_socket: usize,
    /// Extended 3PCC: this instance is the master of that name (its
    /// scenario sends the first command); needs -slave_cfg.
    #[arg(long = "master", value_name = "NAME")]
    pub master: Option<String>,
    /// Extended 3PCC: this instance is the slave of that name (its
    /// scenario waits for a command first); needs -slave_cfg.
    #[arg(long = "slave", value_name = "NAME")]
    pub slave: Option<String>,
    /// Extended 3PCC: each instance's address, one NAME;HOST:PORT a line.
    #[arg(long = "slave_cfg", value_name = "FILE")]
    pub slave_cfg: Option<PathBuf>,
    /// Write each response time measured to SCENARIO_PID_rtt.csv.
    #[arg(long = "trace_rtt")]
    pub trace_rtt: bool,
    /// Write the final screen (the report) to SCENARIO_PID_screen.log.
    #[arg(long = "trace_screen")]
    pub trace_screen: bool,
    /// The screen file's name.
    #[arg(long = "screen_file", value_name = "FILE")]
    pub screen_file: Option<PathBuf>,
    /// Log every SIP message sent and received (SCENARIO_PID_messages.log).
    #[arg(long = "trace_msg")]
    pub trace_msg: bool,
    /// Log warnings and errors (SCENARIO_PID_errors.log).
    #[arg(long = "trace_err")]
    pub trace_err: bool,
    /// The message log's name.
    #[arg(long = "message_file", value_name = "FILE")]
    pub message_file: Option<PathBuf>,
    /// `-tdmmap {X-X'}{H}{Y-Y'}{Z-Z'}`: a table of TDM circuits, one per
    /// call ([tdmmap]); a call with none free fails (one thread).
    #[arg(long = "tdmmap", value_name = "MAP")]
    pub tdmmap: Option<String>,
    /// Write SIPp's counts file (SCENARIO_PID_counts.csv) every -fd
    /// seconds.
    #[arg(long = "trace_counts")]
    pub trace_counts: bool,
    /// Write each <log> action's message to SCENARIO_PID_logs.log.
    #[arg(long = "trace_logs")]
    pub trace_logs: bool,
    /// The <log> file's name (with -trace_logs).
    #[arg(long = "log_file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// The errors file's name.
    #[arg(long = "error_file", value_name = "FILE")]
    pub error_file: Option<PathBuf>,
    /// Take Call-IDs whole: `///` in one does not end a prefix before
    /// the call's own id.
    #[arg(long = "callid_slash_ign")]
    pub callid_slash_ign: bool,
    /// Drop the messages a call receives while it is in a `<pause>`.
    #[arg(long = "pause_msg_ign")]
    pub pause_msg_ign: bool,
    /// Log a line per SIP message sent and received (time, S or R,
    /// Call-ID, CSeq, start line: SCENARIO_PID_shortmessages.log).
    #[arg(long = "trace_shortmsg")]
    pub trace_shortmsg: bool,
    /// The short message log's name.
    #[arg(long = "shortmessage_file", value_name = "FILE")]
    pub shortmessage_file: Option<PathBuf>,
    #[arg(long = "shortmessage_overwrite", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub shortmessage_overwrite: bool,
    /// `false`: the message log is appended to when it opens, not
    /// truncated (SIPp's `-message_overwrite`; also `-error_overwrite`,
    /// `-log_overwrite`, `-screen_overwrite`).
    /// Write what each failed or aborted call did (every message sent and
    /// received, timed) to SCENARIO_PID_calldebug.log.
    #[arg(long = "trace_calldebug")]
    pub trace_calldebug: bool,
    /// The call debug file's name.
    #[arg(long = "calldebug_file", value_name = "FILE")]
    pub calldebug_file: Option<PathBuf>,
    /// Whether the call debug file is truncated (else added to).
    #[arg(long = "calldebug_overwrite", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub calldebug_overwrite: bool,
    #[arg(long = "message_overwrite", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub message_overwrite: bool,
    #[arg(long = "error_overwrite", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub error_overwrite: bool,
    #[arg(long = "log_overwrite", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub log_overwrite: bool,
    #[arg(long = "screen_overwrite", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub screen_overwrite: bool,
    /// Past this many bytes a trace file (messages, errors, `<log>`) is
    /// closed and written no more (0: no limit).
    #[arg(long = "max_log_size", value_name = "BYTES", default_value_t = 0)]
    pub max_log_size: u64,
    /// Past this many bytes a trace file starts again (0: never).
    #[arg(long = "ringbuffer_size", value_name = "BYTES", default_value_t = 0)]
    pub ringbuffer_size: u64,
    /// How many full trace files are kept, each named after the time it
    /// began (with -ringbuffer_size).
    #[arg(long = "ringbuffer_files", value_name = "N", default_value_t = 0)]
    pub ringbuffer_files: usize,
    /// `-key NAME VALUE`: the generic keyword [NAME] (repeatable).
    #[arg(long = "key", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append, allow_hyphen_values = true)]
    pub key: Vec<String>,
    /// First value of [dynamic_id].
    #[arg(long = "dynamicStart", value_name = "N", default_value_t = 10_000)]
    pub dynamic_start: u64,
    /// [dynamic_id] goes back to -dynamicStart past this.
    #[arg(long = "dynamicMax", value_name = "N", default_value_t = 12_000)]
    pub dynamic_max: u64,
    /// [dynamic_id]'s step.
    #[arg(long = "dynamicStep", value_name = "N", default_value_t = 4)]
    pub dynamic_step: u64,
    /// [timestamp] and the statistics file's times in RFC 3339.
    #[arg(long = "rfc3339")]
    pub rfc3339: bool,
    /// Background mode: print the PID of a child that runs the load with
    /// standard input and output on /dev/null, and exit (99, as SIPp).
    #[arg(long = "bg")]
    pub background: bool,
    /// Keep this many calls open at once (a new one as each ends) instead
    /// of starting them at a rate.
    #[arg(long = "users", value_name = "N")]
    pub users: Option<usize>,
    /// Raise the rate by this much (as -r) every -fd seconds.
    #[arg(long = "rate_increase", value_name = "N")]
    pub rate_increase: Option<f64>,
    /// With -rate_increase: stop creating calls once the rate reaches
    /// this (as -r), and end the run as the open calls end.
    #[arg(long = "rate_max", value_name = "N")]
    pub rate_max: Option<f64>,
    /// With -rate_max: go on at that rate instead of ending.
    #[arg(long = "no_rate_quit")]
    pub no_rate_quit: bool,
    /// No default behaviours (no BYE on a failed call, unexpected messages
    /// ignored, no answer to OPTIONS pings).
    #[arg(long = "nd")]
    pub no_default_behaviors: bool,
    /// SIPp's default behaviours: all, none, or a comma list of bye,
    /// abortunexp, pingreply (-name takes one away from all).
    #[arg(
        long = "default_behaviors",
        value_name = "LIST",
        allow_hyphen_values = true
    )]
    pub default_behaviors: Option<String>,
    /// How long (ms) messages of ended calls are absorbed quietly.
    #[arg(long = "deadcall_wait", value_name = "MS", default_value_t = 33_000)]
    pub deadcall_wait_ms: u64,
    /// The remote-control UDP port (SIPp's keys, and `c` commands such as
    /// "cset rate 100"); without it, the first free from 8888.
    #[arg(long = "cp", value_name = "PORT")]
    pub control_port: Option<u16>,
    /// Send every SIP message to this HOST:PORT instead of the remote
    /// host (which `[remote_ip]` and `[remote_port]` still name).
    #[arg(long = "rsa", value_name = "HOST:PORT")]
    pub rsa: Option<String>,
    /// How a retransmission is told: `full` (the same bytes) or `loose`
    /// (the same To, From, Call-ID and CSeq, and for a response the same
    /// status line and body).
    #[arg(long = "rtcheck", value_name = "full|loose", default_value = "full")]
    pub rtcheck: String,
    /// Response-time repartitions in the statistics file count each
    /// period only (not the whole run).
    #[arg(long = "periodic_rtd")]
    pub periodic_rtd: bool,
    /// With -trace_rtt: the file is written every N response times.
    #[arg(long = "rtt_freq", value_name = "N", default_value_t = 200)]
    pub rtt_freq: u64,
    /// The payload type of an `rtp_stream` that names none.
    #[arg(long = "rtp_payload", value_name = "PT", default_value_t = 0)]
    pub rtp_payload: u8,
    /// The send and receive buffer of each media socket (bytes).
    #[arg(long = "rtp_buffsize", value_name = "BYTES")]
    pub rtp_buffsize: Option<usize>,
    /// SIPp's RTP playback tasks per thread: sbc-load plays media on its
    /// load threads, so this changes nothing (the report says so).
    #[arg(long = "rtp_threadtasks", value_name = "N")]
    pub rtp_threadtasks: Option<u64>,
    /// SIPp's RTP check: the share of an audio pattern stream's packets
    /// that may come back wrong or not at all (0.0 to 1.0; 1.0: the check
    /// fails only when none came back right).
    #[arg(long = "audiotolerance", value_name = "SHARE", default_value_t = 1.0)]
    pub audio_tolerance: f64,
    /// The same for video pattern streams.
    #[arg(long = "videotolerance", value_name = "SHARE", default_value_t = 1.0)]
    pub video_tolerance: f64,
    /// RTP streams' SSRCs count up from a random base, not 0xCA110000.
    #[arg(long = "random_base_ssrc")]
    pub random_base_ssrc: bool,
    /// SIPp's debug traces of its RTP checks (sbc-load: see the report).
    #[arg(long = "rtpcheck_debug")]
    pub rtpcheck_debug: bool,
    #[arg(long = "srtpcheck_debug")]
    pub srtpcheck_debug: bool,
    /// The RTP echo's buffer: longer packets are echoed cut to it.
    #[arg(long = "mb", value_name = "BYTES", default_value_t = 2048)]
    pub media_bufsize: usize,
    /// How often (ms) each load thread's watchdog runs (0: none): a run
    /// later than the thresholds below is a trip (an overloaded machine).
    #[arg(long = "watchdog_interval", value_name = "MS", default_value_t = 400)]
    pub watchdog_interval: u64,
    /// Trip counts start again after this long (ms) without one.
    #[arg(long = "watchdog_reset", value_name = "MS", default_value_t = 600_000)]
    pub watchdog_reset: u64,
    /// A run this much later (ms) than the last is a minor trip.
    #[arg(
        long = "watchdog_minor_threshold",
        value_name = "MS",
        default_value_t = 500
    )]
    pub watchdog_minor_threshold: u64,
    /// A run this much later (ms) than the last is a major trip.
    #[arg(
        long = "watchdog_major_threshold",
        value_name = "MS",
        default_value_t = 3000
    )]
    pub watchdog_major_threshold: u64,
    /// Minor trips allowed before the run ends (negative: any number).
    #[arg(
        long = "watchdog_minor_maxtriggers",
        value_name = "N",
        default_value_t = 120,
        allow_hyphen_values = true
    )]
    pub watchdog_minor_maxtriggers: i64,
    /// Major trips allowed before the run ends (negative: any number).
    #[arg(
        long = "watchdog_major_maxtriggers",
        value_name = "N",
        default_value_t = 10,
        allow_hyphen_values = true
    )]
    pub watchdog_major_maxtriggers: i64,
    /// A caller's out-of-call scenario: a request of no call starts a call
    /// of it (e.g. answering the far end's OPTIONS).
    #[arg(long = "oocsf", value_name = "FILE")]
    pub oocsf: Option<PathBuf>,
    /// A built-in out-of-call scenario (ooc_default answers 200).
    #[arg(long = "oocsn", value_name = "NAME")]
    pub oocsn: Option<String>,
    /// With `-t ui`: the field of the first `-inf` file that names each
    /// call's source address.
    #[arg(long = "ip_field", value_name = "N", default_value_t = 0)]
    pub ip_field: usize,
    /// TCP/TLS: how many times a caller reconnects after losing its
    /// connection before the run ends (without it: as often as needed).
    #[arg(long = "max_reconnect", value_name = "N")]
    pub max_reconnect: Option<u64>,
    /// Whether the calls of a lost connection fail (else they go on over
    /// the next one).
    #[arg(long = "reconnect_close", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set, default_value = "true")]
    pub reconnect_close: bool,
    /// How long (ms) to wait before reconnecting (with -max_reconnect).
    #[arg(long = "reconnect_sleep", value_name = "MS", default_value_t = 1000)]
    pub reconnect_sleep: u64,
    /// SIPp's send timeout (ms) for messages held back by congestion:
    /// sbc-load never holds one back (UDP sends wait for a send slot, TCP
    /// output is queued), so it changes nothing (the report says so).
    #[arg(long = "send_timeout", value_name = "MS")]
    pub send_timeout: Option<u64>,
    /// SIPp's choice between a warning and an error when a message of its
    /// own cannot be sent: sbc-load counts such sends as send errors
    /// either way (the report says so).
    #[arg(long = "sendbuffer_warn", value_name = "BOOL", value_parser = sipp_bool, action = clap::ArgAction::Set)]
    pub sendbuffer_warn: Option<bool>,
    /// The remote-control socket's address (default: every IPv4 address).
    #[arg(long = "ci", value_name = "IP")]
    pub control_ip: Option<IpAddr>,
    /// How much the keys + - (once) and * / (ten times) change the rate,
    /// or the users.
    #[arg(long = "rate_scale", value_name = "N", default_value_t = 1.0)]
    pub rate_scale: f64,
    /// How long (ms) a callee whose call ended with an answer (200 to BYE)
    /// still answers that request's retransmissions; sbc-load waits for it
    /// before exiting.
    #[arg(long = "timewait-ms", value_name = "MS", default_value_t = 4000)]
    pub timewait_ms: u64,
    /// Initial [cseq].
    #[arg(long = "base_cseq", value_name = "N", default_value_t = 1)]
    pub base_cseq: u64,

    /// Threads, each with its own socket and io_uring (default: one per
    /// core).
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Wake-up coalescing in microseconds: a thread sleeps until 64
    /// completions are ready or this long has passed (0: wake on each).
    /// Adds at most this much to measured response times.
    #[arg(long = "batch-wait-us", value_name = "US", default_value_t = 200)]
    pub batch_wait_us: u64,
    /// Pin thread i to core i.
    #[arg(long = "pin")]
    pub pin: bool,
    /// Connect a caller's sockets to the remote host: the kernel keeps the
    /// route (cheaper sends), and only datagrams from that address are
    /// received (a peer answering from another address is not heard).
    #[arg(long = "connect")]
    pub connect: bool,
    /// Also write the report as JSON to this file.
    #[arg(long = "json", value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print only the report's summary line.
    #[arg(long = "quiet")]
    pub quiet: bool,
}

/// Rewrites SIPp's single-dash options to clap's double-dash form, and
/// refuses SIPp options sbc-load does not implement.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    // Values that may start with a dash (-set NAME VALUE,
    // -default_behaviors -bye) are passed as they are.
    let mut values = 0;
    for (i, a) in args.into_iter().enumerate() {
        if values > 0 {
            values -= 1;
            out.push(a);
            continue;
        }
        if i > 0
            && let Some(name) = a.strip_prefix('-')
            && !name.starts_with('-')
            && !name.is_empty()
            && (!name.starts_with(|c: char| c.is_ascii_digit()) || name == "3pcc")
        {
            if SIPP_OPTIONS.contains(&name) {
                values = match name {
                    "set" | "key" | "infindex" => 2,
                    "default_behaviors" => 1,
                    _ => 0,
                };
                out.push(format!("--{name}"));
                continue;
            }
            if SCTP.contains(&name) {
                return Err(format!(
                    "the SIPp option -{name} is for SCTP, which sbc-load does not run"
                ));
            }
            if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
                return Err(format!(
                    "the SIPp option -{name} is not supported by sbc-load: {why}"
                ));
            }
            if name == "h" || name == "v" || name == "V" {
                out.push(a);
                continue;
            }
            return Err(format!("unknown option -{name}"));
        }
        out.push(a);
    }
    Ok(out)
}

/// Parses a time option's value (`-timeout`, `-sleep`, `-rate_interval`):
/// seconds, or a number with ms, s, m or h. The error names the value;
/// the caller names the option.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n.saturating_mul(mult))
        .map_err(|_| format!("{s}: expected a number of seconds (or 500ms, 2m, 1h)"))
}

/// Resolves `host[:port]` (default port 5060).
/// The host part of the remote argument, as SIPp's `[remote_host]`:
/// without the port, an IPv6 address without its brackets.
pub fn remote_host(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return &rest[..end];
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => s,
    }
}

pub fn parse_remote(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 5060));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:5060")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("remote host {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("remote host {s}: no address"))
}

/// A boolean as SIPp reads one: `true` or `false` (any case), or a
/// number (zero is false).
fn sipp_bool(text: &str) -> Result<bool, String> {
    if text.eq_ignore_ascii_case("true") {
        return Ok(true);
    }
    if text.eq_ignore_ascii_case("false") {
        return Ok(false);
    }
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if text.len() > 1 && text.starts_with('0') => (&text[1..], 8),
        None => (text, 10),
    };
    i64::from_str_radix(digits, radix)
        .map(|n| n != 0)
        .map_err(|_| format!("\"{text}\" is not a valid boolean"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(line: &str) -> Result<Args, String> {
        let args = normalize(line.split_whitespace().map(String::from))?;
        Args::try_parse_from(args).map_err(|e| e.to_string())
    }

    #[test]
    fn a_sipp_command_line_parses() {
        let a = parse(
            "sipp -sf uac.xml -s 1000 -i 127.0.0.1 -p 15061 127.0.0.1:15060 -t u1 -m 20 -r 10 -rp 1000 -d 1000 -timeout 60 -timeout_error -nostdin -au bob -ap pw -inf f.csv -mp 7000 -l 50",
        )
        .unwrap();
        assert_eq!(a.scenario_file, Some(PathBuf::from("uac.xml")));
        assert_eq!(a.service, "1000");
        assert_eq!(a.local_port, Some(15061));
        assert_eq!(a.remote.as_deref(), Some("127.0.0.1:15060"));
        assert_eq!(a.max_calls, Some(20));
        assert_eq!(a.rate, 10.0);
        assert_eq!(a.duration_ms, 1000);
        assert_eq!(a.limit, Some(50));
        assert_eq!(a.auth_user.as_deref(), Some("bob"));
        assert_eq!(a.auth_pass, "pw");
        assert_eq!(a.media_port, 7000);
        assert!(a.timeout_error && a.nostdin);
    }

    #[test]
    fn trace_file_growth_options_parse_as_sipp_reads_them() {
        let a = parse("sipp -sn uac 127.0.0.1").unwrap();
        assert!(a.message_overwrite && a.error_overwrite && a.log_overwrite && a.screen_overwrite);
        assert_eq!(
            (a.max_log_size, a.ringbuffer_size, a.ringbuffer_files),
            (0, 0, 0)
        );
        let a = parse(
            "sipp -sn uac -message_overwrite false -error_overwrite 0 -log_overwrite FALSE -screen_overwrite 0x1 -max_log_size 100000 -ringbuffer_size 5000 -ringbuffer_files 3 127.0.0.1",
        )
        .unwrap();
        assert!(!a.message_overwrite && !a.error_overwrite && !a.log_overwrite);
        assert!(a.screen_overwrite);
        assert_eq!(
            (a.max_log_size, a.ringbuffer_size, a.ringbuffer_files),
            (100_000, 5000, 3)
        );
        let e = parse("sipp -sn uac -message_overwrite maybe 127.0.0.1").unwrap_err();
        assert!(e.contains("not a valid boolean"), "{e}");
        assert_eq!(sipp_bool("010"), Ok(true), "octal, as strtol reads it");
        assert_eq!(sipp_bool("00"), Ok(false));
    }

    #[test]
    fn media_and_retransmission_options_parse() {
        let a = parse("sipp -sn uac 127.0.0.1").unwrap();
        assert_eq!(
            (
                a.rtcheck.as_str(),
                a.rtt_freq,
                a.rtp_payload,
                a.media_bufsize
            ),
            ("full", 200, 0, 2048)
        );
        assert_eq!((a.rate_scale, a.periodic_rtd), (1.0, false));
        let a = parse(
            "sipp -sn uac -rsa 127.0.0.2:5999 -rtcheck loose -periodic_rtd -rtt_freq 5 -rtp_payload 8 -rtp_buffsize 65536 -rtp_threadtasks 4 -mb 1000 -rate_scale 2.5 -cp 9000 -ci 127.0.0.3 127.0.0.1",
        )
        .unwrap();
        assert_eq!(a.rsa.as_deref(), Some("127.0.0.2:5999"));
        assert_eq!(
            (
                a.rtcheck.as_str(),
                a.rtt_freq,
                a.rtp_payload,
                a.media_bufsize
            ),
            ("loose", 5, 8, 1000)
        );
        assert_eq!((a.rtp_buffsize, a.rtp_threadtasks), (Some(65_536), Some(4)));
        assert!(a.periodic_rtd);
        assert_eq!(a.rate_scale, 2.5);
        assert_eq!(a.control_port, Some(9000));
        assert_eq!(a.control_ip, Some("127.0.0.3".parse().unwrap()));
        assert!(parse("sipp -sn uac -rtp_payload 300 127.0.0.1").is_err());
        // The watchdog's, with SIPp's defaults.
        let a = parse("sipp -sn uac 127.0.0.1").unwrap();
        assert_eq!(
            (
                a.watchdog_interval,
                a.watchdog_reset,
                a.watchdog_minor_threshold
            ),
            (400, 600_000, 500)
        );
        assert_eq!(
            (
                a.watchdog_major_threshold,
                a.watchdog_minor_maxtriggers,
                a.watchdog_major_maxtriggers
            ),
            (3000, 120, 10)
        );
        let a = parse(
            "sipp -sn uac -trace_calldebug -calldebug_file c.log -calldebug_overwrite false 127.0.0.1",
        )
        .unwrap();
        assert!(a.trace_calldebug && !a.calldebug_overwrite);
        assert_eq!(a.calldebug_file, Some(PathBuf::from("c.log")));
        let a = parse("sipp -sn uac -oocsf ooc.xml -oocsn ooc_default 127.0.0.1").unwrap();
        assert_eq!(a.oocsf, Some(PathBuf::from("ooc.xml")));
        assert_eq!(a.oocsn.as_deref(), Some("ooc_default"));
        let a = parse("sipp -sn uac -t ui -inf ips.csv -ip_field 2 127.0.0.1").unwrap();
        assert_eq!((a.transport.as_str(), a.ip_field), ("ui", 2));
        let a = parse("sipp -sn uac 127.0.0.1").unwrap();
        assert_eq!(
            (a.max_reconnect, a.reconnect_close, a.reconnect_sleep),
            (None, true, 1000)
        );
        assert_eq!((a.send_timeout, a.sendbuffer_warn), (None, None));
        let a = parse("sipp -sn uac -send_timeout 500 -sendbuffer_warn true 127.0.0.1").unwrap();
        assert_eq!((a.send_timeout, a.sendbuffer_warn), (Some(500), Some(true)));
        let a = parse(
            "sipp -sn uac -t t1 -max_reconnect 3 -reconnect_close false -reconnect_sleep 50 127.0.0.1",
        )
        .unwrap();
        assert_eq!(
            (a.max_reconnect, a.reconnect_close, a.reconnect_sleep),
            (Some(3), false, 50)
        );
        let a = parse("sipp -sn uac -watchdog_interval 0 -watchdog_minor_maxtriggers -1 127.0.0.1")
            .unwrap();
        assert_eq!((a.watchdog_interval, a.watchdog_minor_maxtriggers), (0, -1));
    }

    #[test]
    fn set_takes_a_name_and_a_value_each_time() {
        let a = parse("sipp -sn uas -set password s3cret -set realm itsp.example").unwrap();
        assert_eq!(a.set, ["password", "s3cret", "realm", "itsp.example"]);
        // Values may start with a dash.
        let a = parse("sipp -sn uas -set offset -5 -default_behaviors -bye,+pingreply").unwrap();
        assert_eq!(a.set, ["offset", "-5"]);
        assert_eq!(a.default_behaviors.as_deref(), Some("-bye,+pingreply"));
        assert!(parse("sipp -sn uas -set password").is_err());
    }

    #[test]
    fn unsupported_and_unknown_options_are_named() {
        let e = parse("sipp -sn uac -plugin x.so 127.0.0.1").unwrap_err();
        let a = parse("sipp -sn uac -tdmmap {0-3}{99}{5-8}{1-31} 127.0.0.1").unwrap();
        assert_eq!(a.tdmmap.as_deref(), Some("{0-3}{99}{5-8}{1-31}"));
        assert!(e.contains("-plugin") && e.contains("not supported"), "{e}");
        assert!(e.contains("SIPp's own internals"), "the reason: {e}");
        // The RTP check's options.
        let a = parse("sipp -sn uac -audiotolerance 0.25 -videotolerance 0.5 -random_base_ssrc -rtpcheck_debug -srtpcheck_debug 127.0.0.1").unwrap();
        assert_eq!((a.audio_tolerance, a.video_tolerance), (0.25, 0.5));
        assert!(a.random_base_ssrc && a.rtpcheck_debug && a.srtpcheck_debug);
        let a = parse("sipp -sn uac 127.0.0.1").unwrap();
        assert_eq!((a.audio_tolerance, a.video_tolerance), (1.0, 1.0));
        let a = parse(
            "sipp -sf s.xml -slave s1 -slave_cfg x.cfg -tls_version 1.2 -tls_crl c.crl 127.0.0.1",
        )
        .unwrap();
        assert_eq!(
            (a.slave.as_deref(), a.tls_version.as_deref()),
            (Some("s1"), Some("1.2"))
        );
        let a = parse("sipp -sn uac -key host x.example -key n -2 -inf a.csv -inf b/c.csv -infindex c.csv 0 -bg 127.0.0.1").unwrap();
        assert_eq!(a.key, ["host", "x.example", "n", "-2"]);
        assert_eq!(a.inject_files.len(), 2);
        assert_eq!(a.inf_index, ["c.csv", "0"]);
        assert!(a.background);
        assert_eq!(remote_host("[::1]:5070"), "::1");
        assert_eq!(remote_host("sbc.example:5070"), "sbc.example");
        assert_eq!(remote_host("::1"), "::1");
        let e = parse("sipp -sn uac -multihome 127.0.0.2 127.0.0.1").unwrap_err();
        assert!(e.contains("-multihome") && e.contains("SCTP"), "{e}");
        let e = parse("sipp -sn uac -bogus 127.0.0.1").unwrap_err();
        assert!(e.contains("-bogus"), "{e}");
        let a = parse("sbc-load -sn uas --threads 2 --json out.json").unwrap();
        assert_eq!(a.threads, Some(2));
        // As SIPp, the last of an option given twice counts.
        let a = parse("sipp -sn uac -t u1 -max_socket 10 -t un 127.0.0.1").unwrap();
        assert_eq!((a.transport.as_str(), a.max_socket), ("un", 10));
        assert_eq!(parse("sipp -sn uac 127.0.0.1").unwrap().max_socket, 50_000);
    }

    #[test]
    fn durations_and_remotes() {
        assert_eq!(parse_duration_ms("60").unwrap(), 60_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("2m").unwrap(), 120_000);
        assert!(parse_duration_ms("x").is_err());
        assert_eq!(
            parse_remote("127.0.0.1").unwrap(),
            "127.0.0.1:5060".parse().unwrap()
        );
        assert_eq!(
            parse_remote("127.0.0.1:5070").unwrap(),
            "127.0.0.1:5070".parse().unwrap()
        );
        assert_eq!(parse_remote("localhost:5070").unwrap().port(), 5070);
    }
}
