//! End-to-end: a shard whose loop ends is noticed (BRIEF §11, issue 12
//! item 7). The real `sbc` runs two shards; fault injection
//! (`SBC_FAULT_STOP_SHARD`) ends shard 1's loop with an error at its
//! first wake-up 4 s after start (time enough to start on a busy host);
//! `/health` stops answering "ok" and the process exits non-zero, saying which
//! shard stopped, instead of running on with half its shards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_shard_that_stops_fails_health_and_stops_sbc() {
    let net = Net(143);
    let mut sbc = Sbc::start_with(
        &example_config(net, 2),
        &net.metrics(),
        &["env", "SBC_FAULT_STOP_SHARD=1:4000"],
    );
    assert_eq!(
        http_get(&net.metrics(), "/health").map(|b| b.trim().to_owned()),
        Some("ok".to_owned())
    );
    // Wake the shards after the fault's time: OPTIONS from many source
    // ports reach both shards' sockets (SO_REUSEPORT spreads them).
    std::thread::sleep(Duration::from_millis(4100));
    let to = format!("{}:5060", net.sbc());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = None;
    let mut saw_unhealthy = false;
    while status.is_none() && Instant::now() < deadline {
        for i in 0..16 {
            let s = UdpSocket::bind((net.pbx().as_str(), 0)).unwrap();
            let options = format!(
                "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {}:{};branch=z9hG4bKdeath{i}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{}>;tag=d{i}\r\nTo: <sip:{to}>\r\nCall-ID: death{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                net.pbx(),
                s.local_addr().unwrap().port(),
                net.pbx()
            );
            let _ = s.send_to(options.as_bytes(), &to);
        }
        if http_get(&net.metrics(), "/health").is_none_or(|b| b.trim() != "ok") {
            saw_unhealthy = true;
        }
        status = sbc.exit_within(Duration::from_millis(200));
    }
    let log = sbc.log();
    let status = status.unwrap_or_else(|| panic!("sbc did not stop: {log}"));
    assert!(!status.success(), "exits non-zero: {status}\n{log}");
    assert!(saw_unhealthy, "/health stopped saying ok");
    assert!(log.contains("a shard stopped"), "{log}");
    assert!(log.contains("stopped by fault injection"), "{log}");
}
