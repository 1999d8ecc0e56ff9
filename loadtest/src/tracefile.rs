//! `-trace_msg`, `-trace_err`, `-trace_logs`: SIPp's message log
//! (`SCENARIO_PID_messages.log`: every SIP message sent and received,
//! each after a dashed line with the time) and its errors file
//! (`SCENARIO_PID_errors.log`: created at the first warning or error,
//! "The following events occurred:", then one line each, timed) and its
//! `<log>` file (`SCENARIO_PID_logs.log`), and `-trace_shortmsg`'s
//! (`SCENARIO_PID_shortmessages.log`: a line per message, tab-separated:
//! time, `S` or `R`, Call-ID, `CSeq:` and its value, the start line), in
//! SIPp's formats. They are for
//! debugging: a mutex per file, shared by the load threads.
//!
//! Their growth follows SIPp's options: `-X_overwrite false` appends to
//! a file that exists instead of truncating it; past `-max_log_size`
//! bytes a file is closed and written no more; past `-ringbuffer_size`
//! bytes it starts again, and with `-ringbuffer_files N` the full one is
//! first kept as `SCENARIO_PID_NAME_START.log` (START: when it was opened,
//! in seconds since the epoch; `.K` before `.log` when two start in the
//! same second), the last N of them.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::statfile::{general, rfc3339_time, wall_time};

/// How far the trace files grow (SIPp's `-max_log_size`,
/// `-ringbuffer_size`, `-ringbuffer_files`; 0: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_size: u64,
    pub ring_size: u64,
    pub ring_files: usize,
}

/// One trace file: where it is written, the `SCENARIO_PID` and name its
/// kept copies are named from, and whether it is appended to when it
/// first opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub path: PathBuf,
    pub base: String,
    pub name: &'static str,
    pub append: bool,
}

/// An open trace file and how much of it is written.
#[derive(Debug)]
struct LogFile {
    spec: Spec,
    limits: Limits,
    file: Option<BufWriter<File>>,
    /// Bytes written since it was (re)opened.
    count: u64,
    /// When it was opened (seconds since the epoch).
    started: u64,
    /// The copies kept: when each was opened, and its same-second index.
    kept: VecDeque<(u64, u32)>,
}

impl LogFile {
    fn open(spec: Spec, limits: Limits) -> io::Result<Self> {
        let mut log = LogFile {
            spec,
            limits,
            file: None,
            count: 0,
            started: 0,
            kept: VecDeque::new(),
        };
        log.reopen()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", log.spec.path.display())))?;
        Ok(log)
    }

    /// Opens the file: appended to the first time when asked, truncated
    /// otherwise (a rotation always starts an empty file).
    fn reopen(&mut self) -> io::Result<()> {
        self.started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = if std::mem::take(&mut self.spec.append) {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.spec.path)?
        } else {
            File::create(&self.spec.path)?
        };
        self.file = Some(BufWriter::new(file));
        self.count = 0;
        Ok(())
    }

    fn kept_name(&self, (start, n): (u64, u32)) -> PathBuf {
        let Spec { base, name, .. } = &self.spec;
        if n == 0 {
            format!("{base}_{name}_{start}.log").into()
        } else {
            format!("{base}_{name}_{start}.{n}.log").into()
        }
    }

    /// The file is full: kept under its start time (the oldest kept
    /// one goes), then begun again.
    fn rotate(&mut self) {
        if let Some(mut f) = self.file.take() {
            let _ = f.flush();
        }
        if self.limits.ring_files > 0 {
            if self.kept.len() >= self.limits.ring_files
                && let Some(oldest) = self.kept.pop_front()
            {
                let _ = std::fs::remove_file(self.kept_name(oldest));
            }
            let n = match self.kept.back() {
                Some(&(start, n)) if start == self.started => n + 1,
                _ => 0,
            };
            let id = (self.started, n);
            let _ = std::fs::rename(&self.spec.path, self.kept_name(id));
            self.kept.push_back(id);
        }
        let _ = self.reopen();
    }

    /// Writes one entry; the limits are checked after each, as SIPp does.
    fn write(&mut self, entry: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        let _ = f.write_all(entry);
        self.count += entry.len() as u64;
        if self.limits.max_size > 0 && self.count > self.limits.max_size {
            // Full for good: closed, and nothing more is written.
            if let Some(mut f) = self.file.take() {
                let _ = f.flush();
            }
        } else if self.limits.ring_size > 0 && self.count > self.limits.ring_size {
            self.rotate();
        }
    }

    /// Writes a heading that does not count towards the limits (the
    /// errors file's first line, as in SIPp).
    fn heading(&mut self, text: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(text);
        }
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}

