//! SIPp compatibility: the scenario pairs in `scenarios/` run with stock
//! `sipp` on both sides, then with `sbc-load` as the caller and as the
//! callee; a recording relay between the two sides captures every message,
//! and the message sequences must be the same in all three runs: start
//! lines, header names in order, SDP line types, Content-Length right, and
//! the whole text equal once every number (ports, pids, addresses, call
//! numbers) is masked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shipped scenario by name, or any scenario file by its full path.
fn scenario(name: &str) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
        .display()
        .to_string()
}

fn sipp_installed() {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is required (Debian package sip-tester); .ci/run installs it"
    );
}

/// Messages seen: direction ('>' to the callee, '<' back) and bytes.
type Log = Arc<Mutex<Vec<(char, Vec<u8>)>>>;

/// A UDP relay between caller and callee that records every message.
struct Recorder {
    log: Log,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Callers send to `front`; the relay talks to the callee at `callee`
    /// from `back`.
    fn start(front: &str, back: &str, callee: &str) -> Recorder {
        let front = Arc::new(UdpSocket::bind(front).unwrap());
        let back = Arc::new(UdpSocket::bind(back).unwrap());
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let callee: SocketAddr = callee.parse().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let caller: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let mut threads = Vec::new();
        {
            let (front, back, log, stop, caller) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&log),
                Arc::clone(&stop),
                Arc::clone(&caller),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, src)) = front.recv_from(&mut buf) {
                        *caller.lock().unwrap() = Some(src);
                        log.lock().unwrap().push(('>', buf[..n].to_vec()));
                        let _ = back.send_to(&buf[..n], callee);
                    }
                }
            }));
        }
        {
            let (front, back, log, stop) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&log),
                Arc::clone(&stop),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = back.recv_from(&mut buf) {
                        log.lock().unwrap().push(('<', buf[..n].to_vec()));
                        if let Some(c) = *caller.lock().unwrap() {
                            let _ = front.send_to(&buf[..n], c);
                        }
                    }
                }
            }));
        }
        Recorder { log, stop, threads }
    }

    fn finish(self) -> Vec<(char, Vec<u8>)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The shape of a message: direction, method or status, header names in
/// order, SDP line types, and whether Content-Length matches the body.
fn shape(dir: char, m: &[u8]) -> String {
    let text = String::from_utf8_lossy(m);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let what = if first.starts_with("SIP/2.0 ") {
        first.split(' ').take(2).collect::<Vec<_>>().join(" ")
    } else {
        first.split(' ').next().unwrap_or("").to_string()
    };
    let mut names = Vec::new();
    let mut length_ok = true;
    for l in lines {
        let (name, value) = l.split_once(':').unwrap_or((l, ""));
        names.push(name.trim().to_string());
        if name.trim().eq_ignore_ascii_case("Content-Length") {
            length_ok = value.trim().parse::<usize>().ok() == Some(body.len());
        }
    }
    let sdp: Vec<&str> = body
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.get(..2).unwrap_or(l))
        .collect();
    // The whole text with every number masked (ports, pids, addresses
    // and call numbers differ from run to run).
    let mut masked = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                masked.push('#');
            }
            in_digits = true;
        } else {
            masked.push(c);
            in_digits = false;
        }
    }
    format!(
        "{dir} {what} [{}] sdp[{}] length_ok={length_ok}\n{masked}",
        names.join(","),
        sdp.join("")
    )
}

#[derive(Debug)]
enum Side {
    Sipp,
    SbcLoad,
}

