//! `-trace_stat` (`-stf FILE`, `-fd SECONDS`): SIPp's statistics file. A
//! header line, then a line every `-fd` seconds and one at the end, with
//! the columns of SIPp's `CStat::dumpData` in its order and formats, so
//! scripts written for SIPp's CSV read sbc-load's: each counter twice,
//! `(P)` for the period since the last line and `(C)` since the start;
//! times as SIPp writes them (date, time and epoch, separated by tabs, in
//! UTC); durations `HH:MM:SS:uuuuuu`; the repartition tables of the
//! scenario's `<ResponseTimeRepartition>` and `<CallLengthRepartition>`.
//! Counters SIPp has and sbc-load cannot meet (TCP, watchdog, 3PCC) are 0.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;

use crate::scenario::Scenario;
use crate::stats::{FailReason, Stats};

/// SIPp's default `-stat_delimiter`.
const SEP: &str = ";";

/// The statistics file of a run.
#[derive(Debug)]
pub struct StatFile {
    out: BufWriter<File>,
    header_written: bool,
    caller: bool,
    start_wall_us: u64,
    last_wall_us: u64,
    /// The response-time counters the scenario uses (0-based).
    rtds: Vec<usize>,
    /// Counter names, and per step the counter it counts under.
    counters: Vec<String>,
    step_counter: Vec<Option<u16>>,
    response_time_repartition: Vec<u64>,
    call_length_repartition: Vec<u64>,
    /// The totals at the last line.
    prev: Stats,
    /// `-stat_delimiter`, when not `;`.
    delimiter: Option<String>,
    /// `-periodic_rtd`.
    periodic_rtd: bool,
}

/// A line with SIPp's `;` between columns put in `delimiter`'s stead.
pub(crate) fn delimited<'a>(line: &'a str, delimiter: Option<&str>) -> std::borrow::Cow<'a, str> {
    match delimiter {
        Some(d) if d != SEP => line.replace(SEP, d).into(),
        _ => line.into(),
    }
}

impl StatFile {
    /// Columns separated by `delimiter` (`-stat_delimiter`) instead of `;`.
    pub fn with_delimiter(mut self, delimiter: &str) -> Self {
        self.delimiter = Some(delimiter.to_owned());
        self
    }

    /// `-periodic_rtd`: the response-time repartitions count each period
    /// only.
    pub fn with_periodic_rtd(mut self, periodic: bool) -> Self {
        self.periodic_rtd = periodic;
        self
    }

    pub fn create(
        path: &Path,
        scn: &Scenario,
        caller: bool,
        start_wall_us: u64,
    ) -> io::Result<Self> {
        Ok(StatFile {
            delimiter: None,
            periodic_rtd: false,
            out: BufWriter::new(File::create(path)?),
            header_written: false,
            caller,
            start_wall_us,
            last_wall_us: start_wall_us,
            rtds: (0..scn.rtds_used.len())
                .filter(|&i| scn.rtds_used[i])
                .collect(),
            counters: scn.counters.clone(),
            step_counter: scn.steps.iter().map(|s| s.counter).collect(),
            response_time_repartition: scn.response_time_repartition.clone(),
            call_length_repartition: scn.call_length_repartition.clone(),
            prev: Stats::new(scn.steps.len()),
        })
    }

    fn header(&self) -> String {
        let mut h = String::new();
        for name in [
            "StartTime",
            "LastResetTime",
            "CurrentTime",
            "ElapsedTime(P)",
            "ElapsedTime(C)",
            "TargetRate",
            "CallRate(P)",
            "CallRate(C)",
        ] {
            let _ = write!(h, "{name}{SEP}");
        }
        for name in PAIRED {
            let _ = write!(h, "{name}(P){SEP}{name}(C){SEP}");
        }
        let _ = write!(h, "TotalCallCreated{SEP}CurrentCall{SEP}");
        for name in PAIRED_AFTER {
            let _ = write!(h, "{name}(P){SEP}{name}(C){SEP}");
        }
        for &i in &self.rtds {
            let n = i + 1;
            let _ = write!(
                h,
                "ResponseTime{n}(P){SEP}ResponseTime{n}(C){SEP}ResponseTime{n}StDev(P){SEP}ResponseTime{n}StDev(C){SEP}"
            );
        }
        let _ = write!(
            h,
            "CallLength(P){SEP}CallLength(C){SEP}CallLengthStDev(P){SEP}CallLengthStDev(C){SEP}"
        );
        for c in &self.counters {
            let _ = write!(h, "{c}(P){SEP}{c}(C){SEP}");
        }
        for &i in &self.rtds {
            repartition_header(
                &mut h,
                &format!("ResponseTimeRepartition{}", i + 1),
                &self.response_time_repartition,
            );
        }
        repartition_header(
            &mut h,
            "CallLengthRepartition",
            &self.call_length_repartition,
        );
        h
    }

