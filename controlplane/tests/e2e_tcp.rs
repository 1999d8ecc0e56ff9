//! End-to-end: SIP over TCP through the real `sbc` binary. Stock `sipp`
//! over TCP (`-t t1`: one connection; `-t tn`: one per call) calls a UDP
//! carrier, a UDP caller reaches a carrier over TCP, and hand-made
//! connections check keepalives, framing errors and the per-source limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

fn config(net: Net, shards: usize, tcp_carrier: bool) -> String {
    let text = example_config(net, shards);
    assert!(text.contains(&format!("\"tcp:{}\"", net.sbc())), "{text}");
    if !tcp_carrier {
        return text;
    }
    carrier_a_over_tcp(net, &text)
}

/// sipp UAC on the pbx calling a carrier number `calls` times over `t`.
fn calls(net: Net, transport: &str, calls: usize) -> SippResult {
    let mut args = uac_args(
        net,
        &net.pbx(),
        "uac_basic.xml",
        "+390612345678",
        calls,
        4,
        40,
    );
    args.extend([
        "-t".into(),
        transport.into(),
        "-d".into(),
        "500".into(),
        "-recv_timeout".into(),
        "20000".into(),
    ]);
    if transport == "tn" {
        // sipp refuses tn mode while its socket cap exceeds the fd limit.
        args.extend(["-max_socket".into(), "64".into()]);
    }
    Sipp::spawn("uac", &args).wait(LIMIT)
}

fn assert_all_ok(r: &SippResult, n: usize, sbc: &Sbc) {
    assert_eq!(
        (r.code, r.successful, r.failed),
        (Some(0), n as u64, 0),
        "{}\n{}",
        r.output,
        sbc.log()
    );
}

/// `n` calls from the pbx over sipp transport `transport` (t1, tn) to a
/// UDP carrier-a, through an sbc with two shards; all must succeed.
fn pbx_calls_over(net: Net, transport: &str, n: usize) -> Sbc {
    let sbc = Sbc::start(net, &config(net, 2, false));
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_answer.xml", n, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = calls(net, transport, n);
    assert_all_ok(&uac, n, &sbc);
    assert_all_ok(&uas.wait(LIMIT), n, &sbc);
    sbc
}