/// Starts one side in `dir`; its standard error goes to `dir/NAME.err`
/// (named by its scenario file's stem, else its kind).
fn spawn(side: &Side, args: &[String], dir: &std::path::Path) -> Child {
    let stem = args
        .iter()
        .skip_while(|a| *a != "-sf")
        .nth(1)
        .and_then(|p| std::path::Path::new(p).file_stem())
        .map_or_else(|| format!("{side:?}"), |s| s.to_string_lossy().into_owned());
    let err = std::fs::File::create(dir.join(format!("{stem}.err"))).unwrap();
    let mut cmd = match side {
        Side::Sipp => {
            let mut c = Command::new("sipp");
            c.args(["-trace_err"]);
            c
        }
        Side::SbcLoad => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_sbc-load"));
            c.args(["--threads", "1", "--quiet"]);
            c
        }
    };
    cmd.current_dir(dir)
        .args(["-t", "u1", "-nostdin", "-timeout", "60", "-timeout_error"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(err);
    cmd.spawn().unwrap()
}

/// What the processes started in `dir` wrote on their standard error
/// (its `.err` files), for an assertion's message.
fn standard_errors(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".err"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait(mut c: Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A callee's arguments: scenario `xml` on `ip`:5060 for `calls` calls,
/// its media and control ports.
fn callee_args(xml: String, ip: &str, calls: u32, (mp, cp): (String, String)) -> Vec<String> {
    [
        "-sf",
        &xml,
        "-i",
        ip,
        "-p",
        "5060",
        "-m",
        &calls.to_string(),
        "-mp",
        &mp,
        "-cp",
        &cp,
    ]
    .map(String::from)
    .to_vec()
}

/// Runs one caller/callee pair through a recorder on 127.`net`.0.0/24 and
/// returns the shapes of the messages.
fn run_pair(net: u8, caller: Side, callee: Side, uac: &str, uas: &str, calls: u32) -> Vec<String> {
    let ip = |h: u8| format!("127.{net}.0.{h}");
    let (uac_ip, relay_ip, uas_ip) = (ip(1), ip(2), ip(3));
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(
        &format!("{relay_ip}:5060"),
        &format!("{relay_ip}:5070"),
        &format!("{uas_ip}:5060"),
    );
    // Below the ephemeral range: stock sipp binds its control socket to
    // the wildcard address.
    let media = |k: u16| (24000 + (u16::from(net) - 160) * 20 + k).to_string();
    let callee_proc = spawn(
        &callee,
        &callee_args(scenario(uas), &uas_ip, calls, (media(0), media(5))),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller_proc = spawn(
        &caller,
        &[
            "-sf".into(),
            scenario(uac),
            "-s".into(),
            "3901".into(),
            "-i".into(),
            uac_ip,
            "-p".into(),
            "5060".into(),
            format!("{relay_ip}:5060"),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            "5".into(),
            "-d".into(),
            "100".into(),
            "-mp".into(),
            media(10),
            "-cp".into(),
            media(15),
        ],
        dir.path(),
    );
    let uac_code = wait(caller_proc, Duration::from_secs(60));
    let uas_code = wait(callee_proc, Duration::from_secs(20));
    let log = rec.finish();
    let err = |f: &str| {
        let stem = std::path::Path::new(f).file_stem().unwrap_or_default();
        std::fs::read_to_string(dir.path().join(format!("{}.err", stem.to_string_lossy())))
            .unwrap_or_default()
    };
    assert_eq!(
        uac_code,
        Some(0),
        "caller exit status ({uac}): {}",
        err(uac)
    );
    assert_eq!(
        uas_code,
        Some(0),
        "callee exit status ({uas}): {}",
        err(uas)
    );
    log.iter().map(|(d, m)| shape(*d, m)).collect()
}

fn check_pair(net: u8, uac: &str, uas: &str) {
    sipp_installed();
    let calls = 3;
    let reference = run_pair(net, Side::Sipp, Side::Sipp, uac, uas, calls);
    assert!(
        reference.len() >= 4 * calls as usize,
        "sipp pair exchanged too little: {reference:#?}"
    );
    assert!(reference.iter().all(|s| s.contains("length_ok=true\n")));
    if std::env::var_os("COMPAT_SHOW").is_some() {
        eprintln!("{uac} / {uas}:\n{}", reference.join("\n"));
    }
    let as_caller = run_pair(net + 1, Side::SbcLoad, Side::Sipp, uac, uas, calls);
    assert_eq!(as_caller, reference, "sbc-load as the caller ({uac})");
    let as_callee = run_pair(net + 2, Side::Sipp, Side::SbcLoad, uac, uas, calls);
    assert_eq!(as_callee, reference, "sbc-load as the callee ({uas})");
}

#[test]
fn basic_call_matches_sipp() {
    check_pair(160, "uac_basic.xml", "uas_answer.xml");
}

#[test]
fn cancel_matches_sipp() {
    check_pair(163, "uac_cancel.xml", "uas_ring_no_answer.xml");
}

#[test]
fn callee_hangup_matches_sipp() {
    check_pair(166, "uac_bye_from_callee.xml", "uas_answer_then_bye.xml");
}

#[test]
fn busy_matches_sipp() {
    check_pair(169, "uac_busy.xml", "uas_busy.xml");
}

#[test]
fn builtin_pair_matches_sipp_files() {
    // -sn uac / -sn uas are the shipped uac_basic.xml / uas_basic.xml.
    check_pair(172, "uac_basic.xml", "uas_basic.xml");
}

/// SIPp's own built-in scenarios (`sipp -sd NAME`), written into `dir`;
/// `uac_pcap` plays `pcap/g711a.pcap` and `pcap/dtmf_2833_1.pcap` next to
/// it, captures sip-tester installs.
fn sipp_builtin(dir: &std::path::Path, name: &str) -> String {
    sipp_installed();
    let out = Command::new("sipp").args(["-sd", name]).output().unwrap();
    assert!(
        out.stdout.starts_with(b"<?xml"),
        "sipp -sd {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, &out.stdout).unwrap();
    if name == "uac_pcap" {
        std::fs::create_dir_all(dir.join("pcap")).unwrap();
        for pcap in ["g711a.pcap", "dtmf_2833_1.pcap"] {
            std::fs::copy(
                format!("/usr/share/sip-tester/{pcap}"),
                dir.join("pcap").join(pcap),
            )
            .unwrap();
        }
    }
    path.display().to_string()
}

/// The conformance suite: SIPp's built-in pairs, as `sipp -sd` prints
/// them, run with sbc-load on either side against stock sipp, must
/// exchange the messages a sipp pair exchanges.
fn check_builtin_pair(net: u8, uac: &str, uas: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (uac, uas) = (sipp_builtin(dir.path(), uac), sipp_builtin(dir.path(), uas));
    check_pair(net, &uac, &uas);
}

#[test]
fn sipp_builtin_uac_and_uas_match_sipp() {
    check_builtin_pair(187, "uac", "uas");
}

#[test]
fn sipp_builtin_regexp_matches_sipp() {
    check_builtin_pair(190, "regexp", "uas");
}

#[test]
fn sipp_builtin_branch_client_and_server_match_sipp() {
    check_builtin_pair(193, "branchc", "branchs");
}

#[test]
fn sipp_builtin_uac_pcap_matches_sipp() {
    check_builtin_pair(196, "uac_pcap", "uas");
}

/// Runs `uac_basic.xml` from `caller` (with `-trace_stat -fd 1`) against
/// a stock sipp `uas_answer.xml`, directly; returns the statistics file.
fn caller_statistics(net: u8, caller: Side, calls: u32) -> String {
    let ip = |h: u8| format!("127.{net}.0.{h}");
    let dir = tempfile::tempdir().unwrap();
    let callee = spawn(
        &Side::Sipp,
        &[
            "-sf".into(),
            scenario("uas_answer.xml"),
            "-i".into(),
            ip(3),
            "-p".into(),
            "5060".into(),
            "-m".into(),
            calls.to_string(),
        ],
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller = spawn(
        &caller,
        &[
            "-sf".into(),
            scenario("uac_basic.xml"),
            "-s".into(),
            "3901".into(),
            "-i".into(),
            ip(1),
            "-p".into(),
            "5060".into(),
            format!("{}:5060", ip(3)),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            "4".into(),
            "-d".into(),
            "200".into(),
            "-trace_stat".into(),
            "-stf".into(),
            "stat.csv".into(),
            "-fd".into(),
            "1".into(),
        ],
        dir.path(),
    );
    assert_eq!(wait(caller, Duration::from_secs(60)), Some(0), "caller");
    assert_eq!(wait(callee, Duration::from_secs(20)), Some(0), "callee");
    std::fs::read_to_string(dir.path().join("stat.csv")).unwrap()
}

/// `-trace_stat`: sbc-load writes SIPp's statistics file, the same header
/// (columns, order, names; the scenario's rtd and repartition columns)
/// and lines as SIPp's, a line a second and one at the end.
#[test]
fn the_statistics_file_has_sipps_columns() {
    sipp_installed();
    let calls = 8;
    let (sipp, ours) = (
        caller_statistics(211, Side::Sipp, calls),
        caller_statistics(212, Side::SbcLoad, calls),
    );
    let (sipp_lines, our_lines): (Vec<&str>, Vec<&str>) =
        (sipp.lines().collect(), ours.lines().collect());
    assert_eq!(our_lines[0], sipp_lines[0], "the header");
    let columns: Vec<&str> = our_lines[0].split(';').collect();
    // About 2 s of calls at -fd 1: a few periodic lines and the last one.
    assert!(our_lines.len() >= 3, "{ours}");
    for l in &our_lines[1..] {
        assert_eq!(l.split(';').count(), columns.len(), "{l}");
    }
    let value = |line: &str, name: &str| -> String {
        let i = columns.iter().position(|c| *c == name).unwrap();
        line.split(';').nth(i).unwrap().to_string()
    };
    let (ours_last, sipp_last) = (
        our_lines[our_lines.len() - 1],
        sipp_lines[sipp_lines.len() - 1],
    );
    for name in [
        "OutgoingCall(C)",
        "IncomingCall(C)",
        "TotalCallCreated",
        "SuccessfulCall(C)",
        "FailedCall(C)",
        "Retransmissions(C)",
        "FailedUnexpectedMessage(C)",
        "TargetRate",
    ] {
        assert_eq!(value(ours_last, name), value(sipp_last, name), "{name}");
    }
    assert_eq!(value(ours_last, "SuccessfulCall(C)"), calls.to_string());
    // Times and durations in SIPp's formats.
    let start = value(ours_last, "StartTime");
    assert_eq!(start.split('\t').count(), 3, "{start}");
    let length = value(ours_last, "CallLength(C)");
    assert_eq!(length.len(), "00:00:00:200000".len(), "{length}");
    // Over the run, the periods add up to the total.
    let successful_p: u64 = our_lines[1..]
        .iter()
        .map(|l| value(l, "SuccessfulCall(P)").parse::<u64>().unwrap())
        .sum();
    assert_eq!(successful_p, u64::from(calls));
}

/// One 3PCC run on 127.`net`.0.0/24: SIPp's built-in callees A
/// (`3pcc-A`) and B (`3pcc-B`), stock sipp, and the controller's two
/// halves, `3pcc-C-B` (listens for its twin) and `3pcc-C-A` (connects to
/// it and calls), each stock sipp or sbc-load. Every process must end
/// with every call completed.
fn run_3pcc(net: u8, c_a: Side, c_b: Side, calls: u32) {
    let ip = |h: u8| format!("127.{net}.0.{h}");
    let dir = tempfile::tempdir().unwrap();
    let xml = |name: &str| sipp_builtin(dir.path(), name);
    // Below the ephemeral range: stock sipp binds its control socket and
    // its twin listener to the wildcard address.
    let port = |k: u16| (27000 + (u16::from(net) - 178) * 10 + k).to_string();
    let side = |name: &str, host: u8, k: u16, extra: &[String]| -> Vec<String> {
        let mut v = vec![
            "-sf".to_string(),
            xml(name),
            "-i".into(),
            ip(host),
            "-p".into(),
            "5060".into(),
            "-m".into(),
            calls.to_string(),
            "-mp".into(),
            port(k),
            "-cp".into(),
            port(k + 1),
        ];
        v.extend_from_slice(extra);
        v
    };
    let a = spawn(&Side::Sipp, &side("3pcc-A", 1, 0, &[]), dir.path());
    let b = spawn(&Side::Sipp, &side("3pcc-B", 2, 2, &[]), dir.path());
    let twin = format!("{}:{}", ip(3), port(9));
    let c_b_proc = spawn(
        &c_b,
        &side(
            "3pcc-C-B",
            3,
            4,
            &["-3pcc".into(), twin.clone(), format!("{}:5060", ip(2))],
        ),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let c_a_proc = spawn(
        &c_a,
        &side(
            "3pcc-C-A",
            4,
            6,
            &[
                "-3pcc".into(),
                twin,
                format!("{}:5060", ip(1)),
                "-r".into(),
                "2".into(),
            ],
        ),
        dir.path(),
    );
    let codes = [
        wait(c_a_proc, Duration::from_secs(60)),
        wait(c_b_proc, Duration::from_secs(30)),
        wait(a, Duration::from_secs(30)),
        wait(b, Duration::from_secs(30)),
    ];
    let errs = standard_errors(dir.path());
    assert_eq!(
        codes,
        [Some(0); 4],
        "exit status of C-A ({c_a:?}), C-B ({c_b:?}), A, B\n{errs}"
    );
}

/// SIPp's 3PCC built-ins (`3pcc-C-A`, `3pcc-C-B`, `3pcc-A`, `3pcc-B`):
/// stock sipp throughout, then sbc-load as either half of the controller
/// against stock sipp as the other (their twin connection included), then
/// sbc-load as both.
#[test]
fn sipp_builtin_3pcc_runs_with_sbc_load_as_either_controller_half() {
    sipp_installed();
    run_3pcc(178, Side::Sipp, Side::Sipp, 3);
    run_3pcc(179, Side::SbcLoad, Side::Sipp, 3);
    run_3pcc(180, Side::Sipp, Side::SbcLoad, 3);
    run_3pcc(181, Side::SbcLoad, Side::SbcLoad, 3);
}

/// One extended-3PCC run on 127.`net`.0.0/24: the slave `s1`
/// (`3pcc_ext_slave.xml`) and the master `m` (`3pcc_ext_master.xml`),
/// placed by `-slave_cfg`, each stock sipp or sbc-load. Before each call
/// the master tells the slave to expect it and waits for "ready"; the
/// slave answers it and reports it confirmed; the master hangs up. Both
/// must end with every call completed.
fn run_3pcc_extended(net: u8, master: Side, slave: Side, calls: u32) {
    let ip = |h: u8| format!("127.{net}.0.{h}");
    let dir = tempfile::tempdir().unwrap();
    // Below the ephemeral range: stock sipp binds its twin listener
    // to the wildcard address.
    let port = |k: u16| (29500 + (u16::from(net) - 213) * 10 + k).to_string();
    let cfg = dir.path().join("peers.cfg");
    std::fs::write(
        &cfg,
        format!(
            "# extended 3PCC instances\nm;{}:{}\ns1;{}:{}\n",
            ip(3),
            port(8),
            ip(4),
            port(9)
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let side = |file: &str, me: [&str; 2], host: u8, k: u16, remote: u8| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "-sf".into(),
            scenario(file),
            me[0].into(),
            me[1].into(),
            "-slave_cfg".into(),
            cfg.clone(),
            "-i".into(),
            ip(host),
            "-p".into(),
            "5060".into(),
            "-m".into(),
            calls.to_string(),
            "-mp".into(),
            port(k),
            "-cp".into(),
            port(k + 1),
            format!("{}:5060", ip(remote)),
        ];
        if me[0] == "-master" {
            v.extend(["-r".into(), "2".into()]);
        }
        v
    };
    let slave_proc = spawn(
        &slave,
        &side("3pcc_ext_slave.xml", ["-slave", "s1"], 4, 2, 3),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let master_proc = spawn(
        &master,
        &side("3pcc_ext_master.xml", ["-master", "m"], 3, 4, 4),
        dir.path(),
    );
    let codes = [
        wait(master_proc, Duration::from_secs(60)),
        wait(slave_proc, Duration::from_secs(30)),
    ];
    let errs = standard_errors(dir.path());
    assert_eq!(
        codes,
        [Some(0); 2],
        "exit status of master ({master:?}) and slave ({slave:?})\n{errs}"
    );
}

/// SIPp's extended 3PCC (`-master`/`-slave`/`-slave_cfg`): stock sipp
/// throughout, then sbc-load as master or slave against stock sipp as
/// the other, then sbc-load as both.
#[test]
fn extended_3pcc_runs_with_sbc_load_as_master_or_slave() {
    sipp_installed();
    run_3pcc_extended(213, Side::Sipp, Side::Sipp, 3);
    run_3pcc_extended(214, Side::SbcLoad, Side::Sipp, 3);
    run_3pcc_extended(215, Side::Sipp, Side::SbcLoad, 3);
    run_3pcc_extended(216, Side::SbcLoad, Side::SbcLoad, 3);
}

/// `-t un` against stock sipp: a caller gives each call a socket of its
/// own (its port in Via and Contact, the message leaving from it), and
/// past `-max_socket` shares the open ones; stock sipp's callee answers
/// each on it. Then stock sipp as the `-t un` caller against sbc-load.
#[test]
fn a_socket_per_call_works_with_sipp_both_ways() {
    sipp_installed();
    for (k, caller, callee, max_socket, ports) in [
        (0u16, Side::SbcLoad, Side::Sipp, "100", 6),
        (1, Side::SbcLoad, Side::Sipp, "2", 2),
        (2, Side::Sipp, Side::SbcLoad, "100", 6),
    ] {
        let ip = |h: u8| format!("127.219.{k}.{h}");
        let dir = tempfile::tempdir().unwrap();
        let uas = spawn(
            &callee,
            &[
                "-sf".into(),
                scenario("uas_answer.xml"),
                "-i".into(),
                ip(2),
                "-p".into(),
                "5060".into(),
                "-m".into(),
                "6".into(),
                "-trace_msg".into(),
                "-message_file".into(),
                "callee_messages.log".into(),
                "-mp".into(),
                (29600 + 20 * k).to_string(),
                "-cp".into(),
                (29660 + 4 * k).to_string(),
            ],
            dir.path(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let mut args: Vec<String> = ["-t", "un", "-max_socket", max_socket, "-sn", "uac", "-i"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend([
            ip(1),
            "-p".into(),
            "5070".into(),
            "-m".into(),
            "6".into(),
            "-r".into(),
            "10".into(),
            // Every call open at once: each keeps its socket meanwhile.
            "-d".into(),
            "1000".into(),
            "-mp".into(),
            (29610 + 20 * k).to_string(),
            "-cp".into(),
            (29662 + 4 * k).to_string(),
            format!("{}:5060", ip(2)),
        ]);
        // spawn() puts -t u1 first; the later -t un wins (sipp and clap
        // both take the last).
        let uac = spawn(&caller, &args, dir.path());
        let codes = [
            wait(uac, Duration::from_secs(60)),
            wait(uas, Duration::from_secs(30)),
        ];
        let errs = standard_errors(dir.path());
        assert_eq!(
            codes,
            [Some(0); 2],
            "caller {caller:?}, callee {callee:?}, -max_socket {max_socket}\n{errs}"
        );
        // The INVITEs the callee received: each Via names the port the
        // call's socket has, never the caller's -p.
        let log = std::fs::read_to_string(dir.path().join("callee_messages.log")).unwrap();
        let mut via_ports: Vec<u16> = log
            .split("INVITE sip:")
            .skip(1)
            .filter_map(|m| {
                let via = m.lines().find(|l| l.starts_with("Via:"))?;
                let host_port = via.split_whitespace().nth(2)?;
                let port = host_port.split(';').next()?.rsplit(':').next()?;
                port.parse().ok()
            })
            .collect();
        assert_eq!(via_ports.len(), 6, "{log}");
        assert!(!via_ports.contains(&5070), "{via_ports:?}");
        via_ports.sort_unstable();
        via_ports.dedup();
        assert_eq!(
            via_ports.len(),
            ports,
            "distinct call sockets: {via_ports:?}"
        );
    }
}

/// sbc-load and stock sipp over TCP, each side against the other, with
/// one connection per thread (`-t t1`) and one per call (`-t tn`): every
/// call of SIPp's built-in uac and of a callee without a `<timewait>`
/// succeeds on both sides. (SIPp fails a callee's calls whose connection
/// the caller closes, in their timewait too: with SIPp's built-in uas a
/// stock sipp pair reports failed calls over `tn`, and sbc-load does the
/// same; see `engine::a_lost_connection_fails_its_calls`.)
#[test]
fn tcp_transports_interwork_with_sipp() {
    sipp_installed();
    let cmd = |side: &Side| match side {
        Side::Sipp => {
            let mut c = Command::new("sipp");
            // sipp refuses tn while its socket cap exceeds the fd limit.
            c.args(["-max_socket", "256"]);
            c
        }
        Side::SbcLoad => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_sbc-load"));
            c.args(["--threads", "1", "--quiet"]);
            c
        }
    };
    for (k, (caller, callee, mode)) in [
        (Side::SbcLoad, Side::Sipp, "t1"),
        (Side::Sipp, Side::SbcLoad, "t1"),
        (Side::SbcLoad, Side::Sipp, "tn"),
        (Side::Sipp, Side::SbcLoad, "tn"),
    ]
    .into_iter()
    .enumerate()
    {
        let ip = |h: usize| format!("127.210.{k}.{h}");
        let dir = tempfile::tempdir().unwrap();
        let common = [
            "-t",
            mode,
            "-nostdin",
            "-timeout",
            "60",
            "-timeout_error",
            "-m",
            "10",
        ];
        let uas = cmd(&callee)
            .current_dir(dir.path())
            .args(common)
            .arg("-sf")
            .arg(scenario("uas_answer.xml"))
            .args(["-i", &ip(2), "-p", "5060"])
            // Control and media ports apart from the other tests' and
            // below the ephemeral range (a socket bound to port 0 cannot
            // take them).
            .args(["-cp", &(28940 + 4 * k).to_string()])
            .args(["-mp", &(28000 + 20 * k).to_string()])
            .stdout(std::fs::File::create(dir.path().join("callee.out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("callee.err")).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let uac = cmd(&caller)
            .current_dir(dir.path())
            .args(common)
            .args([
                "-sn",
                "uac",
                "-i",
                &ip(1),
                "-p",
                "5070",
                "-r",
                "10",
                "-d",
                "100",
            ])
            .args(["-cp", &(28942 + 4 * k).to_string()])
            .args(["-mp", &(28010 + 20 * k).to_string()])
            .arg(format!("{}:5060", ip(2)))
            .stdout(std::fs::File::create(dir.path().join("caller.out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("caller.err")).unwrap())
            .spawn()
            .unwrap();
        let out = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        let what = || {
            format!(
                "{mode}: caller {caller:?}, callee {callee:?}\n{}\n{}\n{}\n{}",
                out("caller.err"),
                out("caller.out"),
                out("callee.err"),
                out("callee.out")
            )
        };
        assert_eq!(wait(uac, Duration::from_secs(60)), Some(0), "{}", what());
        assert_eq!(wait(uas, Duration::from_secs(20)), Some(0), "{}", what());
    }
}

/// SIPp's out-of-call scenario, both ways: once each call is confirmed,
/// the callee (stock sipp) sends its caller an OPTIONS whose Call-ID is
/// the call's behind a `probe///` prefix, and waits for its 200. The
/// caller takes Call-IDs whole (`-callid_slash_ign`), so the OPTIONS
/// belongs to none of its calls and only its out-of-call scenario
/// (`-oocsn ooc_default`) answers it; the callee strips the prefix, so the
/// 200 reaches its call. Every call completes with stock sipp as the
/// caller, and with sbc-load.
#[test]
fn out_of_call_requests_are_answered_as_sipp_answers_them() {
    sipp_installed();
    let answering = std::fs::read_to_string(scenario("uas_answer.xml")).unwrap();
    let probe = r#"<recv request="ACK" crlf="true">
  </recv>

  <send>
    <![CDATA[

      OPTIONS sip:caller@CALLER:5060 SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:probe@[local_ip]:[local_port]>;tag=probe[call_number]
      To: <sip:caller@CALLER:5060>
      Call-ID: probe///[call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" timeout="10000">
  </recv>
"#;
    let probing = answering.replacen(
        "<recv request=\"ACK\" crlf=\"true\">\n  </recv>\n",
        probe,
        1,
    );
    assert_ne!(probing, answering);
    for (net, caller) in [(222u8, Side::Sipp), (223, Side::SbcLoad)] {
        let ip = |h: u8| format!("127.{net}.0.{h}");
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("uas_probe.xml");
        std::fs::write(&xml, probing.replace("CALLER", &ip(1))).unwrap();
        let port = |k: u16| (27100 + (u16::from(net) - 222) * 10 + k).to_string();
        let callee = spawn(
            &Side::Sipp,
            &callee_args(xml.display().to_string(), &ip(3), 3, (port(0), port(5))),
            dir.path(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let uac = spawn(
            &caller,
            &[
                "-sf".into(),
                scenario("uac_basic.xml"),
                "-i".into(),
                ip(1),
                "-p".into(),
                "5060".into(),
                format!("{}:5060", ip(3)),
                "-m".into(),
                "3".into(),
                "-r".into(),
                "2".into(),
                // The BYE waits a second: the probe comes first.
                "-d".into(),
                "1000".into(),
                "-oocsn".into(),
                "ooc_default".into(),
                "-callid_slash_ign".into(),
                "-mp".into(),
                port(2),
                "-cp".into(),
                port(7),
            ],
            dir.path(),
        );
        let codes = [
            wait(uac, Duration::from_secs(60)),
            wait(callee, Duration::from_secs(30)),
        ];
        let errs = standard_errors(dir.path());
        assert_eq!(codes, [Some(0); 2], "caller ({caller:?}), callee\n{errs}");
    }
}