    /// Writes a line for `total` (every thread's figures merged) at wall
    /// time `now_wall_us`, with `open` calls in progress; `target` is
    /// SIPp's TargetRate (the rate as `-r` gives it now, or `-users`).
    pub fn dump(
        &mut self,
        now_wall_us: u64,
        total: &Stats,
        open: u64,
        target: f64,
    ) -> io::Result<()> {
        if !self.header_written {
            let h = self.header();
            writeln!(self.out, "{}", delimited(&h, self.delimiter.as_deref()))?;
            self.header_written = true;
        }
        let (prev, cur) = (&self.prev, total);
        let elapsed_c = now_wall_us.saturating_sub(self.start_wall_us) / 1000;
        let elapsed_p = now_wall_us.saturating_sub(self.last_wall_us) / 1000;
        let per_s = |n: u64, ms: u64| {
            if ms > 0 {
                1000.0 * n as f64 / ms as f64
            } else {
                0.0
            }
        };
        let mut l = String::new();
        let _ = write!(
            l,
            "{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}",
            wall_time(self.start_wall_us),
            wall_time(self.last_wall_us),
            wall_time(now_wall_us),
            hhmmss(elapsed_p),
            hhmmss(elapsed_c),
            general(target),
            general(per_s(
                cur.created - prev.created.min(cur.created),
                elapsed_p
            )),
            general(per_s(cur.created, elapsed_c)),
        );
        let counts = |s: &Stats, open: u64| -> Vec<u64> {
            let f = |r| s.failed_by(r);
            let (incoming, outgoing) = if self.caller {
                (0, s.created)
            } else {
                (s.created, 0)
            };
            vec![
                incoming,
                outgoing,
                // TotalCallCreated and CurrentCall are single columns,
                // written apart below.
                s.created,
                open,
                s.succeeded,
                s.failed_total(),
                f(FailReason::SendError),
                f(FailReason::MaxRetrans),
                f(FailReason::TcpConnect),
                f(FailReason::TcpClosed),
                f(FailReason::UnexpectedMessage),
                f(FailReason::Rejected),
                0,
                f(FailReason::RegexpNoMatch),
                f(FailReason::RegexpShouldntMatch),
                f(FailReason::RegexpHdrNotFound),
                f(FailReason::OutboundCongestion),
                f(FailReason::RecvTimeout),
                0,
                0,
                0,
                0,
                0,
                s.out_of_call_msgs,
                s.dead_call_msgs,
                s.retrans_sent,
                s.auto_answered,
                s.warnings,
                u64::from(s.fatal.is_some()),
                s.watchdog_major,
                s.watchdog_minor,
            ]
        };
        let (c, p) = (counts(cur, open), counts(prev, 0));
        // IncomingCall, OutgoingCall (P, C); TotalCallCreated; CurrentCall.
        for i in 0..2 {
            let _ = write!(l, "{}{SEP}{}{SEP}", c[i] - p[i].min(c[i]), c[i]);
        }
        let _ = write!(l, "{}{SEP}{}{SEP}", c[2], c[3]);
        for i in 4..c.len() {
            let _ = write!(l, "{}{SEP}{}{SEP}", c[i] - p[i].min(c[i]), c[i]);
        }
        for &i in &self.rtds {
            let (Some(hc), Some(hp)) = (cur.rtd.get(i), prev.rtd.get(i)) else {
                continue;
            };
            let period = difference(hc, hp);
            let _ = write!(
                l,
                "{}{SEP}{}{SEP}{}{SEP}{}{SEP}",
                hhmmssus(mean_ms(&period)),
                hhmmssus(mean_ms(hc)),
                hhmmssus(stdev_ms(&period)),
                hhmmssus(stdev_ms(hc)),
            );
        }
        let period = difference(&cur.call_length, &prev.call_length);
        let _ = write!(
            l,
            "{}{SEP}{}{SEP}{}{SEP}{}{SEP}",
            hhmmssus(mean_ms(&period)),
            hhmmssus(mean_ms(&cur.call_length)),
            hhmmssus(stdev_ms(&period)),
            hhmmssus(stdev_ms(&cur.call_length)),
        );
        for i in 0..self.counters.len() {
            let (nc, np) = (self.counter(cur, i), self.counter(prev, i));
            let _ = write!(l, "{}{SEP}{nc}{SEP}", nc - np.min(nc));
        }
        for &i in &self.rtds {
            let (Some(hc), Some(hp)) = (cur.rtd.get(i), prev.rtd.get(i)) else {
                continue;
            };
            if self.periodic_rtd {
                repartition(&mut l, &difference(hc, hp), &self.response_time_repartition);
            } else {
                repartition(&mut l, hc, &self.response_time_repartition);
            }
        }
        repartition(&mut l, &cur.call_length, &self.call_length_repartition);
        writeln!(self.out, "{}", delimited(&l, self.delimiter.as_deref()))?;
        self.out.flush()?;
        self.prev = total.clone();
        self.last_wall_us = now_wall_us;
        Ok(())
    }