/// The trace files asked for (each `None` when not).
#[derive(Debug, Default)]
pub struct Specs {
    /// `-trace_msg`.
    pub messages: Option<Spec>,
    /// `-trace_shortmsg`.
    pub short: Option<Spec>,
    /// `-trace_err`.
    pub errors: Option<Spec>,
    /// `-trace_logs`.
    pub logs: Option<Spec>,
    /// `-trace_calldebug`.
    pub calldebug: Option<Spec>,
}

/// The run's trace files.
#[derive(Debug)]
pub struct TraceFiles {
    messages: Option<Mutex<LogFile>>,
    short: Option<Mutex<LogFile>>,
    /// `-rfc3339`: the short log times what is sent that way (as SIPp).
    rfc3339: bool,
    errors: Option<Mutex<ErrorsFile>>,
    rtt: Option<Mutex<RttFile>>,
    logs: Option<Mutex<LogFile>>,
    /// `-trace_calldebug`: failed and aborted calls' records.
    calldebug: Option<Mutex<LogFile>>,
    /// The transport the message log names (SIPp's "UDP message sent").
    transport: &'static str,
}

/// `-trace_rtt`'s file: lines are held until `every` of them (`-rtt_freq`)
/// are, then written together, as SIPp dumps them.
#[derive(Debug)]
struct RttFile {
    file: BufWriter<File>,
    lines: Vec<u8>,
    held: u64,
    every: u64,
}

impl RttFile {
    fn add(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.lines.write_fmt(line);
        let _ = self.lines.write_all(b"\n");
        self.held += 1;
        if self.held >= self.every {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let _ = self.file.write_all(&self.lines);
        let _ = self.file.flush();
        self.lines.clear();
        self.held = 0;
    }
}

/// The errors file, made at the first error.
#[derive(Debug)]
enum ErrorsFile {
    Waiting(Spec, Limits),
    Open(LogFile),
}

impl TraceFiles {
    /// Opens the asked-for files now, but for the errors file, made at
    /// its first line.
    pub fn new(specs: Specs, rtt: Option<PathBuf>, limits: Limits) -> io::Result<Self> {
        let Specs {
            messages,
            short,
            errors,
            logs,
            calldebug,
        } = specs;
        let open = |spec: Option<Spec>| -> io::Result<Option<Mutex<LogFile>>> {
            spec.map(|s| LogFile::open(s, limits).map(Mutex::new))
                .transpose()
        };
        Ok(TraceFiles {
            messages: open(messages)?,
            short: open(short)?,
            rfc3339: false,
            errors: errors.map(|spec| Mutex::new(ErrorsFile::Waiting(spec, limits))),
            rtt: match rtt {
                Some(p) => {
                    let mut f = BufWriter::new(File::create(p)?);
                    writeln!(f, "Date_ms;response_time_ms;rtd_no")?;
                    f.flush()?;
                    Some(Mutex::new(RttFile {
                        file: f,
                        lines: Vec::new(),
                        held: 0,
                        every: 200,
                    }))
                }
                None => None,
            },
            logs: open(logs)?,
            calldebug: open(calldebug)?,
            transport: "UDP",
        })
    }

    /// The transport the message log names.
    pub fn with_transport(mut self, transport: &'static str) -> Self {
        self.transport = transport;
        self
    }

    /// `-trace_calldebug`: what failed and aborted calls did.
    pub fn calldebug(&self, records: impl Iterator<Item = Vec<u8>>) {
        let Some(c) = &self.calldebug else { return };
        let Ok(mut f) = c.lock() else { return };
        for r in records {
            f.write(&r);
        }
    }

    /// `-rtt_freq`: the response times file is written every `n` lines.
    pub fn with_rtt_every(self, n: u64) -> Self {
        if let Some(r) = &self.rtt
            && let Ok(mut f) = r.lock()
        {
            f.every = n.max(1);
        }
        self
    }

    /// `-rfc3339`.
    pub fn with_rfc3339(mut self, rfc3339: bool) -> Self {
        self.rfc3339 = rfc3339;
        self
    }

    /// `-trace_logs`: each `<log>` message, one line each, as SIPp writes
    /// them (no time).
    pub fn logs(&self, lines: impl Iterator<Item = Vec<u8>>) {
        let Some(l) = &self.logs else { return };
        let Ok(mut f) = l.lock() else { return };
        for mut line in lines {
            line.push(b'\n');
            f.write(&line);
        }
    }

    /// `-trace_rtt`: one line per response time measured, in SIPp's
    /// columns (`dumpDataRtt`): when it ended (ms since the Unix epoch),
    /// the time it took (ms) and the counter's name.
    pub fn rtts(&self, wall_epoch_us: u64, samples: impl Iterator<Item = (u64, u64, u8)>) {
        let Some(r) = &self.rtt else { return };
        let Ok(mut f) = r.lock() else { return };
        for (at, rtt, rtd) in samples {
            f.add(format_args!(
                "{:.3};{};{}",
                (wall_epoch_us + at) as f64 / 1000.0,
                general(rtt as f64 / 1000.0),
                u16::from(rtd) + 1
            ));
        }
    }

