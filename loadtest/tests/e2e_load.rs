//! The real sbc-load binary on loopback: caller and callee against each
//! other with several threads, the report, and SIPp's exit statuses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn spawn(args: &[&str]) -> Child {
    spawn_in(Path::new("."), args)
}

/// sbc-load run in `dir` (where its SCENARIO_PID_* files go).
fn spawn_in(dir: &Path, args: &[&str]) -> Child {
    command_in(dir, args).spawn().unwrap()
}

/// sbc-load with `args` in `dir`: no standard input, its output kept.
fn command_in(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbc-load"));
    c.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn finish(mut c: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return c.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    c.wait_with_output().unwrap()
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn caller_and_callee_with_two_threads_each() {
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        "127.175.0.2",
        "-p",
        "5060",
        "-m",
        "2000",
        "--threads",
        "2",
        "--json",
        uas_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let uac = spawn(&[
        "-sn",
        "uac",
        "-i",
        "127.175.0.1",
        "-p",
        "5060",
        "127.175.0.2:5060",
        "-m",
        "2000",
        "-r",
        "400",
        "-d",
        "50",
        "--threads",
        "2",
        "--connect",
        "--json",
        uac_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    let uac = finish(uac, Duration::from_secs(90));
    let uas = finish(uas, Duration::from_secs(30));
    let out = String::from_utf8_lossy(&uac.stdout);
    assert_eq!(uac.status.code(), Some(0), "{out}");
    assert_eq!(
        uas.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uas.stdout)
    );
    assert!(
        out.contains("Successful call") && out.contains("INVITE -> 2xx"),
        "{out}"
    );
    let (c, s) = (json(&uac_json), json(&uas_json));
    assert_eq!(c["calls_succeeded"], 2000);
    assert_eq!(c["calls_failed"], 0);
    assert_eq!(c["threads"], 2);
    assert_eq!(s["calls_succeeded"], 2000);
    assert_eq!(c["invite_to_18x"]["count"], 2000);
    assert_eq!(c["steps"][0]["sent"], 2000);
    assert_eq!(c["steps"][8]["received"], 2000);
    let rate = c["achieved_cps"].as_f64().unwrap();
    assert!(rate > 200.0 && rate < 450.0, "rate {rate}");
    let p50 = c["invite_to_200"]["p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 1000.0, "{p50}");
}

#[test]
fn a_callee_port_another_process_holds_is_refused() {
    // As with SIPp, a second callee on the same address fails to start
    // instead of sharing the port (SO_REUSEPORT) with the first.
    let callee = |transport: &str, timeout: &str| {
        let args = [
            "-sn",
            "uas",
            "-i",
            "127.175.0.9",
            "-p",
            "5071",
            "-t",
            transport,
            "-m",
            "1",
            "--threads",
            "2",
            "-timeout",
            timeout,
        ];
        finish(spawn(&args), Duration::from_secs(10))
    };
    // The holder binds as a callee's threads do: SO_REUSEPORT.
    for (transport, kind) in [("u1", socket2::Type::DGRAM), ("t1", socket2::Type::STREAM)] {
        let held = socket2::Socket::new(socket2::Domain::IPV4, kind, None).unwrap();
        held.set_reuse_port(true).unwrap();
        let at: std::net::SocketAddr = "127.175.0.9:5071".parse().unwrap();
        held.bind(&at.into()).unwrap();
        if kind == socket2::Type::STREAM {
            held.listen(16).unwrap();
        }
        let out = callee(transport, "5");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(254), "{transport}: {err}");
        assert!(
            err.contains("127.175.0.9:5071") && err.contains("another socket holds it"),
            "{transport}: {err}"
        );
    }
    // Free, the port is taken by every thread.
    let out = callee("u1", "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("another socket holds it"), "{err}");
}

#[test]
fn exit_statuses_are_sipps() {
    // A call that fails (busy callee, caller expecting 200) -> 1.
    let uas = spawn(&[
        "-sf",
        &scenario("uas_busy.xml"),
        "-i",
        "127.175.0.4",
        "-p",
        "5060",
        "-m",
        "2",
        "--threads",
        "1",
        "-timeout",
        "30",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let uac = spawn(&[
        "-sn",
        "uac",
        "-i",
        "127.175.0.3",
        "127.175.0.4:5060",
        "-m",
        "2",
        "-r",
        "10",
        "--threads",
        "1",
        "-timeout",
        "30",
    ]);
    let uac = finish(uac, Duration::from_secs(40));
    let _ = finish(uas, Duration::from_secs(10));
    let out = String::from_utf8_lossy(&uac.stdout);
    assert_eq!(uac.status.code(), Some(1), "{out}");
    assert!(out.contains("unexpected message"), "{out}");

    // A scenario that does not load -> 1, with the element named.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<scenario><send><![CDATA[X]]></send><jump/></scenario>",
    )
    .unwrap();
    let o = finish(
        spawn(&["-sf", bad.to_str().unwrap(), "127.175.0.9:5060"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("<jump>"));

    // An option sbc-load does not implement -> 255, named.
    let o = finish(
        spawn(&["-sn", "uac", "-plugin", "x.so", "127.175.0.9:5060"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-plugin"));

    // -sd prints a built-in scenario (the file -sn runs) and exits.
    let o = finish(spawn(&["-sd", "uac"]), Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(scenario("uac_basic.xml")).unwrap()
    );
    let o = finish(spawn(&["-sd", "nope"]), Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(255));

    // 3PCC options that do not go together -> 255, as SIPp says it.
    let ext = dir.path().join("master.xml");
    std::fs::write(
        &ext,
        "<scenario><sendCmd><![CDATA[Call-ID: [call_id]]]></sendCmd></scenario>",
    )
    .unwrap();
    let peers = dir.path().join("peers.cfg");
    std::fs::write(&peers, "m;127.175.0.9:6000\n").unwrap();
    let ext = ext.to_str().unwrap();
    let peers = peers.to_str().unwrap();
    for (args, says) in [
        (
            vec!["-sn", "uac", "-slave_cfg", "x.cfg"],
            "-slave_cfg must be used with -slave or -master",
        ),
        (
            vec!["-sn", "uac", "-master", "m", "-slave", "s"],
            "-slave and -master options are not compatible",
        ),
        (
            vec!["-sf", ext, "-3pcc", "127.175.0.9:6000", "-master", "m"],
            "not compatible",
        ),
        (
            vec!["-sf", ext, "-slave", "m", "-slave_cfg", peers],
            "master scenario but -slave given",
        ),
        (
            vec!["-sf", ext, "-master", "m", "-slave_cfg", peers],
            "you must specify a 'dest' for sendCmd",
        ),
    ] {
        let mut all = args.clone();
        all.push("127.175.0.9:5060");
        let o = finish(spawn(&all), Duration::from_secs(10));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(255), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    // The port is taken -> 254.
    let _hold = std::net::UdpSocket::bind("127.175.0.5:5060").unwrap();
    let o = finish(
        spawn(&[
            "-sn",
            "uac",
            "-i",
            "127.175.0.5",
            "-p",
            "5060",
            "127.175.0.9:5060",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(254));

    // -timeout with no call processed -> 97.
    let o = finish(
        spawn(&[
            "-sn",
            "uas",
            "-i",
            "127.175.0.6",
            "-p",
            "5060",
            "-timeout",
            "1",
        ]),
        Duration::from_secs(40),
    );
    assert_eq!(o.status.code(), Some(97));
}

#[test]
fn bursts_leave_in_gso_sends_and_every_call_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (uas_json, uac_json) = (dir.path().join("uas.json"), dir.path().join("uac.json"));
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        "127.175.0.12",
        "-p",
        "5060",
        "-m",
        "3000",
        "--threads",
        "1",
        "--json",
        uas_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    // 1500 calls/s with 2 ms of wake-up coalescing: several INVITEs (and
    // 180s, 200s, ACKs, BYEs) of one size leave together.
    let uac = spawn(&[
        "-sn",
        "uac",
        "-i",
        "127.175.0.11",
        "-p",
        "5060",
        "127.175.0.12:5060",
        "-m",
        "3000",
        "-r",
        "1500",
        "--threads",
        "1",
        "--batch-wait-us",
        "2000",
        "--connect",
        "--json",
        uac_json.to_str().unwrap(),
        "-timeout",
        "60",
        "-timeout_error",
    ]);
    let uac = finish(uac, Duration::from_secs(90));
    let uas = finish(uas, Duration::from_secs(30));
    assert_eq!(
        uac.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uac.stdout)
    );
    assert_eq!(
        uas.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uas.stdout)
    );
    let (c, s) = (json(&uac_json), json(&uas_json));
    assert_eq!(c["calls_succeeded"], 3000);
    assert_eq!(s["calls_succeeded"], 3000);
    for r in [&c, &s] {
        let sends = r["gso_sends"].as_u64().unwrap();
        let grams = r["gso_datagrams"].as_u64().unwrap();
        assert!(sends > 0 && grams >= 2 * sends, "{r}");
    }
}

/// Runs an sbc-load callee on `callee_ip` and a caller with `caller_args`
/// (plus `-trace_stat -fd 1`); returns the caller's report and the
/// statistics file's lines as column maps.
fn caller_with_stats(
    callee_ip: &str,
    calls: &str,
    caller_args: &[&str],
) -> (
    serde_json::Value,
    Vec<std::collections::HashMap<String, String>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (json_path, stf) = (dir.path().join("uac.json"), dir.path().join("stat.csv"));
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        callee_ip,
        "-p",
        "5060",
        "-m",
        calls,
        "--threads",
        "1",
        "-timeout",
        "10",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec![
        "-sn",
        "uac",
        "--threads",
        "2",
        "--json",
        json_path.to_str().unwrap(),
        "-trace_stat",
        "-stf",
        stf.to_str().unwrap(),
        "-fd",
        "1",
        "-timeout",
        "60",
    ];
    args.extend_from_slice(caller_args);
    let uac = finish(spawn(&args), Duration::from_secs(90));
    let _ = finish(uas, Duration::from_secs(20));
    assert_eq!(
        uac.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uac.stdout)
    );
    let text = std::fs::read_to_string(&stf).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(';')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(';').map(str::to_string))
                .collect()
        })
        .collect();
    (json(&json_path), rows)
}

/// `-users 4`: four calls open at a time, a new one as each ends, until
/// `-m`; the statistics file never shows more than four open.
#[test]
fn users_keep_that_many_calls_open() {
    let start = Instant::now();
    let (r, rows) = caller_with_stats(
        "127.186.0.2",
        "20",
        &[
            "-i",
            "127.186.0.1",
            "127.186.0.2:5060",
            "-m",
            "20",
            "-users",
            "4",
            "-d",
            "500",
        ],
    );
    assert_eq!(
        (r["calls_succeeded"].as_u64(), r["calls_failed"].as_u64()),
        (Some(20), Some(0))
    );
    // Five rounds of half-second calls at the least.
    assert!(
        start.elapsed() >= Duration::from_millis(2300),
        "{:?}",
        start.elapsed()
    );
    for row in &rows {
        let open: u64 = row["CurrentCall"].parse().unwrap();
        assert!(open <= 4, "{row:?}");
        assert_eq!(row["TargetRate"], "4");
    }
}

/// `-rate_increase 5 -fd 1 -rate_max 15` from `-r 5`: 5 calls/s, then
/// 10, and at 15 the caller stops creating calls and ends, as SIPp.
#[test]
fn the_rate_rises_each_period_until_rate_max() {
    let (r, rows) = caller_with_stats(
        "127.185.0.2",
        "1000",
        &[
            "-i",
            "127.185.0.1",
            "127.185.0.2:5060",
            "-m",
            "1000",
            "-r",
            "5",
            "-rate_increase",
            "5",
            "-rate_max",
            "15",
            "-d",
            "0",
        ],
    );
    let created = r["calls_created"].as_u64().unwrap();
    // 5 in the first second, 10 in the second, then the maximum: done.
    assert!((13..=17).contains(&created), "{created} calls");
    assert_eq!(r["calls_failed"], 0);
    let targets: Vec<&str> = rows.iter().map(|row| row["TargetRate"].as_str()).collect();
    assert!(targets.contains(&"10"), "{targets:?}");
}

/// `calls` calls from a caller with `uac_args` to a busy callee, on
/// `net`.1 and `net`.2, both run in `dir`; the caller's output.
fn busy_pair(net: &str, calls: &str, dir: &Path, uac_args: &[&str]) -> Output {
    let (caller, callee) = (format!("{net}.1"), format!("{net}.2"));
    let target = format!("{callee}:5060");
    let busy = scenario("uas_busy.xml");
    let common = ["-m", calls, "--threads", "1", "-timeout", "30"];
    let mut args = vec!["-sf", &busy, "-i", &callee, "-p", "5060"];
    args.extend_from_slice(&common);
    let uas = spawn_in(dir, &args);
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec!["-sn", "uac", "-i", &caller, &target, "-r", "10"];
    args.extend_from_slice(&common);
    args.extend_from_slice(uac_args);
    let uac = finish(spawn_in(dir, &args), Duration::from_secs(40));
    let _ = finish(uas, Duration::from_secs(10));
    uac
}

/// `-trace_msg` and `-trace_err`: every message sent and received in
/// SIPp's message log, and SIPp's warning for a call failing on an
/// unexpected answer (a busy callee) in its errors file.
#[test]
fn trace_files_hold_the_messages_and_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (m, e) = (dir.path().join("m.log"), dir.path().join("e.log"));
    let uac = busy_pair(
        "127.184.0",
        "2",
        dir.path(),
        &[
            "-trace_msg",
            "-message_file",
            m.to_str().unwrap(),
            "-trace_err",
            "-error_file",
            e.to_str().unwrap(),
            "-trace_shortmsg",
            "-shortmessage_file",
            dir.path().join("s.log").to_str().unwrap(),
            "-trace_calldebug",
            "-calldebug_file",
            dir.path().join("c.log").to_str().unwrap(),
        ],
    );
    assert_eq!(uac.status.code(), Some(1));
    // Both calls failed: each one's record, its INVITE and the 486.
    let debug = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
    let records: Vec<&str> = debug
        .split("Call debugging information for call ")
        .skip(1)
        .collect();
    assert_eq!(records.len(), 2, "{debug}");
    for r in records {
        assert!(r.contains(" Starting call "), "{r}");
        assert!(r.contains(" Sending UDP message for call "), "{r}");
        assert!(r.contains("byte incoming message for call-ID"), "{r}");
        assert!(r.contains("SIP/2.0 486 Busy Here"), "{r}");
        assert!(r.contains(" Aborting call "), "{r}");
    }
    // A line per message: time (three tab-separated fields), S or R,
    // Call-ID, CSeq, start line.
    let short = std::fs::read_to_string(dir.path().join("s.log")).unwrap();
    let lines: Vec<Vec<&str>> = short.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 8, "{short}");
    assert!(lines.iter().all(|f| f.len() == 7), "{short}");
    let sent: Vec<&str> = lines.iter().filter(|f| f[3] == "S").map(|f| f[6]).collect();
    assert_eq!(sent.len(), 4, "{short}");
    assert!(
        sent.iter()
            .all(|l| l.starts_with("INVITE sip:") || l.starts_with("ACK sip:"))
    );
    assert!(
        lines
            .iter()
            .any(|f| f[3] == "R" && f[5] == "CSeq:1 INVITE" && f[6] == "SIP/2.0 486 Busy Here")
    );
    let messages = std::fs::read_to_string(&m).unwrap();
    assert_eq!(
        messages.matches("UDP message sent [").count(),
        4,
        "2 INVITEs, 2 ACKs:\n{messages}"
    );
    assert_eq!(
        messages.matches("UDP message received [").count(),
        4,
        "100 and 486, twice"
    );
    assert!(messages.contains("\n\nINVITE sip:") && messages.contains("\n\nSIP/2.0 486 "));
    let errors = std::fs::read_to_string(&e).unwrap();
    assert!(
        errors.starts_with("The following events occurred:\n"),
        "{errors}"
    );
    assert_eq!(
        errors
            .matches("Aborting call on unexpected message for Call-Id '")
            .count(),
        2,
        "{errors}"
    );
    assert!(errors.contains("received 'SIP/2.0 486 "), "{errors}");

    // Again, the message log appended to, and each file closed past its
    // first entry (-max_log_size 1).
    let uac = busy_pair(
        "127.184.0",
        "2",
        dir.path(),
        &[
            "-trace_msg",
            "-message_file",
            m.to_str().unwrap(),
            "-message_overwrite",
            "false",
            "-trace_err",
            "-error_file",
            e.to_str().unwrap(),
            "-max_log_size",
            "1",
        ],
    );
    assert_eq!(uac.status.code(), Some(1));
    let messages = std::fs::read_to_string(&m).unwrap();
    // The first run's 8 messages kept, then one of this run's: past 1
    // byte the message log closes too.
    assert_eq!(
        messages.matches("UDP message sent [").count()
            + messages.matches("UDP message received [").count(),
        9,
        "{messages}"
    );
    let errors = std::fs::read_to_string(&e).unwrap();
    assert!(
        errors.starts_with("The following events occurred:\n"),
        "{errors}"
    );
    assert_eq!(errors.matches("Aborting call").count(), 1, "{errors}");
}

/// `-trace_screen` and `-trace_rtt`: the final screen (the report) and
/// one line per response time measured, in files named as SIPp names
/// them (scenario, pid) in the working directory.
#[test]
fn screen_and_response_time_files_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        "127.183.0.2",
        "-p",
        "5060",
        "-m",
        "3",
        "--threads",
        "1",
        "-timeout",
        "20",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let uac = Command::new(env!("CARGO_BIN_EXE_sbc-load"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .args([
            "-sn",
            "uac",
            "-i",
            "127.183.0.1",
            "127.183.0.2:5060",
            "-m",
            "3",
            "-r",
            "10",
            "--threads",
            "1",
            "-timeout",
            "20",
            "-trace_screen",
            "-trace_rtt",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let _ = finish(uas, Duration::from_secs(10));
    assert_eq!(uac.code(), Some(0));
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let find = |suffix: &str| {
        let name = files
            .iter()
            .find(|f| f.starts_with("uac_") && f.ends_with(suffix))
            .unwrap_or_else(|| panic!("no uac_PID{suffix} in {files:?}"));
        std::fs::read_to_string(dir.path().join(name)).unwrap()
    };
    let screen = find("_screen.log");
    assert!(
        screen.contains("Successful call") && screen.contains("3 succeeded"),
        "{screen}"
    );
    let rtt = find("_rtt.csv");
    let lines: Vec<&str> = rtt.lines().collect();
    assert_eq!(lines[0], "Date_ms;response_time_ms;rtd_no");
    // The built-in uac measures one response time a call (rtd 1).
    assert_eq!(lines.len(), 4, "{rtt}");
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(';').collect();
        assert_eq!(f.len(), 3, "{l}");
        assert!(f[1].parse::<f64>().unwrap() >= 0.0, "{l}");
        assert_eq!(f[2], "1");
    }
}

/// `-bg` (the parent prints the child's PID and exits 99; the child runs
/// the load), `-trace_logs` and `-trace_counts` files named as SIPp names
/// them, `-key` keywords, and two `-inf` files, one indexed for
/// `<lookup>`.
#[test]
fn background_logs_counts_keys_and_indexed_injection_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("users.csv"), "SEQUENTIAL\nalice;A\nbob;B\n").unwrap();
    std::fs::write(
        d.join("routes.csv"),
        "RANDOM\nbob;10.2.2.2\nalice;10.1.1.1\n",
    )
    .unwrap();
    std::fs::write(
        d.join("caller.xml"),
        r#"<scenario name="keys">
        <nop><action>
          <lookup assign_to="r" file="routes.csv" key="[field0]"/>
          <log message="[call_number] [field0] [$r]"/>
        </action></nop>
        <send retrans="500"><![CDATA[
          MESSAGE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
          Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
          From: <sip:load@[local_ip]>;tag=[call_number]
          To: <sip:[field0]@[remote_ip]>
          Call-ID: [call_id]
          CSeq: [cseq] MESSAGE
          X-Host: [host]
          X-Route: [field1 file="routes.csv" line="[$r]"]
          Content-Length: 0
        ]]></send>
        <recv response="200"/>
        </scenario>"#,
    )
    .unwrap();
    std::fs::write(
        d.join("callee.xml"),
        r#"<scenario name="answer">
        <recv request="MESSAGE"/>
        <send><![CDATA[
          SIP/2.0 200 OK
          [last_Via:]
          [last_From:]
          [last_To:];tag=[call_number]
          [last_Call-ID:]
          [last_CSeq:]
          Content-Length: 0
        ]]></send>
        </scenario>"#,
    )
    .unwrap();
    let msgs = d.join("callee_messages.log");
    let uas = spawn(&[
        "-sf",
        d.join("callee.xml").to_str().unwrap(),
        "-i",
        "127.182.0.2",
        "-p",
        "5060",
        "-m",
        "4",
        "--threads",
        "1",
        "-timeout",
        "30",
        "-trace_msg",
        "-message_file",
        msgs.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let parent = Command::new(env!("CARGO_BIN_EXE_sbc-load"))
        .current_dir(d)
        .stdin(Stdio::null())
        .args([
            "-sf",
            "caller.xml",
            "-i",
            "127.182.0.1",
            "127.182.0.2:5060",
            "-m",
            "4",
            "-r",
            "20",
            "--threads",
            "1",
            "-timeout",
            "30",
            "-inf",
            "users.csv",
            "-inf",
            "routes.csv",
            "-infindex",
            "routes.csv",
            "0",
            "-key",
            "host",
            "sbc.example",
            "-trace_logs",
            "-trace_counts",
            "-fd",
            "1",
            "-bg",
        ])
        .output()
        .unwrap();
    assert_eq!(parent.status.code(), Some(99));
    let out = String::from_utf8_lossy(&parent.stdout);
    let pid: u32 = out
        .trim()
        .strip_prefix("Background mode - PID=[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // The child runs the load and ends on its own.
    let deadline = Instant::now() + Duration::from_secs(40);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        // Reaped by init once it exits; a zombie has no cmdline.
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let uas = finish(uas, Duration::from_secs(20));
    assert_eq!(
        uas.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uas.stdout)
    );
    let logs = std::fs::read_to_string(d.join(format!("caller_{pid}_logs.log"))).unwrap();
    assert_eq!(
        logs,
        "1 alice 1.000000\n2 bob 0.000000\n3 alice 1.000000\n4 bob 0.000000\n"
    );
    let received = std::fs::read_to_string(&msgs).unwrap();
    assert_eq!(
        received.matches("X-Host: sbc.example\r\n").count(),
        4,
        "{received}"
    );
    assert_eq!(
        received.matches("X-Route: 10.1.1.1\r\n").count(),
        2,
        "{received}"
    );
    assert_eq!(
        received.matches("X-Route: 10.2.2.2\r\n").count(),
        2,
        "{received}"
    );
    let counts = std::fs::read_to_string(d.join(format!("caller_{pid}_counts.csv"))).unwrap();
    let mut lines = counts.lines();
    assert_eq!(
        lines.next(),
        Some(
            "CurrentTime;ElapsedTime;1_MESSAGE_Sent;1_MESSAGE_Retrans;1_MESSAGE_Timeout;\
             2_200_Recv;2_200_Retrans;2_200_Timeout;2_200_Unexp;"
        )
    );
    let last: Vec<&str> = lines.last().unwrap().split(';').collect();
    assert_eq!(last[2..7], ["4", "0", "0", "4", "0"], "{counts}");
}

/// `-tls_ca`, `-tls_crl` and `-tls_version` on the real binaries: with
/// the test CA both sides verify each other (the callee requires the
/// caller's certificate), the caller checks the CA's revocation list and
/// both speak TLS 1.2 only. Every call succeeds against the callee's
/// good certificate; against its revoked one none does.
#[test]
fn tls_peers_are_verified_against_the_ca_and_its_revocation_list() {
    let certs = |n: &str| {
        format!(
            "{}/../config/examples/certs/{n}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    let (ca, crl) = (certs("ca.crt"), certs("ca.crl"));
    for (net, callee_cert, want_ok) in [(217u8, "localhost", true), (218, "revoked", false)] {
        let (uas_ip, uac_ip) = (format!("127.{net}.0.2"), format!("127.{net}.0.1"));
        let (cert, key) = (
            certs(&format!("{callee_cert}.crt")),
            certs(&format!("{callee_cert}.key")),
        );
        let uas = spawn(&[
            "-sn",
            "uas",
            "-t",
            "l1",
            "-i",
            &uas_ip,
            "-p",
            "5061",
            "-tls_cert",
            &cert,
            "-tls_key",
            &key,
            "-tls_ca",
            &ca,
            "-tls_version",
            "1.2",
            "-m",
            "5",
            "--threads",
            "1",
            "-timeout",
            "30",
        ]);
        std::thread::sleep(Duration::from_millis(300));
        let (client_cert, client_key) = (certs("sbc-client.crt"), certs("sbc-client.key"));
        let remote = format!("{uas_ip}:5061");
        let uac = spawn(&[
            "-sn",
            "uac",
            "-t",
            "l1",
            "-i",
            &uac_ip,
            &remote,
            "-tls_cert",
            &client_cert,
            "-tls_key",
            &client_key,
            "-tls_ca",
            &ca,
            "-tls_crl",
            &crl,
            "-tls_version",
            "1.2",
            "-m",
            "5",
            "-r",
            "10",
            "--threads",
            "1",
            "-timeout",
            "10",
            "-recv_timeout",
            "3000",
        ]);
        let uac = finish(uac, Duration::from_secs(40));
        // The callee of the refused calls waits for them until stopped.
        let uas = finish(uas, Duration::from_secs(if want_ok { 40 } else { 1 }));
        let out = String::from_utf8_lossy(&uac.stdout).into_owned()
            + &String::from_utf8_lossy(&uac.stderr);
        if want_ok {
            assert_eq!(uac.status.code(), Some(0), "caller: {out}");
            assert_eq!(uas.status.code(), Some(0), "callee: {uas:?}");
            assert!(out.contains("5 succeeded"), "{out}");
        } else {
            assert_ne!(uac.status.code(), Some(0), "caller: {out}");
            assert!(out.contains("0 succeeded"), "{out}");
        }
    }
}

/// `-rate_interval` paces `-rate_increase` (here every 500 ms instead of
/// every `-fd` second); `-stat_delimiter` separates the statistics file's
/// columns; SIPp's tuning options (`-sleep`, `-buff_size`, `-skip_rlimit`,
/// `-bind_local`, and its event loop's `-timer_resol`, `-f`) are taken, the
/// loop's said in the report to change nothing.
#[test]
fn rate_interval_delimiter_and_sipps_tuning_options() {
    let dir = tempfile::tempdir().unwrap();
    let (json_path, stf) = (dir.path().join("uac.json"), dir.path().join("stat.csv"));
    let uas = spawn(&[
        "-sn",
        "uas",
        "-i",
        "127.220.0.2",
        "-p",
        "5060",
        "-m",
        "100",
        "--threads",
        "1",
        "-timeout",
        "4",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let uac = finish(
        spawn(&[
            "-sn",
            "uac",
            "-i",
            "127.220.0.1",
            "127.220.0.2:5060",
            "--threads",
            "1",
            "--json",
            json_path.to_str().unwrap(),
            "-trace_stat",
            "-stf",
            stf.to_str().unwrap(),
            "-fd",
            "1",
            "-stat_delimiter",
            ",",
            "-m",
            "100",
            "-r",
            "5",
            "-rate_increase",
            "5",
            "-rate_interval",
            "500ms",
            "-rate_max",
            "15",
            "-d",
            "0",
            "-sleep",
            "200ms",
            "-buff_size",
            "262144",
            "-skip_rlimit",
            "-bind_local",
            "-timer_resol",
            "1",
            "-f",
            "1",
            "-send_timeout",
            "500",
            "-sendbuffer_warn",
            "true",
            "-timeout",
            "60",
        ]),
        Duration::from_secs(60),
    );
    let _ = finish(uas, Duration::from_secs(20));
    let out = String::from_utf8_lossy(&uac.stdout);
    assert_eq!(uac.status.code(), Some(0), "{out}");
    let r = json(&json_path);
    // 5/s for 0.5 s, 10/s for 0.5 s, then the maximum: done (with -fd's
    // 1 s steps it would be about 15).
    let created = r["calls_created"].as_u64().unwrap();
    assert!((5..=10).contains(&created), "{created} calls");
    let stat = std::fs::read_to_string(&stf).unwrap();
    let header = stat.lines().next().unwrap();
    assert!(
        header.contains("TargetRate,") && !header.contains(';'),
        "{header}"
    );
    for option in [
        "-timer_resol",
        "-f ",
        "send timeouts (-send_timeout",
        "-sendbuffer_warn",
    ] {
        assert!(out.contains(&format!("Note: {option}")), "{option}: {out}");
    }
}

/// `-trace_error_codes`: the status of each unexpected response (a busy
/// callee's 486 where the caller waits for a 200) in SIPp's
/// SCENARIO_PID_error_codes.csv, a line every -fd and one at the end.
#[test]
fn unexpected_response_codes_are_traced() {
    let dir = tempfile::tempdir().unwrap();
    let uac = busy_pair("127.220.1", "3", dir.path(), &["-trace_error_codes"]);
    assert_eq!(uac.status.code(), Some(1), "the calls fail");
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("_error_codes.csv")
        })
        .expect("the error codes file");
    let text = std::fs::read_to_string(file.path()).unwrap();
    let codes: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split(';').nth(2).unwrap_or("").split(','))
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(codes, ["486", "486", "486"], "{text}");
}

/// A callee on 127.221.0.`host` for `calls` calls, its remote control on
/// `control`.
fn steered_callee(host: u8, calls: &str, control: &str) -> Child {
    let ip = format!("127.221.0.{host}");
    spawn(&[
        "-sn",
        "uas",
        "-i",
        &ip,
        "-p",
        "5060",
        "-m",
        calls,
        "--threads",
        "1",
        "-timeout",
        "60",
        "-cp",
        control,
        "-ci",
        &ip,
    ])
}

/// A caller on 127.221.0.`host` calling `to`: `calls` calls at `rate` a
/// second, one thread, its remote control on `control`, run in `dir`
/// (its JSON report there as `uac.json`); then `extra`.
fn steered_caller(
    dir: &Path,
    host: u8,
    to: &str,
    (calls, rate): (&str, &str),
    control: &str,
    extra: &[&str],
) -> Child {
    let mut extra = extra.to_vec();
    extra.push("-nostdin");
    steered_caller_command(dir, host, to, (calls, rate), control, &extra)
        .spawn()
        .unwrap()
}

/// [`steered_caller`]'s command, reading keys unless `extra` says
/// `-nostdin`.
fn steered_caller_command(
    dir: &Path,
    host: u8,
    to: &str,
    (calls, rate): (&str, &str),
    control: &str,
    extra: &[&str],
) -> Command {
    let ip = format!("127.221.0.{host}");
    let report = dir.join("uac.json");
    let mut args = vec![
        "-sn",
        "uac",
        "-i",
        &ip,
        to,
        "-r",
        rate,
        "-m",
        calls,
        "--threads",
        "1",
        "-timeout",
        "60",
        "-cp",
        control,
        "-ci",
        &ip,
    ];
    args.extend_from_slice(extra);
    args.extend(["--json", report.to_str().unwrap()]);
    command_in(dir, &args)
}

/// SIPp's remote control (`-cp`, `-ci`): "cset rate" raises a caller's
/// rate while it runs, a bad command is warned about and changes nothing,
/// and "dump tasks" lists the open calls.
#[test]
fn the_remote_control_sets_the_rate_while_the_run_goes() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("uac.json");
    let uas = steered_callee(2, "30", "29702");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    // 30 calls at 1 a second: half a minute unless the rate is raised.
    let uac = steered_caller(
        dir.path(),
        1,
        "127.221.0.2:5060",
        ("30", "1"),
        "29701",
        &["--threads", "2"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let ctl = std::net::UdpSocket::bind("127.221.0.9:0").unwrap();
    for order in [&b"cset rate fast"[..], b"cdump tasks", b"cset rate 30"] {
        ctl.send_to(order, "127.221.0.1:29701").unwrap();
    }
    let uac = finish(uac, Duration::from_secs(40));
    let took = started.elapsed();
    let uas = finish(uas, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&uac.stderr);
    assert_eq!(uac.status.code(), Some(0), "{err}");
    assert_eq!(uas.status.code(), Some(0));
    assert_eq!(json(&report)["calls_succeeded"], 30);
    assert!(
        took < Duration::from_secs(15),
        "{took:?}: the rate stayed at 1"
    );
    assert!(
        err.contains("warning: invalid rate value: \"fast\""),
        "{err}"
    );
    assert!(
        err.contains("thread 0: ") && err.contains("thread 1: "),
        "{err}"
    );
}

/// Keys on the standard input, as SIPp reads them: '*' raises the rate by
/// ten times -rate_scale, 'q' stops new calls and ends the run once the
/// open ones have, with every call placed a success.
#[test]
fn keys_raise_the_rate_and_quit_gracefully() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("uac.json");
    let uas = steered_callee(4, "1000", "29704");
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = steered_caller_command(
        dir.path(),
        3,
        "127.221.0.4:5060",
        ("1000", "1"),
        "29703",
        &["-rate_scale", "2", "-d", "500"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut keys = uac.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // 1 + 10 x 2 = 21 calls a second for 3 s, then no more.
    keys.write_all(b"*").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    keys.write_all(b"q").unwrap();
    let quit = Instant::now();
    let uac = finish(uac, Duration::from_secs(30));
    let ended = quit.elapsed();
    drop(keys);
    let _ = finish(uas, Duration::from_secs(2));
    let err = String::from_utf8_lossy(&uac.stderr);
    assert_eq!(uac.status.code(), Some(0), "{err}");
    let r = json(&report);
    let done = r["calls_succeeded"].as_u64().unwrap();
    assert!((20..200).contains(&done), "{done} calls");
    assert_eq!(r["calls_failed"], 0);
    assert!(ended < Duration::from_secs(10), "{ended:?}");
}

/// `-rsa`: the caller names one host in its messages and sends them to
/// another (the callee here): every call completes there.
#[test]
fn rsa_sends_the_calls_to_the_remote_sending_address() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("uac.json");
    let uas = steered_callee(6, "5", "29706");
    std::thread::sleep(Duration::from_millis(300));
    // Nothing listens at .77: only -rsa reaches the callee.
    let uac = steered_caller(
        dir.path(),
        5,
        "127.221.0.77:5060",
        ("5", "10"),
        "29705",
        &["-rsa", "127.221.0.6:5060"],
    );
    let uac = finish(uac, Duration::from_secs(40));
    let uas = finish(uas, Duration::from_secs(20));
    assert_eq!(
        uac.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uac.stderr)
    );
    assert_eq!(uas.status.code(), Some(0));
    assert_eq!(json(&report)["calls_succeeded"], 5);
}

/// SIPp's watchdog: a load generator held up past the major threshold
/// (stopped here with SIGSTOP for 1.5 s) warns of the trip, and past the
/// trips allowed (none here) ends the run as SIPp does (status 255).
#[test]
fn the_watchdog_ends_a_run_held_up_too_often() {
    let dir = tempfile::tempdir().unwrap();
    let uas = steered_callee(8, "100", "29708");
    std::thread::sleep(Duration::from_millis(300));
    let uac = steered_caller(
        dir.path(),
        7,
        "127.221.0.8:5060",
        ("100", "2"),
        "29707",
        &[
            "-trace_err",
            "-error_file",
            "errors.log",
            "-watchdog_interval",
            "100",
            "-watchdog_major_threshold",
            "1000",
            "-watchdog_major_maxtriggers",
            "0",
        ],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let pid = uac.id().to_string();
    let signal = |s: &str| {
        assert!(
            Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_millis(1500));
    signal("-CONT");
    let started = Instant::now();
    let uac = finish(uac, Duration::from_secs(30));
    let _ = finish(uas, Duration::from_secs(1));
    let err = String::from_utf8_lossy(&uac.stderr);
    assert_eq!(uac.status.code(), Some(255), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains("overload error: the watchdog timer has tripped the major threshold of 1000ms too many times (1 out of 0 allowed)"),
        "{err}"
    );
    let log = std::fs::read_to_string(dir.path().join("errors.log")).unwrap();
    assert!(
        log.contains("the major watchdog timer 1000ms has been tripped"),
        "{log}"
    );
}

/// `-oocsn ooc_default`: a request of no call reaching the caller (an
/// OPTIONS probe here) is answered by the out-of-call scenario; a callee
/// refuses one (as SIPp in server mode).
#[test]
fn a_caller_answers_requests_of_no_call_with_its_out_of_call_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("uac.json");
    let uas = steered_callee(10, "3", "29710");
    std::thread::sleep(Duration::from_millis(300));
    let uac = steered_caller(
        dir.path(),
        9,
        "127.221.0.10:5060",
        ("3", "1"),
        "29709",
        &["-p", "5070", "-d", "1000", "-oocsn", "ooc_default"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let probe = std::net::UdpSocket::bind("127.221.0.11:5060").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    probe
        .send_to(
            b"OPTIONS sip:sipp@127.221.0.9:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.221.0.11:5060;branch=z9hG4bK-probe\r\nFrom: <sip:probe@127.221.0.11>;tag=p\r\nTo: <sip:sipp@127.221.0.9>\r\nCall-ID: keepalive-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            "127.221.0.9:5070",
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = probe.recv(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Call-ID: keepalive-1\r\n"), "{answer}");
    let uac = finish(uac, Duration::from_secs(40));
    let _ = finish(uas, Duration::from_secs(20));
    assert_eq!(
        uac.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&uac.stderr)
    );
    let r = json(&report);
    assert_eq!(r["calls_succeeded"], 3);
    assert_eq!(r["out_of_call_calls"], 1);
    assert_eq!(r["out_of_call_succeeded"], 1);
    // A callee refuses an out-of-call scenario.
    refuses(
        &[
            "-sn",
            "uas",
            "-i",
            "127.221.0.12",
            "-oocsn",
            "ooc_default",
            "-nostdin",
        ],
        1,
        "out-of-call scenarios",
    );
}

/// sbc-load given `args` ends at once with status `code`, its standard
/// error saying `says`.
fn refuses(args: &[&str], code: i32, says: &str) {
    let o = finish(spawn(args), Duration::from_secs(10));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.contains(says), "{err}");
}

/// `-t ui`: a caller's calls leave from the address their `-inf` line
/// names (field `-ip_field`), on its port; a callee listens on every
/// address of its file and answers from the one it was reached on.
#[test]
fn per_address_sockets_send_from_and_answer_from_the_inf_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ips = dir.path().join("ips.csv");
    std::fs::write(&ips, "SEQUENTIAL\nalice;127.221.3.1;\nbob;127.221.3.2;\n").unwrap();
    // The far end is this test: it takes the INVITEs.
    let far = std::net::UdpSocket::bind("127.221.3.9:5060").unwrap();
    far.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let uac = spawn(&[
        "-sn",
        "uac",
        "-t",
        "ui",
        "-inf",
        ips.to_str().unwrap(),
        "-ip_field",
        "1",
        "-i",
        "127.221.3.1",
        "-p",
        "5070",
        "127.221.3.9:5060",
        "-m",
        "4",
        "-r",
        "20",
        "--threads",
        "1",
        "-timeout",
        "20",
        "-nostdin",
        "-cp",
        "29711",
    ]);
    let mut from = Vec::new();
    let mut buf = [0u8; 4096];
    while from.len() < 4 {
        let (n, src) = far.recv_from(&mut buf).unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        // First sendings only (retransmissions repeat a Call-ID).
        let id = m
            .lines()
            .find(|l| l.starts_with("Call-ID:"))
            .unwrap()
            .to_owned();
        if m.starts_with("INVITE ") && !from.iter().any(|(i, _)| *i == id) {
            from.push((id, src));
        }
    }
    let mut c = uac;
    let _ = c.kill();
    let _ = c.wait();
    let sources: Vec<String> = from.iter().map(|(_, s)| s.to_string()).collect();
    assert_eq!(
        sources,
        [
            "127.221.3.1:5070",
            "127.221.3.2:5070",
            "127.221.3.1:5070",
            "127.221.3.2:5070"
        ],
        "each call from its line's address, in turn"
    );

    // A callee on both addresses of its file answers from the one reached.
    let uas = spawn(&[
        "-sn",
        "uas",
        "-t",
        "ui",
        "-inf",
        ips.to_str().unwrap(),
        "-ip_field",
        "1",
        "-i",
        "127.221.3.1",
        "-p",
        "5062",
        "-m",
        "1",
        "--threads",
        "1",
        "-timeout",
        "20",
        "-nostdin",
        "-cp",
        "29712",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let caller = std::net::UdpSocket::bind("127.221.3.8:5060").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    caller
        .send_to(
            b"INVITE sip:service@127.221.3.2:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.221.3.8:5060;branch=z9hG4bK-ui1\r\nFrom: <sip:a@127.221.3.8>;tag=a1\r\nTo: <sip:service@127.221.3.2:5062>\r\nCall-ID: ui-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.221.3.8:5060>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            "127.221.3.2:5062",
        )
        .unwrap();
    let (n, src) = caller.recv_from(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 180 Ringing"), "{answer}");
    assert_eq!(src.to_string(), "127.221.3.2:5062");
    let mut u = uas;
    let _ = u.kill();
    let _ = u.wait();
    // Without an injection file there is no address to take.
    refuses(
        &[
            "-sn",
            "uac",
            "-t",
            "ui",
            "-i",
            "127.221.3.1",
            "127.221.3.9:5060",
            "-nostdin",
        ],
        255,
        "-t ui: give the source addresses",
    );
}

/// `-max_reconnect`, `-reconnect_sleep`: a caller over TCP whose far end
/// (this test) closes each connection it gets reconnects twice, a short
/// wait before each, and ends the run (255) at the third loss, as SIPp
/// does with no reconnection left.
#[test]
fn reconnections_run_out_and_end_the_run() {
    use std::io::Read as _;
    let far = std::net::TcpListener::bind("127.221.4.2:5060").unwrap();
    let uac = spawn(&[
        "-sn",
        "uac",
        "-t",
        "t1",
        "-i",
        "127.221.4.1",
        "127.221.4.2:5060",
        "-m",
        "10",
        "-r",
        "5",
        "--threads",
        "1",
        "-timeout",
        "30",
        "-nostdin",
        "-cp",
        "29713",
        "-max_reconnect",
        "2",
        "-reconnect_sleep",
        "200",
    ]);
    // Each connection: take what comes, then close it.
    let accepting = std::thread::spawn(move || {
        far.set_nonblocking(true).unwrap();
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match far.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf);
                    n += 1;
                }
                Err(_) if n >= 3 => {
                    // A fourth would come within the wait; none must.
                    std::thread::sleep(Duration::from_millis(600));
                    if far.accept().is_ok() {
                        n += 1;
                    }
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        n
    });
    let uac = finish(uac, Duration::from_secs(30));
    assert_eq!(accepting.join().unwrap(), 3);
    let err = String::from_utf8_lossy(&uac.stderr);
    assert_eq!(uac.status.code(), Some(255), "{err}");
    assert!(err.contains("max number of reconnections reached"), "{err}");
}

/// SIPp's RTP check over SRTP, between two real sbc-load processes: the
/// caller's pattern comes back through the callee's echo (keys from the
/// SDP's `a=crypto` lines) and every call's check passes (status 0);
/// against a callee that neither takes the keys nor echoes, nothing comes
/// back and the run exits 253, SIPp's `EXIT_RTPCHECK_FAILED`.
#[test]
fn an_srtp_rtp_check_passes_through_the_echo_and_fails_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (uac_json, uas_json) = (dir.path().join("uac.json"), dir.path().join("uas.json"));
    let callee = |file: &str, cp: &str| {
        spawn_in(
            dir.path(),
            &[
                "-sf",
                &scenario(file),
                "-i",
                "127.221.6.2",
                "-p",
                "5060",
                "-mp",
                "42000",
                "-m",
                "2",
                "-cp",
                cp,
                "--threads",
                "1",
                "--quiet",
                "--json",
                uas_json.to_str().unwrap(),
            ],
        )
    };
    let caller = |cp: &str| {
        spawn_in(
            dir.path(),
            &[
                "-sf",
                &scenario("uac_srtp_check.xml"),
                "-i",
                "127.221.6.1",
                "-p",
                "5060",
                "127.221.6.2:5060",
                "-mp",
                "41000",
                "-m",
                "2",
                "-r",
                "2",
                "-cp",
                cp,
                "-timeout",
                "30",
                "--threads",
                "1",
                "--quiet",
                "--json",
                uac_json.to_str().unwrap(),
            ],
        )
    };
    let uas = callee("uas_srtp_echo.xml", "29714");
    std::thread::sleep(Duration::from_millis(300));
    let uac = finish(caller("29715"), Duration::from_secs(40));
    let uas = finish(uas, Duration::from_secs(40));
    let (c, s) = (json(&uac_json), json(&uas_json));
    assert_eq!(uac.status.code(), Some(0), "{c:#}");
    assert_eq!(uas.status.code(), Some(0), "{s:#}");
    assert_eq!(c["calls_succeeded"], 2);
    assert_eq!(
        (
            c["rtp_checks_passed"].as_u64(),
            c["rtp_checks_failed"].as_u64()
        ),
        (Some(2), Some(0))
    );
    // 3 s of 20 ms packets a call; nearly all come back right.
    let sent = c["rtp_packets_sent"].as_u64().unwrap();
    let ok = c["rtp_check_packets_ok"].as_u64().unwrap();
    assert!(
        sent >= 280 && ok + 20 >= sent,
        "{sent} sent, {ok} back: {c:#}"
    );
    // Every packet that came back right was echoed; a packet echoed as
    // the call ends may come back after the caller stopped reading.
    let echoed = s["rtp_echoed_packets"].as_u64().unwrap();
    assert!(
        ok <= echoed && echoed <= sent,
        "{ok} back, {echoed} echoed, {sent} sent: {s:#}"
    );
    assert_eq!(
        c["srtp_refused"].as_u64().unwrap() + s["srtp_refused"].as_u64().unwrap(),
        0
    );

    let uas = callee("uas_answer.xml", "29716");
    std::thread::sleep(Duration::from_millis(300));
    let uac = finish(caller("29717"), Duration::from_secs(40));
    let _ = finish(uas, Duration::from_secs(40));
    let c = json(&uac_json);
    assert_eq!(uac.status.code(), Some(253), "{c:#}");
    assert_eq!(c["calls_succeeded"], 2, "the calls themselves succeed");
    assert_eq!(c["rtp_checks_failed"], 2, "{c:#}");
    assert_eq!(c["rtp_check_packets_ok"], 0);
    refuses(
        &["-sn", "uac", "-audiotolerance", "1.5", "127.221.6.9"],
        255,
        "-audiotolerance 1.5: must be from 0.0 to 1.0",
    );
}
