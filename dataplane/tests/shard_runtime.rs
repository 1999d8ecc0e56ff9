//! The io_uring shards on loopback: real sockets, real threads, calls
//! spread over shards whatever socket the packets arrive on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use sbc_dataplane::b2bua::Secrets;
use sbc_dataplane::shard::{Runtime, RuntimeConfig};
use sbc_dataplane::sip::{HeaderName, Message};
use support::*;

struct Peer {
    sock: UdpSocket,
    sbc: std::net::SocketAddr,
}

impl Peer {
    fn new(at: &str, sbc: &str) -> Peer {
        let sock = UdpSocket::bind(at).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Peer {
            sock,
            sbc: addr(sbc),
        }
    }
    fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), self.sbc).unwrap();
    }
    /// Next message, skipping 100 Trying.
    fn recv(&self) -> Sent {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = self
                .sock
                .recv_from(&mut buf)
                .expect("timed out waiting for the SBC");
            let s = Sent {
                to: self.sock.local_addr().unwrap(),
                bytes: buf[..n].to_vec(),
            };
            if s.code() != Some(100) {
                return s;
            }
        }
    }
}

fn run_calls(shards: usize, net: u8, calls: usize) -> Vec<u64> {
    let sbc = format!("127.0.{net}.1:5060");
    let pbx_addr = format!("127.0.{net}.10:5060");
    let a_addr = format!("127.0.{net}.20:5060");
    let b_addr = format!("127.0.{net}.30:5060");
    let policy = Arc::new(ArcSwap::from_pointee(policy_at(
        &sbc, &pbx_addr, &a_addr, &b_addr,
    )));
    let cfg = RuntimeConfig {
        shards,
        pin_threads: false,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(cfg, policy, Secrets::generate().unwrap()).unwrap();
    let pbx = Peer::new(&pbx_addr, &sbc);
    let carrier = Peer::new(&a_addr, &sbc);
    for i in 0..calls {
        let call_id = format!("rt-{shards}-{i}@pbx");
        pbx.send(&invite(
            &pbx_addr,
            "+4420123",
            &call_id,
            &format!("z9hG4bKrt{i}"),
            1,
        ));
        let inv = carrier.recv();
        assert_eq!(inv.method().as_deref(), Some("INVITE"));
        carrier.send(&reply(
            &inv,
            200,
            "OK",
            Some("ctag"),
            Some(&format!("sip:c@{a_addr}")),
            ANSWER_SDP,
        ));
        let ok = pbx.recv();
        assert_eq!(ok.code(), Some(200), "{}", ok.text());
        let to = ok.header(HeaderName::To);
        pbx.send(&in_dialog(
            "ACK",
            &format!("sip:{sbc}"),
            &pbx_addr,
            &format!("z9hG4bKack{i}"),
            "<sip:alice@x>;tag=caller-tag",
            &to,
            &call_id,
            1,
            "",
        ));
        assert_eq!(carrier.recv().method().as_deref(), Some("ACK"));
        pbx.send(&in_dialog(
            "BYE",
            &format!("sip:{sbc}"),
            &pbx_addr,
            &format!("z9hG4bKbye{i}"),
            "<sip:alice@x>;tag=caller-tag",
            &to,
            &call_id,
            2,
            "",
        ));
        let bye = carrier.recv();
        assert_eq!(bye.method().as_deref(), Some("BYE"));
        let m = Message::parse(&bye.bytes).unwrap();
        assert!(m.value(HeaderName::CallId).is_some());
        carrier.send(&reply(&bye, 200, "OK", None, None, ""));
        let done = pbx.recv();
        assert_eq!(done.code(), Some(200));
        assert_eq!(done.cseq(), "2 BYE");
    }
    let per_shard: Vec<u64> = rt
        .shard_stats()
        .iter()
        .map(|s| s.calls_created.load(Ordering::Relaxed))
        .collect();
    assert!(rt.is_healthy());
    rt.stop();
    per_shard
}

#[test]
fn one_shard_carries_calls() {
    let per_shard = run_calls(1, 61, 10);
    assert_eq!(per_shard, vec![10]);
}

#[test]
fn two_shards_share_calls_from_one_trunk() {
    // All packets of a trunk hash to one socket; calls must still spread.
    let per_shard = run_calls(2, 62, 40);
    assert_eq!(per_shard.iter().sum::<u64>(), 40);
    assert!(
        per_shard.iter().all(|&n| n >= 8),
        "calls per shard: {per_shard:?}"
    );
}
