//! Black-box harness: start the real `sbc` binary on a loopback network of
//! its own (127.N.0.0/24, so tests run in parallel), drive it with stock
//! `sipp` and with small UDP peers, scrape its metrics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Addresses of one test's network, from config/examples/ip-trunks.toml
/// moved from 127.0.0.0/24 to 127.N.0.0/24.
#[derive(Debug, Clone, Copy)]
pub struct Net(pub u8);

impl Net {
    pub fn ip(&self, host: u8) -> String {
        format!("127.{}.0.{host}", self.0)
    }
    pub fn sbc(&self) -> String {
        format!("{}:5060", self.ip(1))
    }
    pub fn pbx(&self) -> String {
        self.ip(10)
    }
    pub fn carrier_a(&self) -> String {
        self.ip(20)
    }
    pub fn carrier_b(&self) -> String {
        self.ip(30)
    }
    pub fn metrics(&self) -> String {
        format!("{}:9090", self.ip(1))
    }
    /// Ports for sipp media and control sockets: each instance takes k..k+9.
    pub fn port(&self, k: u16) -> u16 {
        // Below the SBC's media range (30000-39999 in the examples) and
        // the ephemeral range (stock sipp binds its control socket to the
        // wildcard address, so a port an outgoing socket took would fail it).
        16000 + (u16::from(self.0) - 100) * 100 + k
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn scenario(name: &str) -> String {
    repo()
        .join("loadtest/scenarios")
        .join(name)
        .display()
        .to_string()
}

/// `config/examples/<name>`, moved to this test's network, its
/// certificate paths made absolute (the test writes it elsewhere).
pub fn example(name: &str, net: Net) -> String {
    let text = std::fs::read_to_string(repo().join("config/examples").join(name)).unwrap();
    let certs = repo().join("config/examples/certs");
    text.replace("127.0.0.", &format!("127.{}.0.", net.0))
        .replace("\"certs/", &format!("\"{}/", certs.display()))
}

/// config/examples/register-to-itsp.toml on this test's network, two
/// shards.
pub fn itsp_config(net: Net) -> String {
    let mut text = example("register-to-itsp.toml", net);
    text.push_str("\n[shards]\ncount = 2\npin_threads = false\n");
    text
}

/// `config` (the example's) with carrier-a reached over TCP.
pub fn carrier_a_over_tcp(net: Net, config: &str) -> String {
    let at = format!("address = \"{}:5060\"\n", net.carrier_a());
    assert!(config.contains(&at), "{config}");
    config.replace(&at, &format!("{at}transport = \"tcp\"\n"))
}

/// The example configuration, on this test's network, with `shards`.
pub fn example_config(net: Net, shards: usize) -> String {
    let mut text = example("ip-trunks.toml", net);
    // Tests run in parallel: leave thread placement to the kernel.
    text.push_str(&format!(
        "\n[shards]\ncount = {shards}\npin_threads = false\n"
    ));
    text
}

/// A running `sbc`; killed on drop.
pub struct Sbc {
    child: Child,
    /// Its metrics listener.
    metrics_at: String,
    pub dir: tempfile::TempDir,
}

impl Sbc {
    pub fn start(net: Net, config: &str) -> Sbc {
        Sbc::start_with(config, &net.metrics(), &[])
    }

    /// Starts the sbc with `config`, its metrics at `metrics_at`, run
    /// through `wrapper` (e.g. `nsenter ... --`) when not empty.
    pub fn start_with(config: &str, metrics_at: &str, wrapper: &[&str]) -> Sbc {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sbc.toml");
        std::fs::write(&file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("sbc.log")).unwrap();
        let sbc_bin = env!("CARGO_BIN_EXE_sbc");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(sbc_bin);
                c
            }
            None => Command::new(sbc_bin),
        };
        let child = command
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sbc");
        let mut sbc = Sbc {
            child,
            metrics_at: metrics_at.to_owned(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(metrics_at, "/health").is_some_and(|b| b.trim() == "ok") {
                break;
            }
            if let Ok(Some(status)) = sbc.child.try_wait() {
                panic!("sbc exited at start ({status}): {}", sbc.log());
            }
            assert!(
                Instant::now() < deadline,
                "sbc did not come up: {}",
                sbc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sbc
    }

    /// Sends SIGHUP (reload the configuration file) and waits until the
    /// log says how it went.
    pub fn reload(&self) {
        let before = self.log().matches("reloaded").count();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches("reloaded").count() == before {
            assert!(Instant::now() < deadline, "no reload: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL: no chance to save anything) and
    /// waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGINT (stop, as Ctrl-C does).
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sbc.log")).unwrap_or_default()
    }

    /// Parsed `/metrics`: (name with labels, value).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let body = http_get(&self.metrics_at, "/metrics").expect("scrape /metrics");
        assert!(
            body.trim_end().ends_with("# EOF"),
            "OpenMetrics text ends with # EOF"
        );
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("sample line");
                (name.to_owned(), value.parse::<f64>().expect("sample value"))
            })
            .collect()
    }

    /// The value of one sample (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .into_iter()
            .find(|(n, _)| n == sample)
            .map_or(0.0, |(_, v)| v)
    }

    /// Sum of every sample of a metric family.
    pub fn metric_sum(&self, family: &str) -> f64 {
        self.metrics()
            .into_iter()
            .filter(|(n, _)| n == family || n.starts_with(&format!("{family}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    /// Waits until a metric reaches a value (the SBC counts asynchronously).
    pub fn wait_metric(&self, sample: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(sample);
            if v == want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sbc {
    fn drop(&mut self) {
        // Already gone (killed, or exited): its pid may be another's now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first (clean shutdown), then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    if !buf.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = buf.split_once("\r\n\r\n")?.1;
    // Undo chunked transfer encoding if used.
    if buf
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        return Some(out);
    }
    Some(body.to_owned())
}

/// One sipp instance run to completion.
pub struct SippResult {
    pub code: Option<i32>,
    pub successful: u64,
    pub failed: u64,
    pub output: String,
}

/// One call, `caller` to `callee` (both sipp), ran to its end on both
/// sides.
pub fn assert_one_call(caller: &SippResult, callee: &SippResult, sbc: &Sbc) {
    assert_eq!(
        (caller.code, caller.successful, callee.successful),
        (Some(0), 1, 1),
        "{}\n{}\n{}",
        caller.output,
        callee.output,
        sbc.log()
    );
}

pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
    name: String,
}

pub fn sipp_installed() {
    let ok = Command::new("sipp").arg("-v").output().is_ok();
    assert!(
        ok,
        "sipp is required (Debian package sip-tester); .ci/run installs it"
    );
}

impl Sipp {
    /// Starts sipp in a temporary working directory (sipp writes its files
    /// into the current directory). `args` come after the common flags.
    pub fn spawn(name: &str, args: &[String]) -> Sipp {
        sipp_installed();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .args([
                "-t",
                "u1",
                "-nostdin",
                "-timeout",
                "90",
                "-timeout_error",
                "-trace_stat",
                "-stf",
                "stat.csv",
                "-trace_err",
            ])
            .args(args)
            .stdout(std::fs::File::create(dir.path().join("out.txt")).unwrap())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start sipp");
        Sipp {
            child,
            dir,
            name: name.to_owned(),
        }
    }

    pub fn wait(mut self, limit: Duration) -> SippResult {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let csv = std::fs::read_to_string(self.dir.path().join("stat.csv")).unwrap_or_default();
        let (successful, failed) = parse_stat(&csv);
        let mut output =
            std::fs::read_to_string(self.dir.path().join("out.txt")).unwrap_or_default();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().ends_with("_errors.log") {
                output.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let tail: String = output
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        SippResult {
            code: status.and_then(|s| s.code()),
            successful,
            failed,
            output: format!("[{}] {tail}", self.name),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SuccessfulCall(C) and FailedCall(C) from the last line of sipp's
/// statistics file.
fn parse_stat(csv: &str) -> (u64, u64) {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return (0, 0);
    };
    let Some(last) = lines.next_back() else {
        return (0, 0);
    };
    let names: Vec<&str> = header.split(';').collect();
    let values: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// The common sipp arguments for a UAS on `ip`.
pub fn uas_args(net: Net, ip: &str, scenario_file: &str, calls: usize, k: u16) -> Vec<String> {
    vec![
        "-sf".into(),
        scenario(scenario_file),
        "-i".into(),
        ip.into(),
        "-p".into(),
        "5060".into(),
        "-m".into(),
        calls.to_string(),
        "-mp".into(),
        net.port(k).to_string(),
        "-cp".into(),
        net.port(k + 5).to_string(),
    ]
}

/// The common sipp arguments for a UAC on `ip` calling `number` via the SBC.
pub fn uac_args(
    net: Net,
    ip: &str,
    scenario_file: &str,
    number: &str,
    calls: usize,
    rate: u32,
    k: u16,
) -> Vec<String> {
    vec![
        "-sf".into(),
        scenario(scenario_file),
        "-s".into(),
        number.into(),
        "-i".into(),
        ip.into(),
        "-p".into(),
        "5060".into(),
        net.sbc(),
        "-m".into(),
        calls.to_string(),
        "-r".into(),
        rate.to_string(),
        "-mp".into(),
        net.port(k).to_string(),
        "-cp".into(),
        net.port(k + 5).to_string(),
    ]
}

/// A bare UDP peer for black-box checks.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    pub fn bind(ip: &str) -> Peer {
        let sock = UdpSocket::bind(format!("{ip}:5060")).unwrap();
        Peer { sock }
    }

    /// The next datagram within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<(String, SocketAddr)> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    }

    pub fn send(&self, to: &str, text: &str) {
        self.sock.send_to(text.as_bytes(), to).unwrap();
    }
}

/// Reads SIP messages until one satisfies `want` (skipping others).
pub fn wait_for(peer: &Peer, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some((m, _)) = peer.recv(Duration::from_millis(500))
            && want(&m)
        {
            return m;
        }
    }
    panic!("no {what} within 15 s");
}

/// The `c=` value (`IN IP4 192.0.2.1`, `IN IP6 ::1`) and audio port of
/// the SDP body of `msg`.
pub fn sdp_connection(msg: &str) -> (String, u16) {
    let body = msg.split("\r\n\r\n").nth(1).unwrap();
    let c = body
        .lines()
        .find_map(|l| l.strip_prefix("c="))
        .unwrap()
        .trim()
        .to_owned();
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    (c, port)
}

/// The (IPv4) connection address and audio port of an SDP body.
pub fn sdp_target(msg: &str) -> (String, u16) {
    let (c, port) = sdp_connection(msg);
    (c.strip_prefix("IN IP4 ").unwrap().to_owned(), port)
}

/// A one-stream G.711 (PCMA) SDP body with media at `ip:port`.
pub fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

/// A header's value in a SIP message (first occurrence, long name only).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// A response to `req` built from its headers.
pub fn respond(req: &str, code: u16, reason: &str, tag: &str, extra: &str, body: &str) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for line in req.split("\r\n").take_while(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
        {
            s.push_str(line);
            s.push_str("\r\n");
        }
        if lower.starts_with("to:") {
            s.push_str(line);
            if !lower.contains("tag=") {
                s.push_str(&format!(";tag={tag}"));
            }
            s.push_str("\r\n");
        }
    }
    s.push_str(extra);
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

/// SIPp running `scenario_file` (uac_register.xml, uac_unregister.xml) for
/// account `user` with `password`, from `ip`:5070 (where a phone's sipp
/// then answers: [`phone_sipp`]).
pub fn registration(
    net: Net,
    scenario_file: &str,
    (ip, user, password): (&str, &str, &str),
    k: u16,
) -> SippResult {
    let args = phone_uac_args(net, scenario_file, user, (ip, user, password), k);
    Sipp::spawn(user, &args).wait(Duration::from_secs(60))
}

/// sipp arguments for a phone at `ip`:5070 running the UAC
/// `scenario_file` once towards the SBC as account `user` with
/// `password`; `service` is the Request-URI user (sipp -s).
pub fn phone_uac_args(
    net: Net,
    scenario_file: &str,
    service: &str,
    (ip, user, password): (&str, &str, &str),
    k: u16,
) -> Vec<String> {
    [
        "-sf",
        &scenario(scenario_file),
        "-s",
        service,
        "-au",
        user,
        "-ap",
        password,
        "-i",
        ip,
        "-p",
        "5070",
        &net.sbc(),
        "-m",
        "1",
        "-mp",
        &net.port(k).to_string(),
        "-cp",
        &net.port(k + 5).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A phone's sipp (a UAS scenario) answering on `ip`:5070, the address
/// its REGISTER came from; `extra` sipp arguments after the common ones.
pub fn phone_sipp(net: Net, ip: &str, scenario_file: &str, k: u16, extra: &[&str]) -> Sipp {
    let mut args = uas_args(net, ip, scenario_file, 1, k);
    let port = args.iter().position(|a| a == "-p").unwrap();
    args[port + 1] = "5070".into();
    args.extend(extra.iter().map(|s| s.to_string()));
    Sipp::spawn(ip, &args)
}

/// `/registrations`, polled until `want` says yes (or 10 s).
pub fn registrations(net: Net, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = http_get(&net.metrics(), "/registrations").unwrap_or_default();
        if want(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lower-case hex SHA-256 of `s` (RFC 7616 digest answers).
pub fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A parameter of a digest challenge or credentials value (`Digest
/// realm="x", qop="auth,auth-int", nc=00000001`), unquoted. Names are
/// matched whole (`nonce` is never read out of `cnonce`), and a comma
/// inside quotes does not end a value.
pub fn digest_param(value: &str, name: &str) -> Option<String> {
    let value = value.trim();
    let mut rest = value.strip_prefix("Digest").unwrap_or(value);
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (found, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            }
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(found.to_owned());
        }
        rest = next;
    }
}

/// Lower-case hex MD5 of `s` (digest answers, HA1s).
pub fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
