//! `-trace_msg`, `-trace_err`, `-trace_logs`: SIPp's message log
//! (`SCENARIO_PID_messages.log`: every SIP message sent and received,
//! each after a dashed line with the time) and its errors file
//! (`SCENARIO_PID_errors.log`: created at the first warning or error,
//! "The following events occurred:", then one line each, timed) and its
//! `<log>` file (`SCENARIO_PID_logs.log`), in SIPp's formats. They are for
//! debugging: a mutex per file, shared by the load threads.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::statfile::{general, rfc3339_time, wall_time};

/// The run's trace files.
#[derive(Debug)]
pub struct TraceFiles {
    messages: Option<Mutex<BufWriter<File>>>,
    errors: Option<Mutex<ErrorsFile>>,
    rtt: Option<Mutex<BufWriter<File>>>,
    logs: Option<Mutex<BufWriter<File>>>,
    /// The transport the message log names (SIPp's "UDP message sent").
    transport: &'static str,
}

#[derive(Debug)]
struct ErrorsFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl TraceFiles {
    /// Opens the message log now (`messages`); the errors file is made at
    /// its first line (`errors`).
    pub fn new(
        messages: Option<PathBuf>,
        errors: Option<PathBuf>,
        rtt: Option<PathBuf>,
        logs: Option<PathBuf>,
    ) -> io::Result<Self> {
        Ok(TraceFiles {
            messages: match messages {
                Some(p) => Some(Mutex::new(BufWriter::new(File::create(p)?))),
                None => None,
            },
            errors: errors.map(|path| Mutex::new(ErrorsFile { path, file: None })),
            rtt: match rtt {
                Some(p) => {
                    let mut f = BufWriter::new(File::create(p)?);
                    writeln!(f, "Date_ms;response_time_ms;rtd_no")?;
                    Some(Mutex::new(f))
                }
                None => None,
            },
            logs: match logs {
                Some(p) => Some(Mutex::new(BufWriter::new(File::create(p)?))),
                None => None,
            },
            transport: "UDP",
        })
    }

    /// The transport the message log names.
    pub fn with_transport(mut self, transport: &'static str) -> Self {
        self.transport = transport;
        self
    }

    /// `-trace_logs`: each `<log>` message, one line each, as SIPp writes
    /// them (no time).
    pub fn logs(&self, lines: impl Iterator<Item = Vec<u8>>) {
        let Some(l) = &self.logs else { return };
        let Ok(mut f) = l.lock() else { return };
        for line in lines {
            let _ = f.write_all(&line);
            let _ = f.write_all(b"\n");
        }
    }

    /// `-trace_rtt`: one line per response time measured, in SIPp's
    /// columns (`dumpDataRtt`): when it ended (ms since the Unix epoch),
    /// the time it took (ms) and the counter's name.
    pub fn rtts(&self, wall_epoch_us: u64, samples: impl Iterator<Item = (u64, u64, u8)>) {
        let Some(r) = &self.rtt else { return };
        let Ok(mut f) = r.lock() else { return };
        for (at, rtt, rtd) in samples {
            let _ = writeln!(
                f,
                "{:.3};{};{}",
                (wall_epoch_us + at) as f64 / 1000.0,
                general(rtt as f64 / 1000.0),
                u16::from(rtd) + 1
            );
        }
    }

    pub fn traces_messages(&self) -> bool {
        self.messages.is_some()
    }

    /// Logs a SIP message sent (`sent`) or received, at `wall_us`.
    pub fn message(&self, wall_us: u64, sent: bool, _peer: SocketAddr, bytes: &[u8]) {
        let Some(m) = &self.messages else { return };
        let Ok(mut f) = m.lock() else { return };
        let _ = write!(
            f,
            "----------------------------------------------- {}\n{} message {} [{}] bytes:\n\n",
            rfc3339_time(wall_us),
            self.transport,
            if sent { "sent" } else { "received" },
            bytes.len()
        );
        let _ = f.write_all(bytes);
        let _ = f.write_all(b"\n");
    }

    /// Appends warning and error texts, each timed as SIPp times them.
    pub fn errors(&self, wall_us: u64, texts: impl Iterator<Item = String>) {
        let Some(e) = &self.errors else { return };
        let Ok(mut e) = e.lock() else { return };
        for t in texts {
            if e.file.is_none() {
                let Ok(f) = File::create(&e.path) else { return };
                let mut f = BufWriter::new(f);
                let _ = writeln!(f, "The following events occurred:");
                e.file = Some(f);
            }
            if let Some(f) = e.file.as_mut() {
                let _ = writeln!(f, "{}: {t}", wall_time(wall_us));
            }
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        if let Some(l) = &self.logs
            && let Ok(mut f) = l.lock()
        {
            let _ = f.flush();
        }
        if let Some(r) = &self.rtt
            && let Ok(mut f) = r.lock()
        {
            let _ = f.flush();
        }
        if let Some(m) = &self.messages
            && let Ok(mut f) = m.lock()
        {
            let _ = f.flush();
        }
        if let Some(e) = &self.errors
            && let Ok(mut e) = e.lock()
            && let Some(f) = e.file.as_mut()
        {
            let _ = f.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_and_errors_are_written_as_sipp_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (m, e) = (dir.path().join("m.log"), dir.path().join("e.log"));
        let t = TraceFiles::new(Some(m.clone()), Some(e.clone()), None, None).unwrap();
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