#[test]
fn a_pbx_over_tcp_calls_a_udp_carrier_on_one_connection() {
    // 24 calls: each lands on a shard by a keyed hash of its Call-ID, so
    // all on one shard has a chance of 2^-23 (with 8 it was 1 in 128, a
    // flaky test).
    let sbc = pbx_calls_over(Net(131), "t1", 24);
    assert_eq!(sbc.metric_sum("sbc_connections_accepted_total"), 1.0);
    assert_eq!(
        sbc.metric(r#"sbc_calls_answered_total{trunk="carrier-a",direction="outbound"}"#),
        24.0
    );
    // Calls spread over both shards although one connection (accepted by
    // one shard) carried them all: the other shard sent through it.
    for s in 0..2 {
        assert!(
            sbc.metric(&format!(r#"sbc_shard_calls_total{{shard="{s}"}}"#)) > 0.0,
            "shard {s} had no call:\n{}",
            sbc.log()
        );
    }
    assert_eq!(
        sbc.metric(r#"sbc_connections_closed_total{reason="framing"}"#),
        0.0
    );
}

#[test]
fn a_pbx_opening_a_connection_per_call_is_served() {
    let sbc = pbx_calls_over(Net(132), "tn", 6);
    assert!(sbc.metric_sum("sbc_connections_accepted_total") >= 6.0);
}

#[test]
fn a_udp_pbx_reaches_a_carrier_over_tcp_reusing_connections() {
    let net = Net(133);
    let shards = 2;
    let sbc = Sbc::start(net, &config(net, shards, true));
    let mut uas = uas_args(net, &net.carrier_a(), "uas_answer.xml", 8, 0);
    uas.extend(["-t".into(), "t1".into()]);
    let uas = Sipp::spawn("uas", &uas);
    std::thread::sleep(Duration::from_millis(300));
    let uac = calls(net, "u1", 8);
    assert_all_ok(&uac, 8, &sbc);
    assert_all_ok(&uas.wait(LIMIT), 8, &sbc);
    // At most one connection per shard to the carrier, reused by every call.
    let opened = sbc.metric_sum("sbc_connections_opened_total");
    assert!(
        (1.0..=shards as f64).contains(&opened),
        "{opened} connections opened"
    );
    assert_eq!(
        sbc.metric(r#"sbc_calls_answered_total{trunk="carrier-a",direction="outbound"}"#),
        8.0
    );
}

/// The connection to a carrier over TCP closes (the carrier's sipp ends
/// and closes it): the next call opens a new one and completes.
#[test]
fn a_trunk_connection_that_closes_is_opened_again_for_the_next_call() {
    let net = Net(154);
    let sbc = Sbc::start(net, &config(net, 1, true));
    for (round, k) in [(1.0, 0), (2.0, 10)] {
        let mut uas = uas_args(net, &net.carrier_a(), "uas_answer.xml", 1, k);
        uas.extend(["-t".into(), "t1".into()]);
        let uas = Sipp::spawn("carrier-a", &uas);
        std::thread::sleep(Duration::from_millis(300));
        let mut args = uac_args(
            net,
            &net.pbx(),
            "uac_basic.xml",
            "+390612345678",
            1,
            1,
            k + 40,
        );
        args.extend(["-recv_timeout".into(), "20000".into()]);
        let uac = Sipp::spawn("uac", &args).wait(LIMIT);
        assert_all_ok(&uac, 1, &sbc);
        assert_all_ok(&uas.wait(LIMIT), 1, &sbc);
        assert_eq!(sbc.metric_sum("sbc_connections_opened_total"), round);
        // The carrier's sipp has ended: its connection closes.
        assert_eq!(
            sbc.wait_metric(r#"sbc_connections_open{shard="0",transport="tcp"}"#, 0.0),
            0.0,
            "{}",
            sbc.log()
        );
    }
    assert_eq!(
        sbc.metric(r#"sbc_calls_answered_total{trunk="carrier-a",direction="outbound"}"#),
        2.0
    );
}

/// A carrier over TCP that refuses the connection: the INVITE never left
/// (RFC 3261 §8.1.3.1: a transport error is a 503), so each call fails
/// over to the UDP carrier at once, not at the no-response timer (30 s
/// here, past the caller's patience).
#[test]
fn a_refused_connection_fails_the_call_over_at_once() {
    let net = Net(149);
    // Nothing listens on carrier-a's TCP port: its connects are refused.
    let (sbc, took) = three_calls_fail_over_to_carrier_b(net, 10_000);
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert_eq!(sbc.metric("sbc_failovers_total"), 3.0, "{}", sbc.log());
    assert!(sbc.metric(r#"sbc_connections_closed_total{reason="connect_failed"}"#) >= 1.0);
}

/// A carrier over TCP that never answers the connect (its accept queue
/// is full, so the kernel drops the SBC's SYNs): the INVITE waits behind a
/// connect in flight until the SBC gives up on the connect (10 s).
/// Nothing queued on it ever left, so every call waiting on it fails over
/// then, not at the no-response timer (30 s here) nor when the kernel's
/// SYN retries run out (about two minutes).
#[test]
fn a_connect_that_never_completes_fails_the_calls_over_when_given_up() {
    let net = Net(152);
    let carrier_a: SocketAddr = format!("{}:5060", net.carrier_a()).parse().unwrap();
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&carrier_a.into()).unwrap();
    full.listen(0).unwrap();
    // Backlog 0 holds one connection; two fillers make sure it is full.
    let fillers: Vec<socket2::Socket> = (0..2)
        .map(|_| {
            let f =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            f.set_nonblocking(true).unwrap();
            let _ = f.connect(&carrier_a.into());
            f
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (sbc, took) = three_calls_fail_over_to_carrier_b(net, 25_000);
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(25),
        "took {took:?}\n{}",
        sbc.log()
    );
    assert_eq!(sbc.metric("sbc_failovers_total"), 3.0, "{}", sbc.log());
    assert!(sbc.metric(r#"sbc_connections_closed_total{reason="timeout"}"#) >= 1.0);
    drop((fillers, full));
}

/// Three calls from the pbx over UDP to a number routed to carrier-a over
/// TCP, then carrier-b; the no-response timer is 30 s and the caller
/// waits `patience_ms` for each answer. All must complete on carrier-b.
/// The SBC, and how long the calls took.
fn three_calls_fail_over_to_carrier_b(net: Net, patience_ms: u32) -> (Sbc, Duration) {
    let text = config(net, 1, true).replacen(
        "[sip]\n",
        "[sip.timers]\nno_response_ms = 30000\n\n[sip]\n",
        1,
    );
    let sbc = Sbc::start(net, &text);
    let uas = Sipp::spawn(
        "carrier-b",
        &uas_args(net, &net.carrier_b(), "uas_answer.xml", 3, 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut args = uac_args(net, &net.pbx(), "uac_basic.xml", "+390612345678", 3, 2, 40);
    args.extend([
        "-d".into(),
        "200".into(),
        "-recv_timeout".into(),
        patience_ms.to_string(),
    ]);
    let started = Instant::now();
    let uac = Sipp::spawn("uac", &args).wait(LIMIT);
    assert_all_ok(&uac, 3, &sbc);
    let took = started.elapsed();
    assert_all_ok(&uas.wait(LIMIT), 3, &sbc);
    (sbc, took)
}

/// A TCP connection from `from` (an IP of the test's network) to the SBC.
fn connect(from: &str, to: &str) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    let dst: SocketAddr = to.parse().unwrap();
    sock.connect_timeout(&dst.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn options(net: Net, n: u32) -> String {
    format!(
        "OPTIONS sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/TCP {pbx}:5060;branch=z9hG4bK-tcp-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{pbx}>;tag=t{n}\r\nTo: <sip:{sbc}>\r\nCall-ID: tcp-options-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sbc = net.sbc(),
        pbx = net.pbx()
    )
}

/// Reads until `want` holds for what arrived (or the read times out).
fn read_until(s: &mut TcpStream, want: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !want(&String::from_utf8_lossy(&got)) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn keepalives_are_answered_and_bad_framing_closes_only_its_connection() {
    let net = Net(134);
    let sbc = Sbc::start(net, &config(net, 1, false));
    let mut good = connect(&net.pbx(), &net.sbc());

    // RFC 5626: a double-CRLF ping gets a single CRLF pong.
    good.write_all(b"\r\n\r\n").unwrap();
    let pong = read_until(&mut good, |s| s.len() >= 2);
    assert_eq!(pong, "\r\n");

    // A request split over several writes is framed by its Content-Length.
    let req = options(net, 1);
    let (a, b) = req.split_at(40);
    good.write_all(a.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    good.write_all(b.as_bytes()).unwrap();
    let resp = read_until(&mut good, |s| s.contains("\r\n\r\n"));
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    assert!(resp.contains("branch=z9hG4bK-tcp-1"), "{resp}");

    // No Content-Length on a stream: that connection is closed.
    let mut bad = connect(&net.pbx(), &net.sbc());
    bad.write_all(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: nolength\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let n = bad.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err() && started.elapsed() < Duration::from_secs(9),
        "the bad connection stayed open: {n:?}"
    );
    assert_eq!(
        sbc.wait_metric(r#"sbc_connections_closed_total{reason="framing"}"#, 1.0),
        1.0
    );

    // The good one carries on.
    good.write_all(options(net, 2).as_bytes()).unwrap();
    let resp = read_until(&mut good, |s| s.contains("\r\n\r\n"));
    assert!(resp.contains("branch=z9hG4bK-tcp-2"), "{resp}");
    assert_eq!(
        sbc.metric(r#"sbc_connections_open{shard="0",transport="tcp"}"#),
        1.0
    );
}

/// A connection that carried a message and then begins one it never
/// finishes (a Content-Length larger than what arrives) is closed once
/// the message is 10 s overdue; a connection carrying whole messages, and
/// lone CRLF keepalives, all along is not.
#[test]
fn a_message_that_never_arrives_whole_closes_its_connection() {
    let net = Net(148);
    let sbc = Sbc::start(net, &config(net, 1, false));
    let mut good = connect(&net.pbx(), &net.sbc());
    let mut short = connect(&net.pbx(), &net.sbc());
    short.write_all(options(net, 1).as_bytes()).unwrap();
    let resp = read_until(&mut short, |s| s.contains("\r\n\r\n"));
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    let started = Instant::now();
    let body_short =
        options(net, 2).replace("Content-Length: 0", "Content-Length: 100") + "only this";
    short.write_all(body_short.as_bytes()).unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Meanwhile the good connection carries whole messages and a lone
    // CRLF (a keepalive some clients send) every few seconds.
    let mut n = 10;
    let mut checked_open = false;
    while started.elapsed() < Duration::from_secs(14) {
        if !checked_open && started.elapsed() >= Duration::from_secs(5) {
            // Not closed early: the message is not overdue yet.
            short.set_nonblocking(true).unwrap();
            let early = short.read(&mut [0u8; 64]);
            assert!(
                early
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
                "closed before the message was overdue: {early:?}"
            );
            short.set_nonblocking(false).unwrap();
            checked_open = true;
        }
        good.write_all(b"\r\n").unwrap();
        good.write_all(options(net, n).as_bytes()).unwrap();
        let resp = read_until(&mut good, |s| s.contains("\r\n\r\n"));
        assert!(resp.contains(&format!("branch=z9hG4bK-tcp-{n}")), "{resp}");
        n += 1;
        std::thread::sleep(Duration::from_secs(3));
    }
    let mut buf = [0u8; 64];
    let closed = short.read(&mut buf);
    assert!(
        matches!(closed, Ok(0))
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stalled connection stayed open: {closed:?}"
    );
    assert!(checked_open);
    assert_eq!(
        sbc.wait_metric(r#"sbc_connections_closed_total{reason="timeout"}"#, 1.0),
        1.0
    );
    good.write_all(options(net, 99).as_bytes()).unwrap();
    let resp = read_until(&mut good, |s| s.contains("\r\n\r\n"));
    assert!(resp.contains("branch=z9hG4bK-tcp-99"), "{resp}");
}

#[test]
fn one_source_cannot_hold_more_than_its_share_of_connections() {
    let net = Net(135);
    let sbc = Sbc::start(net, &config(net, 1, false));
    // The limit is 64 per source and shard; with one shard, 16 of 80 are
    // refused (closed at once).
    let held: Vec<TcpStream> = (0..80).map(|_| connect(&net.ip(66), &net.sbc())).collect();
    assert_eq!(
        sbc.wait_metric(r#"sbc_connections_closed_total{reason="limit"}"#, 16.0),
        16.0
    );
    assert_eq!(
        sbc.metric(r#"sbc_connections_open{shard="0",transport="tcp"}"#),
        64.0
    );
    // Another source is not affected.
    let mut other = connect(&net.pbx(), &net.sbc());
    other.write_all(options(net, 3).as_bytes()).unwrap();
    let resp = read_until(&mut other, |s| s.contains("\r\n\r\n"));
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    drop(held);
    assert_eq!(
        sbc.wait_metric(r#"sbc_connections_open{shard="0",transport="tcp"}"#, 1.0),
        1.0
    );
}

/// RFC 3261 §18.2.2: a caller that closes its side of the connection
/// right after its INVITE (a half-close) still gets the answers. The SBC
/// opens a connection to the Via's sent-by port at the caller's address
/// and sends them over it, and the call goes on over that connection.
#[test]
fn answers_to_a_caller_whose_connection_closed_go_over_a_new_one_to_its_via_port() {
    answers_after_a_half_close(Net(160), 1);
}

/// The same with two shards: the call's shard may not be the one that
/// accepted the connection, and hands its answers to that one, which finds
/// the connection gone and opens the new one.
#[test]
fn answers_after_a_half_close_reach_the_caller_from_either_shard() {
    answers_after_a_half_close(Net(161), 2);
}

fn answers_after_a_half_close(net: Net, shards: usize) {
    let sbc = Sbc::start(net, &config(net, shards, false));
    let (pbx, sbc_addr) = (net.pbx(), net.sbc());
    // Not 5060: the Via's port must be the one used, not the default.
    let listener = std::net::TcpListener::bind(format!("{pbx}:5070")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let carrier = Peer::bind(&net.carrier_a());

    let body = sdp(&pbx, net.port(1));
    let head = |method: &str, ruri: &str, branch: &str, to: &str, cseq: u32| {
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP {pbx}:5070;branch=z9hG4bK-hc-{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@{pbx}>;tag=hc1\r\nTo: {to}\r\nCall-ID: half-closed-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:pbx@{pbx}:5070;transport=tcp>\r\n"
        )
    };
    let callee = format!("<sip:+390612345678@{sbc_addr}>");
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        head(
            "INVITE",
            &format!("sip:+390612345678@{sbc_addr}"),
            "1",
            &callee,
            1
        ),
        body.len()
    );
    let mut first = connect(&pbx, &sbc_addr);
    first.write_all(invite.as_bytes()).unwrap();
    first.shutdown(std::net::Shutdown::Write).unwrap();

    let inv = wait_for(&carrier, "INVITE", |m| m.starts_with("INVITE "));
    let ip = net.carrier_a();
    carrier.send(&sbc_addr, &respond(&inv, 180, "Ringing", "c1", "", ""));
    let contact = format!("Contact: <sip:callee@{ip}:5060>\r\nContent-Type: application/sdp\r\n");
    carrier.send(
        &sbc_addr,
        &respond(&inv, 200, "OK", "c1", &contact, &sdp(&ip, net.port(2))),
    );

    // The SBC comes back to the PBX's Via port with the answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the SBC never connected back: {e}\n{}", sbc.log()),
        }
    };
    back.set_nonblocking(false).unwrap();
    back.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let got = read_until(&mut back, |t| t.contains("SIP/2.0 200 "));
    assert!(
        got.contains("SIP/2.0 180 ") && got.contains("SIP/2.0 200 "),
        "{got}\n{}",
        sbc.log()
    );
    let ok = &got[got.find("SIP/2.0 200 ").unwrap()..];
    let to = header(ok, "To").unwrap().to_owned();
    let target = header(ok, "Contact").unwrap();
    let target = target
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();

    // The call goes on over the connection the SBC opened: ACK, then BYE.
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("ACK", &target, "2", &to, 1)
    );
    back.write_all(ack.as_bytes()).unwrap();
    wait_for(&carrier, "ACK", |m| m.starts_with("ACK "));
    let bye = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("BYE", &target, "3", &to, 2)
    );
    back.write_all(bye.as_bytes()).unwrap();
    let bye = wait_for(&carrier, "BYE", |m| m.starts_with("BYE "));
    carrier.send(&sbc_addr, &respond(&bye, 200, "OK", "c1", "", ""));
    // (The INVITE's 200 may come again before the ACK is in: the BYE's
    // answer is the message with its CSeq.)
    let done = read_until(&mut back, |t| t.contains("CSeq: 2 BYE"));
    let answer = done
        .split("SIP/2.0 ")
        .find(|m| m.contains("CSeq: 2 BYE"))
        .unwrap_or_else(|| panic!("{done}"));
    assert!(answer.starts_with("200 "), "{done}\n{}", sbc.log());
}
