//! The end-of-run report: a table for people and JSON for tools.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::{Scenario, StepKind};
use crate::stats::{FailReason, Stats};

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Some(Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub index: usize,
    pub element: String,
    pub message: String,
    pub sent: u64,
    pub received: u64,
    /// Pauses and nops run through.
    pub passed: u64,
    /// Dropped by the step's `lost` (sent: not sent that time).
    pub lost: u64,
    pub retransmissions: u64,
    pub timeouts: u64,
    pub unexpected: u64,
}

#[derive(Debug, Serialize)]
pub struct FailureCount {
    pub reason: FailReason,
    pub label: &'static str,
    pub calls: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub role: &'static str,
    pub threads: usize,
    pub elapsed_s: f64,
    pub calls_created: u64,
    pub calls_succeeded: u64,
    pub calls_failed: u64,
    pub failures: Vec<FailureCount>,
    /// Calls completed (succeeded) per second of the run.
    pub achieved_cps: f64,
    /// Calls created per second of the run.
    pub offered_cps: f64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub retransmissions_sent: u64,
    pub retransmissions_received: u64,
    pub late_optional_absorbed: u64,
    pub dead_call_messages: u64,
    pub out_of_call_messages: u64,
    /// Requests answered 200 by `-aa`.
    pub auto_answered: u64,
    /// Calls of the out-of-call scenario (`-oocsf`): started, succeeded,
    /// failed.
    pub out_of_call_calls: u64,
    pub out_of_call_succeeded: u64,
    pub out_of_call_failed: u64,
    /// `<warning>` actions run.
    pub warnings: u64,
    pub parse_errors: u64,
    pub send_errors: u64,
    /// UDP GSO sends (several datagrams in one), and the datagrams in them.
    pub gso_sends: u64,
    pub gso_datagrams: u64,
    /// Media datagrams sent (`play_pcap_*`, `rtp_stream`), and their
    /// payload bytes.
    pub rtp_packets_sent: u64,
    pub rtp_bytes_sent: u64,
    /// `-rtp_echo` and `rtp_echo` actions: datagrams and bytes sent
    /// back.
    pub rtp_echoed_packets: u64,
    pub rtp_echoed_bytes: u64,
    /// SIPp's RTP check (`rtp_stream="apattern|vpattern"`): streams whose
    /// check passed and failed, packets that came back with the pattern.
    pub rtp_checks_passed: u64,
    pub rtp_checks_failed: u64,
    pub rtp_check_packets_ok: u64,
    /// SRTP packets refused (authentication failed).
    pub srtp_refused: u64,
    /// `<exec command>`: shell commands started (each a process, as in
    /// SIPp: costly at high call rates).
    pub commands_run: u64,
    /// Responses received, by status code.
    pub responses: Vec<(u16, u64)>,
    pub invite_to_18x: Option<Percentiles>,
    pub invite_to_200: Option<Percentiles>,
    /// `rtd="N"` counters the scenario uses (1-based name, percentiles).
    pub rtd: Vec<(usize, Percentiles)>,
    pub call_length: Option<Percentiles>,
    pub steps: Vec<StepReport>,
    /// The scenario's `counter`s: messages sent and received, pauses and
    /// nops run, by the steps counting under each.
    pub counters: Vec<(String, u64)>,
    /// What the run did not do as SIPp would (options that change
    /// nothing here), said rather than hidden.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(
        scn: &Scenario,
        role: &'static str,
        threads: usize,
        elapsed_s: f64,
        s: &Stats,
    ) -> Self {
        let steps = scn
            .steps
            .iter()
            .zip(s.steps.iter())
            .enumerate()
            .map(|(index, (step, c))| {
                let (element, message) = match &step.kind {
                    StepKind::Send { msg, .. } => (
                        "send",
                        msg.method()
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .unwrap_or_else(|| "response".into()),
                    ),
                    StepKind::Recv(r) => ("recv", r.expect.to_string()),
                    StepKind::Pause { length, timewait } => (
                        if *timewait { "timewait" } else { "pause" },
                        length.to_string(),
                    ),
                    StepKind::Nop => ("nop", String::new()),
                    StepKind::SendCmd { .. } => ("sendCmd", "3PCC".into()),
                    StepKind::RecvCmd { .. } => ("recvCmd", "3PCC".into()),
                };
                StepReport {
                    index,
                    element: element.into(),
                    message,
                    sent: c.sent,
                    received: c.received,
                    passed: c.passed,
                    lost: c.lost,
                    retransmissions: c.retransmissions,
                    timeouts: c.timeouts,
                    unexpected: c.unexpected,
                }
            })
            .collect();
        let secs = elapsed_s.max(1e-9);
        Report {
            scenario: scn.name.clone(),
            role,
            threads,
            elapsed_s,
            calls_created: s.created,
            calls_succeeded: s.succeeded,
            calls_failed: s.failed_total(),
            failures: FailReason::ALL
                .iter()
                .map(|&r| FailureCount {
                    reason: r,
                    label: r.label(),
                    calls: s.failed_by(r),
                })
                .filter(|f| f.calls > 0)
                .collect(),
            achieved_cps: s.succeeded as f64 / secs,
            offered_cps: s.created as f64 / secs,
            messages_sent: s.msgs_sent,
            messages_received: s.msgs_received,
            retransmissions_sent: s.retrans_sent,
            retransmissions_received: s.retrans_received,
            late_optional_absorbed: s.absorbed,
            dead_call_messages: s.dead_call_msgs,
            out_of_call_messages: s.out_of_call_msgs,
            auto_answered: s.auto_answered,
            out_of_call_calls: s.ooc_calls,
            out_of_call_succeeded: s.ooc_succeeded,
            out_of_call_failed: s.ooc_failed,
            warnings: s.warnings,
            parse_errors: s.parse_errors,
            send_errors: s.send_errors,
            gso_sends: s.gso_sends,
            gso_datagrams: s.gso_datagrams,
            rtp_packets_sent: s.rtp_packets_sent,
            rtp_bytes_sent: s.rtp_bytes_sent,
            rtp_echoed_packets: s.rtp_echoed_packets,
            rtp_echoed_bytes: s.rtp_echoed_bytes,
            rtp_checks_passed: s.rtp_checks_passed,
            rtp_checks_failed: s.rtp_checks_failed,
            rtp_check_packets_ok: s.rtp_check_packets_ok,
            srtp_refused: s.srtp_refused,
            commands_run: s.commands_run,
            responses: s
                .responses
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (u16::try_from(c).unwrap_or(0), *n))
                .collect(),
            invite_to_18x: Percentiles::of(&s.invite_to_18x),
            invite_to_200: Percentiles::of(&s.invite_to_200),
            rtd: s
                .rtd
                .iter()
                .enumerate()
                .filter(|(i, _)| scn.rtds_used.get(*i).copied().unwrap_or(false))
                .filter_map(|(i, h)| Percentiles::of(h).map(|p| (i + 1, p)))
                .collect(),
            call_length: Percentiles::of(&s.call_length),
            counters: scn
                .counters
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let n = scn
                        .steps
                        .iter()
                        .zip(s.steps.iter())
                        .filter(|(step, _)| step.counter.map(usize::from) == Some(i))
                        .map(|(_, c)| c.sent + c.received + c.passed)
                        .sum();
                    (name.clone(), n)
                })
                .collect(),
            steps,
            notes: Vec::new(),
        }
    }

    /// The exit status SIPp gives at the end of a run: 253 (its
    /// `EXIT_RTPCHECK_FAILED`, -3) when an RTP check failed, else 0 every
    /// call succeeded, 1 some failed.
    pub fn exit_code(&self) -> u8 {
        if self.rtp_checks_failed > 0 {
            return 253;
        }
        u8::from(self.calls_failed > 0)
    }

    pub fn summary(&self) -> String {
        format!(
            "sbc-load: {} calls, {} succeeded, {} failed, {:.1} calls/s over {:.2} s ({} threads)",
            self.calls_created,
            self.calls_succeeded,
            self.calls_failed,
            self.achieved_cps,
            self.elapsed_s,
            self.threads
        )
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Scenario \"{}\" ({}), {} thread(s), {:.2} s",
            self.scenario, self.role, self.threads, self.elapsed_s
        );
        let _ = writeln!(s, "  {:<28}{:>12}", "Calls created", self.calls_created);
        let _ = writeln!(s, "  {:<28}{:>12}", "Successful call", self.calls_succeeded);
        let _ = writeln!(s, "  {:<28}{:>12}", "Failed call", self.calls_failed);
        for f in &self.failures {
            let _ = writeln!(s, "    {:<26}{:>12}", f.label, f.calls);
        }
        let _ = writeln!(
            s,
            "  {:<28}{:>12.1}",
            "Calls/s (completed)", self.achieved_cps
        );
        let _ = writeln!(s, "  {:<28}{:>12.1}", "Calls/s (created)", self.offered_cps);
        let _ = writeln!(
            s,
            "  {:<28}{:>12} / {}",
            "Messages sent / received", self.messages_sent, self.messages_received
        );
        let _ = writeln!(
            s,
            "  {:<28}{:>12} / {}",
            "Retransmissions sent / recv", self.retransmissions_sent, self.retransmissions_received
        );
        if self.out_of_call_calls > 0 {
            let _ = writeln!(
                s,
                "  {:<28}{:>12} / {} / {}",
                "Out-of-call calls / ok / failed",
                self.out_of_call_calls,
                self.out_of_call_succeeded,
                self.out_of_call_failed
            );
        }
        for (label, n) in [
            ("Late optional absorbed", self.late_optional_absorbed),
            ("Dead-call messages", self.dead_call_messages),
            ("Out-of-call messages", self.out_of_call_messages),
            ("Auto-answered (-aa)", self.auto_answered),
            ("Warnings", self.warnings),
            ("RTP packets sent (media)", self.rtp_packets_sent),
            ("RTP packets echoed", self.rtp_echoed_packets),
            ("RTP checks passed", self.rtp_checks_passed),
            ("RTP checks failed", self.rtp_checks_failed),
            ("RTP packets back right", self.rtp_check_packets_ok),
            ("SRTP packets refused", self.srtp_refused),
            ("Shell commands started", self.commands_run),
            ("Parse errors", self.parse_errors),
            ("Send errors", self.send_errors),
        ] {
            if n > 0 {
                let _ = writeln!(s, "  {label:<28}{n:>12}");
            }
        }
        if !self.responses.is_empty() {
            let codes: Vec<String> = self
                .responses
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            let _ = writeln!(s, "  Responses received          {}", codes.join(", "));
        }
        for (name, n) in &self.counters {
            let _ = writeln!(s, "  {:<28}{n:>12}", format!("Counter {name}"));
        }
        let lost: u64 = self.steps.iter().map(|st| st.lost).sum();
        if lost > 0 {
            let _ = writeln!(s, "  {:<28}{lost:>12}", "Lost on purpose (lost=)");
        }
        let _ = writeln!(
            s,
            "\n  {:<18}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "Response time ms", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: String, p: &Percentiles| {
            let _ = writeln!(
                s,
                "  {:<18}{:>9}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                name, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        };
        if let Some(p) = &self.invite_to_18x {
            row("INVITE -> 18x".into(), p);
        }
        if let Some(p) = &self.invite_to_200 {
            row("INVITE -> 2xx".into(), p);
        }
        for (i, p) in &self.rtd {
            row(format!("rtd {i}"), p);
        }
        if let Some(p) = &self.call_length {
            row("call length".into(), p);
        }
        let _ = writeln!(
            s,
            "\n  {:>3} {:<6}{:<12}{:>10}{:>10}{:>9}{:>9}{:>11}",
            "#", "step", "message", "sent", "recv", "retrans", "timeout", "unexpected"
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:>3} {:<6}{:<12}{:>10}{:>10}{:>9}{:>9}{:>11}",
                st.index,
                st.element,
                st.message,
                st.sent,
                st.received,
                st.retransmissions,
                st.timeouts,
                st.unexpected
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "  Note: {n}");
        }
        s
    }
}