    pub fn traces_messages(&self) -> bool {
        self.messages.is_some() || self.short.is_some()
    }

    /// Logs a SIP message sent (`sent`) or received, at `wall_us`.
    pub fn message(&self, wall_us: u64, sent: bool, _peer: SocketAddr, bytes: &[u8]) {
        if let Some(s) = &self.short
            && let Ok(mut f) = s.lock()
        {
            f.write(short_line(wall_us, sent, self.rfc3339, bytes).as_bytes());
        }
        let Some(m) = &self.messages else { return };
        let Ok(mut f) = m.lock() else { return };
        let mut entry = format!(
            "----------------------------------------------- {}\n{} message {} [{}] bytes:\n\n",
            rfc3339_time(wall_us),
            self.transport,
            if sent { "sent" } else { "received" },
            bytes.len()
        )
        .into_bytes();
        entry.extend_from_slice(bytes);
        entry.push(b'\n');
        f.write(&entry);
    }

    /// Appends warning and error texts, each timed as SIPp times them.
    pub fn errors(&self, wall_us: u64, texts: impl Iterator<Item = String>) {
        let Some(e) = &self.errors else { return };
        let Ok(mut e) = e.lock() else { return };
        for t in texts {
            if let ErrorsFile::Waiting(spec, limits) = &*e {
                let Ok(mut f) = LogFile::open(spec.clone(), *limits) else {
                    return;
                };
                f.heading(b"The following events occurred:\n");
                *e = ErrorsFile::Open(f);
            }
            if let ErrorsFile::Open(f) = &mut *e {
                f.write(format!("{}: {t}\n", wall_time(wall_us)).as_bytes());
            }
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        if let Some(s) = &self.short
            && let Ok(mut f) = s.lock()
        {
            f.flush();
        }
        for l in [&self.logs, &self.calldebug].into_iter().flatten() {
            if let Ok(mut f) = l.lock() {
                f.flush();
            }
        }
        if let Some(r) = &self.rtt
            && let Ok(mut f) = r.lock()
        {
            f.flush();
        }
        if let Some(m) = &self.messages
            && let Ok(mut f) = m.lock()
        {
            f.flush();
        }
        if let Some(e) = &self.errors
            && let Ok(mut e) = e.lock()
            && let ErrorsFile::Open(f) = &mut *e
        {
            f.flush();
        }
    }
}

/// A message's line in the short log: when (what is received in SIPp's
/// tab-separated time, what is sent in RFC 3339 with `-rfc3339`), `S` or
/// `R`, its Call-ID, `CSeq:` and its value, and its start line.
fn short_line(wall_us: u64, sent: bool, rfc3339: bool, bytes: &[u8]) -> String {
    let time = if sent && rfc3339 {
        rfc3339_time(wall_us)
    } else {
        wall_time(wall_us)
    };
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let (call_id, cseq) = match sbc_core::sip::Message::parse(bytes) {
        Ok(m) => (
            text(m.value(sbc_core::sip::HeaderName::CallId)),
            text(m.value(sbc_core::sip::HeaderName::CSeq)),
        ),
        Err(_) => (String::new(), String::new()),
    };
    format!(
        "{time}\t{}\t{call_id}\tCSeq:{cseq}\t{}\n",
        if sent { 'S' } else { 'R' },
        String::from_utf8_lossy(first)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(path: &std::path::Path, append: bool) -> Spec {
        let base = path.parent().unwrap().join("sc_42");
        Spec {
            path: path.to_path_buf(),
            base: base.to_string_lossy().into_owned(),
            name: "logs",
            append,
        }
    }

    /// Only a `<log>` file.
    fn logs(spec: Spec) -> Specs {
        Specs {
            logs: Some(spec),
            ..Specs::default()
        }
    }

    fn log_lines(t: &TraceFiles, lines: &[&str]) {
        t.logs(lines.iter().map(|l| l.as_bytes().to_vec()));
        t.flush();
    }

    #[test]
    fn response_times_are_written_every_rtt_freq_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtt.csv");
        let t = TraceFiles::new(Specs::default(), Some(path.clone()), Limits::default())
            .unwrap()
            .with_rtt_every(3);
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        // The header at once; then nothing until three times are held.
        t.rtts(0, [(1_000, 2_000, 0), (2_000, 3_000, 0)].into_iter());
        assert_eq!(lines(), 1);
        t.rtts(0, [(3_000, 1_500, 1)].into_iter());
        assert_eq!(lines(), 4);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().nth(3), Some("3.000;1.5;2"));
        // What is held when the run ends is written too.
        t.rtts(0, [(4_000, 1_000, 0)].into_iter());
        assert_eq!(lines(), 4);
        t.flush();
        assert_eq!(lines(), 5);
    }

