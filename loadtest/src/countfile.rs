//! `-trace_counts`: SIPp's counts file (`SCENARIO_PID_counts.csv`). A
//! header line, then a line every `-fd` seconds and one at the end: the
//! time, the time since the start, and per scenario message (those
//! without `hide="true"`, numbered by their index) the counters SIPp's
//! `print_count_file` writes, in its order, each followed by `;`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::scenario::{Scenario, StepKind};
use crate::statfile::{delimited, hhmmssus, rfc3339_time, wall_time};
use crate::stats::{Stats, StepCounts};

/// One counter of a step's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Sent,
    Received,
    Retrans,
    Timeouts,
    Unexpected,
    Lost,
    Sessions,
}

impl Col {
    fn of(self, c: &StepCounts) -> u64 {
        match self {
            Col::Sent => c.sent,
            Col::Received => c.received,
            Col::Retrans => c.retransmissions,
            Col::Timeouts => c.timeouts,
            Col::Unexpected => c.unexpected,
            Col::Lost => c.lost,
            Col::Sessions => c.sessions,
        }
    }
}

/// The counts file of a run.
#[derive(Debug)]
pub struct CountFile {
    out: BufWriter<File>,
    start_wall_us: u64,
    rfc3339: bool,
    /// (step, counter) per column, in order.
    cols: Vec<(usize, Col)>,
    /// `-stat_delimiter`, when not `;`.
    delimiter: Option<String>,
}

/// The header's columns and what each counts.
fn columns(scn: &Scenario) -> (String, Vec<(usize, Col)>) {
    // SIPp adds the Lost columns when any message (or -lost) loses some.
    let lossy = scn.steps.iter().any(|s| s.lost.is_some());
    let mut head = String::from("CurrentTime;ElapsedTime;");
    let mut cols = Vec::new();
    let mut add = |head: &mut String, i: usize, name: String, col: Col| {
        head.push_str(&name);
        head.push(';');
        cols.push((i, col));
    };
    for (i, step) in scn.steps.iter().enumerate() {
        if step.hide {
            continue;
        }
        match &step.kind {
            StepKind::Send { msg, retrans_ms } => {
                let what = match (msg.status(), msg.method()) {
                    (Some(code), _) => code.to_string(),
                    (None, Some(m)) => String::from_utf8_lossy(m).into_owned(),
                    (None, None) => String::new(),
                };
                add(&mut head, i, format!("{i}_{what}_Sent"), Col::Sent);
                add(&mut head, i, format!("{i}_{what}_Retrans"), Col::Retrans);
                if retrans_ms.is_some_and(|t| t > 0) {
                    add(&mut head, i, format!("{i}_{what}_Timeout"), Col::Timeouts);
                }
                if lossy {
                    add(&mut head, i, format!("{i}_{what}_Lost"), Col::Lost);
                }
            }
            StepKind::Recv(r) => {
                let what = r.expect.to_string();
                add(&mut head, i, format!("{i}_{what}_Recv"), Col::Received);
                add(&mut head, i, format!("{i}_{what}_Retrans"), Col::Retrans);
                add(&mut head, i, format!("{i}_{what}_Timeout"), Col::Timeouts);
                add(&mut head, i, format!("{i}_{what}_Unexp"), Col::Unexpected);
                if lossy {
                    add(&mut head, i, format!("{i}_{what}_Lost"), Col::Lost);
                }
            }
            StepKind::Pause { .. } => {
                add(&mut head, i, format!("{i}_Pause_Sessions"), Col::Sessions);
                add(&mut head, i, format!("{i}_Pause_Unexp"), Col::Unexpected);
            }
            StepKind::Nop => {}
            StepKind::RecvCmd { .. } => {
                add(&mut head, i, format!("{i}_RecvCmd"), Col::Received);
                add(&mut head, i, format!("{i}_RecvCmd_Timeout"), Col::Timeouts);
            }
            StepKind::SendCmd { .. } => add(&mut head, i, format!("{i}_SendCmd"), Col::Sent),
        }
    }
    (head, cols)
}

impl CountFile {
    /// Creates the file and writes its header (as SIPp, at the start).
    pub fn create(
        path: &Path,
        scn: &Scenario,
        start_wall_us: u64,
        rfc3339: bool,
        delimiter: &str,
    ) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let (head, cols) = columns(scn);
        let delimiter = (delimiter != ";").then(|| delimiter.to_owned());
        writeln!(out, "{}", delimited(&head, delimiter.as_deref()))?;
        out.flush()?;
        Ok(CountFile {
            out,
            start_wall_us,
            rfc3339,
            cols,
            delimiter,
        })
    }

    /// A line with the figures `s` at `wall_us`.
    pub fn dump(&mut self, wall_us: u64, s: &Stats) -> io::Result<()> {
        let now = if self.rfc3339 {
            rfc3339_time(wall_us)
        } else {
            wall_time(wall_us)
        };
        let elapsed_ms = wall_us.saturating_sub(self.start_wall_us) / 1000;
        let mut line = format!("{now};{};", hhmmssus(elapsed_ms));
        for &(i, col) in &self.cols {
            let v = s.steps.get(i).map_or(0, |c| col.of(c));
            line.push_str(itoa::Buffer::new().format(v));
            line.push(';');
        }
        writeln!(self.out, "{}", delimited(&line, self.delimiter.as_deref()))?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_header_names_each_message_as_sipp_does() {
        let scn = Scenario::parse(
            r#"<scenario>
              <send retrans="500"><![CDATA[
                INVITE sip:x SIP/2.0
                Content-Length: 0
              ]]></send>
              <recv response="100" optional="true"/>
              <recv response="200" lost="10"/>
              <send><![CDATA[
                ACK sip:x SIP/2.0
                Content-Length: 0
              ]]></send>
              <pause milliseconds="10"/>
              <nop hide="true"/>
              <recv request="BYE" hide="true"/>
              <send><![CDATA[
                SIP/2.0 200 OK
                Content-Length: 0
              ]]></send>
            </scenario>"#,
            "t.xml",
        )
        .unwrap();
        let (head, cols) = columns(&scn);
        assert_eq!(
            head,
            "CurrentTime;ElapsedTime;0_INVITE_Sent;0_INVITE_Retrans;0_INVITE_Timeout;0_INVITE_Lost;\
             1_100_Recv;1_100_Retrans;1_100_Timeout;1_100_Unexp;1_100_Lost;\
             2_200_Recv;2_200_Retrans;2_200_Timeout;2_200_Unexp;2_200_Lost;\
             3_ACK_Sent;3_ACK_Retrans;3_ACK_Lost;4_Pause_Sessions;4_Pause_Unexp;\
             7_200_Sent;7_200_Retrans;7_200_Lost;"
        );
        let mut s = Stats::new(scn.steps.len());
        s.steps[0].sent = 5;
        s.steps[0].retransmissions = 2;
        s.steps[4].sessions = 3;
        s.steps[7].sent = 4;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        let mut f = CountFile::create(&path, &scn, 1_000_000, false, ";").unwrap();
        f.dump(62_500_000, &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(
            line.starts_with(
                "1970-01-01\t00:01:02.500000\t0000000062.500000;00:01:01:500000;5;2;0;0;"
            ),
            "{line}"
        );
        assert!(line.ends_with(";3;0;4;0;0;"), "{line}");
        assert_eq!(line.split(';').count(), cols.len() + 3);
    }
}
