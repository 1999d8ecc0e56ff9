//! The io_uring shards on loopback: real sockets, real threads, calls
//! spread over shards whatever socket the packets arrive on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The simulated peers and message builders the core tests use.
#[path = "../core/tests/support/mod.rs"]
mod support;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use sbc_core::sip::{HeaderName, Message};
use sbc_dataplane::shard::{RecvMode, Runtime, RuntimeConfig};
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
    let rt = Runtime::start(cfg, policy, sbc_dataplane::shard::os_secrets().unwrap()).unwrap();
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

fn body_port(msg: &Sent) -> u16 {
    let t = msg.text();
    let body = &t[t.find("\r\n\r\n").unwrap() + 4..];
    body.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

fn media_relay(net: u8, mode: RecvMode) {
    let ip = |h: u8| format!("127.0.{net}.{h}");
    let sbc = format!("{}:5060", ip(1));
    let mut policy = policy_at(
        &sbc,
        &format!("{}:5060", ip(10)),
        &format!("{}:5060", ip(20)),
        &format!("{}:5060", ip(30)),
    );
    policy.media = Some(sbc_core::policy::MediaPolicy {
        bind: ip(1).parse().unwrap(),
        advertise: ip(1).parse().unwrap(),
        bind_other: None,
        advertise_other: None,
        first_port: 31000,
        last_port: 31039,
        timeout: Duration::from_secs(60),
        forbidden: Vec::new(),
        xdp: None,
    });
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let cfg = RuntimeConfig {
        shards: 2,
        pin_threads: false,
        recv_mode: mode,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(cfg, policy, sbc_dataplane::shard::os_secrets().unwrap()).unwrap();
    let pbx = Peer::new(&format!("{}:5060", ip(10)), &sbc);
    let carrier = Peer::new(&format!("{}:5060", ip(20)), &sbc);
    let a_rtp = UdpSocket::bind(format!("{}:4000", ip(10))).unwrap();
    let b_rtp = UdpSocket::bind(format!("{}:5000", ip(20))).unwrap();
    for s in [&a_rtp, &b_rtp] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let call_id = format!("media-{net}@pbx");
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {0}\r\ns=-\r\nc=IN IP4 {0}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        ip(10)
    );
    let inv = invite_with_body(
        &format!("{}:5060", ip(10)),
        "+4420123",
        &call_id,
        "z9hG4bKmedia",
        1,
        &sdp,
    );
    pbx.send(&inv);
    let b_inv = carrier.recv();
    let b_port = body_port(&b_inv);
    let answer = ANSWER_SDP.replace("10.0.0.20", &ip(20));
    carrier.send(&reply(
        &b_inv,
        200,
        "OK",
        Some("ct"),
        Some(&format!("sip:c@{}:5060", ip(20))),
        &answer,
    ));
    let ok = pbx.recv();
    assert_eq!(ok.code(), Some(200));
    let a_port = body_port(&ok);
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&[0x55; 160]);
        a_rtp.send_to(&pkt, format!("{}:{a_port}", ip(1))).unwrap();
        let (n, from) = b_rtp
            .recv_from(&mut buf)
            .expect("RTP relayed to the callee");
        assert_eq!(&buf[..n], &pkt[..]);
        assert_eq!(
            from.to_string(),
            format!("{}:{b_port}", ip(1)),
            "sent from the SBC's port facing the callee"
        );
        b_rtp.send_to(&pkt, format!("{}:{b_port}", ip(1))).unwrap();
        let (_, from) = a_rtp
            .recv_from(&mut buf)
            .expect("RTP relayed back to the caller");
        assert_eq!(from.to_string(), format!("{}:{a_port}", ip(1)));
    }
    let stats = rt.shard_stats();
    let relayed: u64 = stats
        .iter()
        .map(|s| {
            s.media_packets[0].load(Ordering::Relaxed) + s.media_packets[1].load(Ordering::Relaxed)
        })
        .sum();
    assert_eq!(relayed, 40);
    rt.stop();
    // The shards let go of their ports when they stop, not later when the
    // kernel gets round to tearing their rings down: a restart finds them
    // free.
    for port in [31000, 31039, a_port, b_port] {
        UdpSocket::bind(format!("{}:{port}", ip(1)))
            .unwrap_or_else(|e| panic!("port {port} still held after stop: {e}"));
    }
}

#[test]
fn media_is_relayed_through_the_shards_multishot() {
    media_relay(63, RecvMode::Auto);
}

#[test]
fn media_is_relayed_with_single_shot_receive() {
    // The fallback for kernels without provided buffer rings.
    media_relay(64, RecvMode::Single);
}

/// A shard's loop state: running while the runtime runs, stopped after;
/// a loop that panics is marked stopped by its guard as it unwinds.
#[test]
fn shards_report_running_then_stopped() {
    use sbc_core::stats::{LoopState, ShardStats};
    use sbc_dataplane::shard::RunningGuard;

    let policy = Arc::new(ArcSwap::from_pointee(policy_at(
        "127.0.64.1:5060",
        "127.0.64.10:5060",
        "127.0.64.20:5060",
        "127.0.64.30:5060",
    )));
    let cfg = RuntimeConfig {
        shards: 2,
        pin_threads: false,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(cfg, policy, sbc_dataplane::shard::os_secrets().unwrap()).unwrap();
    let stats = rt.shard_stats();
    assert!(stats.iter().all(|s| s.loop_state() == LoopState::Running));
    rt.stop();
    assert!(stats.iter().all(|s| s.loop_state() == LoopState::Stopped));

    let shard = Arc::new(ShardStats::default());
    let held = Arc::clone(&shard);
    let died = std::thread::spawn(move || {
        let _running = RunningGuard::new(held);
        panic!("a shard loop bug");
    })
    .join();
    assert!(died.is_err());
    assert_eq!(shard.loop_state(), LoopState::Stopped);
}

/// A shard with 600 media sockets (three batches of its stop's
/// cancelling) lets go of every port when it stops: each socket's armed
/// receive was cancelled and reaped, none left holding its socket.
#[test]
fn a_shard_with_many_media_ports_lets_go_of_all_of_them() {
    const FIRST: u16 = 32000;
    const LAST: u16 = 32599;
    let mut policy = policy_at(
        "127.0.66.1:5060",
        "127.0.66.10:5060",
        "127.0.66.20:5060",
        "127.0.66.30:5060",
    );
    policy.media = Some(sbc_core::policy::MediaPolicy {
        bind: "127.0.66.1".parse().unwrap(),
        advertise: "127.0.66.1".parse().unwrap(),
        bind_other: None,
        advertise_other: None,
        first_port: FIRST,
        last_port: LAST,
        timeout: Duration::from_secs(60),
        forbidden: Vec::new(),
        xdp: None,
    });
    let cfg = RuntimeConfig {
        shards: 1,
        pin_threads: false,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(
        cfg,
        Arc::new(ArcSwap::from_pointee(policy)),
        sbc_dataplane::shard::os_secrets().unwrap(),
    )
    .unwrap();
    // The shard holds its ports while it runs.
    assert!(UdpSocket::bind(format!("127.0.66.1:{FIRST}")).is_err());
    rt.stop();
    for port in FIRST..=LAST {
        UdpSocket::bind(format!("127.0.66.1:{port}"))
            .unwrap_or_else(|e| panic!("port {port} still held after stop: {e}"));
    }
}
