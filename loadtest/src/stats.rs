//! Per-thread counters and response-time histograms, merged at the end.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::RTD_COUNT;

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// A message was retransmitted the maximum number of times.
    MaxRetrans,
    /// A message arrived that the scenario did not expect at that point.
    UnexpectedMessage,
    /// A `<recv>` timed out (its `timeout`, or `-recv_timeout`).
    RecvTimeout,
    /// An `ereg` with `check_it` did not match.
    RegexpNoMatch,
    /// An `ereg` with `check_it_inverse` matched.
    RegexpShouldntMatch,
    /// The run ended (`-timeout`, a signal) with the call still open.
    Aborted,
    /// The scenario jumped in a loop without waiting.
    ScenarioLoop,
    /// A datagram could not be sent.
    SendError,
    /// `[authentication]` found no usable challenge or credentials.
    AuthFailed,
    /// The scenario's `<error>` action ended the call.
    ErrorAction,
    /// `<exec int_cmd="stop_call">` in a `<recv>` ended the call (SIPp
    /// counts it as a failed, rejected call).
    Rejected,
    /// An `ereg` with `check_it` found no header (body, variable) to
    /// search.
    RegexpHdrNotFound,
    /// Its TCP connection could not be opened.
    TcpConnect,
    /// `-tdmmap`: every circuit was busy (SIPp's outbound congestion).
    OutboundCongestion,
    /// Its TCP connection was closed by the peer or broke (SIPp fails
    /// the calls of a closed connection, in their timewait too).
    TcpClosed,
    /// The 3PCC twin's call aborted (its `internal-cmd: abort_call`).
    TwinAborted,
}

impl FailReason {
    pub const ALL: [FailReason; 16] = [
        FailReason::MaxRetrans,
        FailReason::UnexpectedMessage,
        FailReason::RecvTimeout,
        FailReason::RegexpNoMatch,
        FailReason::RegexpShouldntMatch,
        FailReason::Aborted,
        FailReason::ScenarioLoop,
        FailReason::SendError,
        FailReason::AuthFailed,
        FailReason::ErrorAction,
        FailReason::Rejected,
        FailReason::RegexpHdrNotFound,
        FailReason::TcpConnect,
        FailReason::TcpClosed,
        FailReason::OutboundCongestion,
        FailReason::TwinAborted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailReason::MaxRetrans => "max retransmissions",
            FailReason::UnexpectedMessage => "unexpected message",
            FailReason::RecvTimeout => "receive timeout",
            FailReason::RegexpNoMatch => "regexp does not match",
            FailReason::RegexpShouldntMatch => "regexp matches but should not",
            FailReason::Aborted => "still open at the end",
            FailReason::ScenarioLoop => "scenario loops",
            FailReason::SendError => "send error",
            FailReason::AuthFailed => "authentication",
            FailReason::ErrorAction => "error action",
            FailReason::Rejected => "call rejected (stop_call)",
            FailReason::RegexpHdrNotFound => "regexp header not found",
            FailReason::TcpConnect => "TCP connection failed",
            FailReason::OutboundCongestion => "all tdm_map circuits busy",
            FailReason::TcpClosed => "TCP connection closed",
            FailReason::TwinAborted => "aborted by the 3PCC twin",
        }
    }
}

/// Per scenario step: what happened there.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepCounts {
    pub sent: u64,
    pub received: u64,
    /// A pause or nop run through.
    pub passed: u64,
    /// Messages dropped by the step's `lost`.
    pub lost: u64,
    pub retransmissions: u64,
    pub timeouts: u64,
    pub unexpected: u64,
    /// Calls waiting in this `<pause>` when the figures were taken.
    pub sessions: u64,
}

/// Response times in microseconds, 1 µs to 10 min, 3 significant digits.
#[allow(clippy::expect_used)]
pub fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (low >= 1, high >= 2 * low, sigfig <= 5): the
    // constructor cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub created: u64,
    pub succeeded: u64,
    pub failed: [u64; FailReason::ALL.len()],
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub retrans_sent: u64,
    /// Retransmissions received (and answered or absorbed).
    pub retrans_received: u64,
    /// Late optional messages absorbed (e.g. a 100 after the 180).
    pub absorbed: u64,
    /// Messages for calls that ended recently.
    pub dead_call_msgs: u64,
    /// Messages that belong to no call and start none.
    pub out_of_call_msgs: u64,
    /// Requests answered 200 by `-aa`.
    pub auto_answered: u64,
    /// The message of an `<error>` action that stopped the run.
    pub fatal: Option<String>,
    /// `<warning>` actions run.
    pub warnings: u64,
    /// Calls of the out-of-call scenario: started, succeeded, failed.
    pub ooc_calls: u64,
    pub ooc_succeeded: u64,
    pub ooc_failed: u64,
    /// The watchdog's major and minor trips (an overloaded machine).
    pub watchdog_major: u64,
    pub watchdog_minor: u64,
    pub parse_errors: u64,
    pub send_errors: u64,
    /// UDP GSO sends, and the datagrams they carried.
    pub gso_sends: u64,
    pub gso_datagrams: u64,
    /// Media datagrams sent (`play_pcap_*`, `rtp_stream`), and their
    /// payload bytes.
    pub rtp_packets_sent: u64,
    pub rtp_bytes_sent: u64,
    /// `exec command` shell commands started.
    pub commands_run: u64,
    /// `-rtp_echo` and `rtp_echo` actions: datagrams and bytes sent
    /// back.
    pub rtp_echoed_packets: u64,
    pub rtp_echoed_bytes: u64,
    /// SIPp's RTP check: pattern streams whose check passed and failed,
    /// and the packets that came back with their pattern.
    pub rtp_checks_passed: u64,
    pub rtp_checks_failed: u64,
    pub rtp_check_packets_ok: u64,
    /// SRTP packets refused (authentication failed, or not RTP).
    pub srtp_refused: u64,
    /// Responses received by status code (100..=699).
    pub responses: Vec<u64>,
    pub steps: Vec<StepCounts>,
    pub rtd: Vec<Histogram<u64>>,
    /// First INVITE sent -> first 180/183 received.
    pub invite_to_18x: Histogram<u64>,
    /// First INVITE sent -> first 2xx to the INVITE.
    pub invite_to_200: Histogram<u64>,
    pub call_length: Histogram<u64>,
}