    /// The scenario counter `i`: messages sent and received, pauses and
    /// nops run, at the steps counting under it.
    fn counter(&self, s: &Stats, i: usize) -> u64 {
        self.step_counter
            .iter()
            .zip(s.steps.iter())
            .filter(|(c, _)| c.map(usize::from) == Some(i))
            .map(|(_, c)| c.sent + c.received + c.passed)
            .sum()
    }
}

/// The counters SIPp writes as (P)/(C) pairs, in its order, after
/// CallRate(C); TotalCallCreated and CurrentCall stand alone among them.
const PAIRED: [&str; 2] = ["IncomingCall", "OutgoingCall"];
const PAIRED_AFTER: [&str; 27] = [
    "SuccessfulCall",
    "FailedCall",
    "FailedCannotSendMessage",
    "FailedMaxUDPRetrans",
    "FailedTcpConnect",
    "FailedTcpClosed",
    "FailedUnexpectedMessage",
    "FailedCallRejected",
    "FailedCmdNotSent",
    "FailedRegexpDoesntMatch",
    "FailedRegexpShouldntMatch",
    "FailedRegexpHdrNotFound",
    "FailedOutboundCongestion",
    "FailedTimeoutOnRecv",
    "FailedTimeoutOnSend",
    "FailedTestDoesntMatch",
    "FailedTestShouldntMatch",
    "FailedStrcmpDoesntMatch",
    "FailedStrcmpShouldntMatch",
    "OutOfCallMsgs",
    "DeadCallMsgs",
    "Retransmissions",
    "AutoAnswered",
    "Warnings",
    "FatalErrors",
    "WatchdogMajor",
    "WatchdogMinor",
];

/// `a` less `b` (what was recorded since `b` was taken from the same
/// histogram).
fn difference(a: &Histogram<u64>, b: &Histogram<u64>) -> Histogram<u64> {
    let mut d = a.clone();
    if d.subtract(b).is_err() {
        d.reset();
    }
    d
}

/// Mean and standard deviation of a histogram of µs, in whole ms.
fn mean_ms(h: &Histogram<u64>) -> u64 {
    if h.is_empty() {
        0
    } else {
        (h.mean() / 1000.0) as u64
    }
}

/// The sample standard deviation (n - 1), as SIPp's `computeStdev`
/// (hdrhistogram's is the population's).
fn stdev_ms(h: &Histogram<u64>) -> u64 {
    let n = h.len() as f64;
    if n < 2.0 {
        0
    } else {
        (h.stdev() * (n / (n - 1.0)).sqrt() / 1000.0) as u64
    }
}

fn repartition_header(out: &mut String, name: &str, borders: &[u64]) {
    let Some(last) = borders.last() else { return };
    let _ = write!(out, "{name}{SEP}");
    for b in borders {
        let _ = write!(out, "{name}_<{b}{SEP}");
    }
    let _ = write!(out, "{name}_>={last}{SEP}");
}

/// Values (µs) by bucket, as SIPp counts them: below the first border
/// (ms), between each border and the next, at or above the last.
fn repartition(out: &mut String, h: &Histogram<u64>, borders: &[u64]) {
    if borders.is_empty() {
        return;
    }
    out.push_str(SEP);
    let below = |ms: u64| {
        if ms == 0 {
            0
        } else {
            h.count_between(0, ms.saturating_mul(1000) - 1)
        }
    };
    let mut done = 0;
    for &b in borders {
        let n = below(b);
        let _ = write!(out, "{}{SEP}", n.saturating_sub(done));
        done = n;
    }
    let _ = write!(out, "{}{SEP}", h.len().saturating_sub(done));
}

/// A number as C++ streams write one by default (`%g`, six significant
/// digits, no trailing zeros), as SIPp writes its rates.
pub(crate) fn general(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let sci = format!("{x:.5e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let (m, _) = sci.split_once('e').unwrap_or((&sci, ""));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let decimals = usize::try_from(5 - exp).unwrap_or(0);
    let fixed = format!("{x:.decimals$}");
    if fixed.contains('.') {
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        fixed
    }
}

/// SIPp's `msToHHMMSS`.
fn hhmmss(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

/// SIPp's `msToHHMMSSus`: the microseconds are the milliseconds' rest
/// times 1000.
pub(crate) fn hhmmssus(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}:{:06}",
        s / 3600,
        (s % 3600) / 60,
        s % 60,
        (ms % 1000) * 1000
    )
}

