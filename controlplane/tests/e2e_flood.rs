//! A stranger flood with the real binary (bounded: 10,000 INVITEs a second
//! for 3 s from 100 addresses that match no trunk) while sipp places
//! legitimate calls: every call completes, the strangers get no more than
//! their few answers a second (BRIEF §8: no reflector), the rest is
//! dropped and counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_stranger_flood_neither_stops_calls_nor_gets_answers() {
    let net = Net(116);
    let sbc = Sbc::start(net, &example_config(net, 2));
    let uas = Sipp::spawn(
        "uas",
        &uas_args(net, &net.carrier_a(), "uas_answer.xml", 30, 20),
    );
    let mut args = uac_args(net, &net.pbx(), "uac_basic.xml", "+441234567", 30, 10, 40);
    args.extend(["-d".into(), "200".into()]);
    let uac = Sipp::spawn("uac", &args);

    // A fixed port on addresses of their own: an ephemeral one could take
    // a port sipp is about to bind (its control socket) on every address.
    let strangers: Vec<UdpSocket> = (0..100)
        .map(|i| UdpSocket::bind(format!("127.{}.1.{}:5060", net.0, 1 + i)).unwrap())
        .collect();
    let sbc_addr = net.sbc();
    let invites: Vec<Vec<u8>> = strangers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let me = s.local_addr().unwrap();
            format!(
                "INVITE sip:+441234567@{sbc_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfl{i}\r\nMax-Forwards: 70\r\nFrom: <sip:x@{me}>;tag=f{i}\r\nTo: <sip:+441234567@{sbc_addr}>\r\nCall-ID: flood-{i}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    for tick in 0..3000u64 {
        for _ in 0..10 {
            let k = usize::try_from(sent % 100).unwrap();
            strangers[k].send_to(&invites[k], &sbc_addr).unwrap();
            sent += 1;
        }
        let due = start + Duration::from_millis(tick + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let seconds = start.elapsed().as_secs_f64();

    let uac = uac.wait(Duration::from_secs(90));
    let uas = uas.wait(Duration::from_secs(30));
    assert_eq!(
        (uac.code, uac.successful, uac.failed),
        (Some(0), 30, 0),
        "{}\n{}",
        uac.output,
        uas.output
    );
    let mut answers = 0u64;
    let mut buf = [0u8; 4096];
    for s in &strangers {
        s.set_nonblocking(true).unwrap();
        while s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    // Per shard: a full bucket of 100, then 100 a second (two shards).
    let limit = 2.0 * (100.0 + 100.0 * (seconds + 1.0));
    assert!(answers > 0, "strangers get a few answers");
    assert!(
        (answers as f64) <= limit,
        "{answers} answers to {sent} flood packets in {seconds:.1} s (limit {limit})"
    );
    let silenced = sbc.metric(r#"sbc_messages_discarded_total{reason="stranger_rate_limited"}"#);
    let refused = sbc.metric(r#"sbc_requests_rejected_total{reason="unknown_source"}"#);
    assert!(refused >= 0.9 * sent as f64, "{refused} of {sent} seen");
    assert!(
        silenced >= refused - limit,
        "{silenced} silenced of {refused}"
    );
}