    #[test]
    fn overwrite_false_appends_and_max_log_size_stops_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("l.log");
        std::fs::write(&l, "before\n").unwrap();
        let limits = Limits {
            max_size: 10,
            ..Limits::default()
        };
        let t = TraceFiles::new(logs(spec(&l, true)), None, limits).unwrap();
        // 6 bytes, then 12 (past 10: the last written), then none.
        log_lines(&t, &["12345", "67890", "lost"]);
        assert_eq!(
            std::fs::read_to_string(&l).unwrap(),
            "before\n12345\n67890\n"
        );
        // Overwritten (the default): what was there goes.
        let t = TraceFiles::new(logs(spec(&l, false)), None, Limits::default()).unwrap();
        log_lines(&t, &["new"]);
        assert_eq!(std::fs::read_to_string(&l).unwrap(), "new\n");
    }

    #[test]
    fn a_ring_buffer_keeps_the_last_files_under_their_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("sc_42_logs.log");
        let limits = Limits {
            ring_size: 4,
            ring_files: 2,
            ..Limits::default()
        };
        let t = TraceFiles::new(logs(spec(&l, false)), None, limits).unwrap();
        // Each line fills a file: four rotations, two kept.
        log_lines(&t, &["aaaa", "bbbb", "cccc", "dddd", "eeee"]);
        let mut kept: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "sc_42_logs.log")
            .collect();
        // In the order they were kept: start time, then same-second index.
        kept.sort_by_key(|n| {
            let id = n
                .strip_prefix("sc_42_logs_")
                .and_then(|r| r.strip_suffix(".log"))
                .unwrap();
            let (start, k) = id.split_once('.').unwrap_or((id, "0"));
            (start.parse::<u64>().unwrap(), k.parse::<u32>().unwrap())
        });
        assert_eq!(kept.len(), 2, "{kept:?}");
        let texts: Vec<String> = kept
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(texts, ["dddd\n", "eeee\n"], "{kept:?}");
        // The file in use was begun again after the last line.
        assert_eq!(std::fs::read_to_string(&l).unwrap(), "");
        // Without kept files a full file just starts again.
        let t = TraceFiles::new(
            logs(spec(&l, false)),
            None,
            Limits {
                ring_size: 4,
                ..Limits::default()
            },
        )
        .unwrap();
        log_lines(&t, &["aaaa", "bb"]);
        assert_eq!(std::fs::read_to_string(&l).unwrap(), "bb\n");
    }

    #[test]
    fn the_short_log_has_a_line_per_message_as_sipp_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let t = TraceFiles::new(
            Specs {
                short: Some(spec(&path, false)),
                ..Specs::default()
            },
            None,
            Limits::default(),
        )
        .unwrap()
        .with_rfc3339(true);
        assert!(t.traces_messages());
        let peer: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let invite = b"INVITE sip:1@h SIP/2.0\r\ni: abc@h \r\nCSeq:  7 INVITE\r\nl: 0\r\n\r\n";
        t.message(1_796_410_806_813_852, true, peer, invite);
        t.message(
            1_796_410_806_813_852,
            false,
            peer,
            b"SIP/2.0 100 Trying\r\nCall-ID: abc@h\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        t.flush();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "2026-12-04T19:00:06.813852Z\tS\tabc@h\tCSeq:7 INVITE\tINVITE sip:1@h SIP/2.0\n\
             2026-12-04\t19:00:06.813852\t1796410806.813852\tR\tabc@h\tCSeq:7 INVITE\tSIP/2.0 100 Trying\n"
        );
    }

    #[test]
    fn messages_and_errors_are_written_as_sipp_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (m, e) = (dir.path().join("m.log"), dir.path().join("e.log"));
        let t = TraceFiles::new(
            Specs {
                messages: Some(spec(&m, false)),
                errors: Some(spec(&e, false)),
                ..Specs::default()
            },
            None,
            Limits::default(),
        )
        .unwrap();
        let peer: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        t.message(
            1_796_410_806_813_852,
            true,
            peer,
            b"OPTIONS sip:a SIP/2.0\r\n\r\n",
        );
        t.flush();
        assert!(!e.exists(), "no errors, no file");
        t.errors(1_796_410_806_813_852, ["boom".to_string()].into_iter());
        t.flush();
        assert_eq!(
            std::fs::read_to_string(&m).unwrap(),
            "----------------------------------------------- 2026-12-04T19:00:06.813852Z\nUDP message sent [25] bytes:\n\nOPTIONS sip:a SIP/2.0\r\n\r\n\n"
        );
        assert_eq!(
            std::fs::read_to_string(&e).unwrap(),
            "The following events occurred:\n2026-12-04\t19:00:06.813852\t1796410806.813852: boom\n"
        );
    }
}