impl Stats {
    pub fn new(steps: usize) -> Self {
        Stats {
            created: 0,
            succeeded: 0,
            failed: [0; FailReason::ALL.len()],
            msgs_sent: 0,
            msgs_received: 0,
            retrans_sent: 0,
            retrans_received: 0,
            absorbed: 0,
            dead_call_msgs: 0,
            out_of_call_msgs: 0,
            auto_answered: 0,
            fatal: None,
            warnings: 0,
            watchdog_major: 0,
            ooc_calls: 0,
            ooc_succeeded: 0,
            ooc_failed: 0,
            watchdog_minor: 0,
            parse_errors: 0,
            send_errors: 0,
            gso_sends: 0,
            gso_datagrams: 0,
            rtp_packets_sent: 0,
            rtp_bytes_sent: 0,
            commands_run: 0,
            rtp_echoed_packets: 0,
            rtp_echoed_bytes: 0,
            rtp_checks_passed: 0,
            rtp_checks_failed: 0,
            rtp_check_packets_ok: 0,
            srtp_refused: 0,
            responses: vec![0; 700],
            steps: vec![StepCounts::default(); steps],
            rtd: (0..RTD_COUNT).map(|_| histogram()).collect(),
            invite_to_18x: histogram(),
            invite_to_200: histogram(),
            call_length: histogram(),
        }
    }

    pub fn fail(&mut self, reason: FailReason) {
        if let Some(i) = FailReason::ALL.iter().position(|r| *r == reason)
            && let Some(n) = self.failed.get_mut(i)
        {
            *n += 1;
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    pub fn failed_by(&self, reason: FailReason) -> u64 {
        FailReason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.failed.get(i).copied())
            .unwrap_or(0)
    }

    pub fn step(&mut self, idx: usize) -> Option<&mut StepCounts> {
        self.steps.get_mut(idx)
    }

    pub fn record(h: &mut Histogram<u64>, micros: u64) {
        let _ = h.record(micros.clamp(1, 600_000_000));
    }

    /// Adds another thread's figures.
    pub fn merge(&mut self, o: &Stats) {
        self.created += o.created;
        self.succeeded += o.succeeded;
        for (a, b) in self.failed.iter_mut().zip(o.failed.iter()) {
            *a += b;
        }
        self.msgs_sent += o.msgs_sent;
        self.msgs_received += o.msgs_received;
        self.retrans_sent += o.retrans_sent;
        self.retrans_received += o.retrans_received;
        self.absorbed += o.absorbed;
        self.dead_call_msgs += o.dead_call_msgs;
        self.out_of_call_msgs += o.out_of_call_msgs;
        self.auto_answered += o.auto_answered;
        self.warnings += o.warnings;
        self.watchdog_major += o.watchdog_major;
        self.ooc_calls += o.ooc_calls;
        self.ooc_succeeded += o.ooc_succeeded;
        self.ooc_failed += o.ooc_failed;
        self.watchdog_minor += o.watchdog_minor;
        if self.fatal.is_none() {
            self.fatal.clone_from(&o.fatal);
        }
        self.parse_errors += o.parse_errors;
        self.send_errors += o.send_errors;
        self.gso_sends += o.gso_sends;
        self.gso_datagrams += o.gso_datagrams;
        self.rtp_packets_sent += o.rtp_packets_sent;
        self.rtp_bytes_sent += o.rtp_bytes_sent;
        self.commands_run += o.commands_run;
        self.rtp_echoed_packets += o.rtp_echoed_packets;
        self.rtp_echoed_bytes += o.rtp_echoed_bytes;
        self.rtp_checks_passed += o.rtp_checks_passed;
        self.rtp_checks_failed += o.rtp_checks_failed;
        self.rtp_check_packets_ok += o.rtp_check_packets_ok;
        self.srtp_refused += o.srtp_refused;
        for (a, b) in self.responses.iter_mut().zip(o.responses.iter()) {
            *a += b;
        }
        for (a, b) in self.steps.iter_mut().zip(o.steps.iter()) {
            a.sent += b.sent;
            a.received += b.received;
            a.sessions += b.sessions;
            a.passed += b.passed;
            a.lost += b.lost;
            a.retransmissions += b.retransmissions;
            a.timeouts += b.timeouts;
            a.unexpected += b.unexpected;
        }
        for (a, b) in self.rtd.iter_mut().zip(o.rtd.iter()) {
            let _ = a.add(b);
        }
        let _ = self.invite_to_18x.add(&o.invite_to_18x);
        let _ = self.invite_to_200.add(&o.invite_to_200);
        let _ = self.call_length.add(&o.call_length);
    }
}