/// A wall time (µs since the Unix epoch) as UTC date and time:
/// "YYYY-MM-DD", "HH:MM:SS", microseconds, seconds since the epoch.
fn utc(us: u64) -> (String, String, u64, u64) {
    let (secs, micros) = (us / 1_000_000, us % 1_000_000);
    let rest = secs % 86_400;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            rest / 3600,
            (rest % 3600) / 60,
            rest % 60
        ),
        micros,
        secs,
    )
}

/// SIPp's `formatTime` with RFC 3339 (`with_epoch`): UTC, so "Z".
pub(crate) fn rfc3339_time(us: u64) -> String {
    let (date, time, micros, _) = utc(us);
    format!("{date}T{time}.{micros:06}Z")
}

/// SIPp's `formatTime` without RFC 3339: date, time and epoch seconds,
/// tab-separated (UTC here).
pub(crate) fn wall_time(us: u64) -> String {
    let (date, time, micros, secs) = utc(us);
    format!("{date}\t{time}.{micros:06}\t{secs:010}.{micros:06}")
}

/// A wall time (µs since the Unix epoch) as SIPp's `[date]` writes it:
/// `strftime("%a, %d %b %Y %T GMT")` of UTC.
pub(crate) fn http_date(us: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, time, _, secs) = utc(us);
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y:04} {time} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m as usize).saturating_sub(1) % 12]
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_and_durations_are_written_as_sipp_writes_them() {
        // 2026-12-04 19:00:06.813852 UTC.
        assert_eq!(
            wall_time(1_796_410_806_813_852),
            "2026-12-04\t19:00:06.813852\t1796410806.813852"
        );
        assert_eq!(
            http_date(1_796_410_806_813_852),
            "Fri, 04 Dec 2026 19:00:06 GMT"
        );
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            wall_time(0),
            "1970-01-01\t00:00:00.000000\t0000000000.000000"
        );
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(hhmmss(3_723_999), "01:02:03");
        assert_eq!(general(4.0), "4");
        assert_eq!(general(2.793_296), "2.7933");
        assert_eq!(general(10_000.0), "10000");
        assert_eq!(general(1_234_567.0), "1.23457e+06");
        assert_eq!(general(0.000_012_5), "1.25e-05");
        assert_eq!(hhmmssus(3_723_456), "01:02:03:456000");
    }

    /// `-periodic_rtd`: the response-time repartition columns count what
    /// the period measured; without it, the whole run so far.
    #[test]
    fn periodic_rtd_counts_each_period_alone() {
        let scn = Scenario::parse(
            r#"<scenario><ResponseTimeRepartition value="10, 20"/>
            <send start_rtd="1"><![CDATA[OPTIONS sip:x SIP/2.0

]]></send>
            <recv response="200" rtd="1"/></scenario>"#,
            "t.xml",
        )
        .unwrap();
        let last = |periodic: bool| -> String {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.csv");
            let mut f = StatFile::create(&path, &scn, true, 0)
                .unwrap()
                .with_periodic_rtd(periodic);
            let mut total = Stats::new(scn.steps.len());
            total.rtd[0].record(5_000).unwrap();
            f.dump(1_000_000, &total, 0, 1.0).unwrap();
            total.rtd[0].record(15_000).unwrap();
            f.dump(2_000_000, &total, 0, 1.0).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let head: Vec<&str> = text.lines().next().unwrap().split(';').collect();
            let line: Vec<&str> = text.lines().last().unwrap().split(';').collect();
            ["_<10", "_<20", "_>=20"]
                .iter()
                .map(|b| {
                    let name = format!("ResponseTimeRepartition1{b}");
                    let i = head.iter().position(|h| *h == name).unwrap();
                    line[i]
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(last(false), "1,1,0");
        assert_eq!(last(true), "0,1,0");
    }

    #[test]
    fn repartitions_count_by_border() {
        let mut h = crate::stats::histogram();
        for us in [500, 9_999, 10_000, 25_000, 250_000] {
            h.record(us).unwrap();
        }
        let mut head = String::new();
        repartition_header(&mut head, "T", &[10, 20, 30]);
        assert_eq!(head, "T;T_<10;T_<20;T_<30;T_>=30;");
        let mut line = String::new();
        repartition(&mut line, &h, &[10, 20, 30]);
        // Below 10 ms: 2; 10..20: 1; 20..30: 1; 30 and up: 1.
        assert_eq!(line, ";2;1;1;1;");
    }
}
