//! End-to-end AF_XDP media path: the real `sbc` with `[media.xdp]` on lo
//! (generic XDP), in a network namespace of the test's own (where lo may
//! take the frames AF_XDP sends to 127.0.0.0/8, `route_localnet`, without
//! touching the host). Media is relayed both ways, from the SBC's ports,
//! payload intact, through AF_XDP with next hops from the kernel's tables;
//! a next hop due for a check sends one packet through the UDP socket.
//! And when XDP cannot attach, the SBC relays through its sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const IN_NETNS: &str = "SBC_TEST_IN_NETNS";

/// Runs the test `name` of this binary again inside a new network
/// namespace (util-linux `unshare`, as root) and asserts it passed there.
/// Returns false in the outer run; true inside, where the body goes on.
fn in_own_netns(name: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success(), "ip link set lo up");
        for conf in ["all", "lo"] {
            std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{conf}/route_localnet"),
                "1",
            )
            .unwrap();
        }
        return true;
    }
    let out = Command::new("unshare")
        .args(["--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(IN_NETNS, "1")
        .output()
        .expect("run unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inside the namespace:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the test ran inside the namespace:\n{text}"
    );
    false
}

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

fn audio_port(msg: &str) -> u16 {
    msg.split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_for(peer: &Peer, what: &str, want: impl Fn(&str) -> bool) -> String {
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

/// The addresses of one test: the SBC's, the pbx's and the carrier's.
struct Hosts {
    sbc: String,
    pbx: String,
    carrier: String,
}

impl Hosts {
    fn of(net: Net) -> Hosts {
        Hosts {
            sbc: net.ip(1),
            pbx: net.pbx(),
            carrier: net.carrier_a(),
        }
    }
    fn sip(&self) -> String {
        format!("{}:5060", self.sbc)
    }
}

/// Sets up one anchored call pbx -> carrier with media at pbx:6100 and
/// carrier:6000. Returns the SBC's ports facing the pbx and the carrier.
fn call(h: &Hosts, pbx: &Peer, carrier: &Peer) -> (u16, u16) {
    let p = &h.pbx;
    let offer = sdp(p, 6100);
    let invite = format!(
        "INVITE sip:+441234567@{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {p}:5060;branch=z9hG4bKxdp1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{p}>;tag=a1\r\nTo: <sip:+441234567@{sbc}>\r\nCall-ID: xdp1@{p}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{p}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len(),
        sbc = h.sip(),
    );
    pbx.send(&h.sip(), &invite);
    let inv = wait_for(carrier, "INVITE", |m| m.starts_with("INVITE "));
    let toward_carrier = audio_port(&inv);
    let extra = format!(
        "Contact: <sip:callee@{}:5060>\r\nContent-Type: application/sdp\r\n",
        h.carrier
    );
    carrier.send(
        &h.sip(),
        &respond(&inv, 200, "OK", "callee", &extra, &sdp(&h.carrier, 6000)),
    );
    let ok = wait_for(pbx, "200", |m| m.starts_with("SIP/2.0 200"));
    let toward_pbx = audio_port(&ok);
    let to = header(&ok, "To").unwrap();
    let ack = format!(
        "ACK sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {p}:5060;branch=z9hG4bKxdpack;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{p}>;tag=a1\r\nTo: {to}\r\nCall-ID: xdp1@{p}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        sbc = h.sip(),
    );
    pbx.send(&h.sip(), &ack);
    wait_for(carrier, "ACK", |m| m.starts_with("ACK "));
    (toward_pbx, toward_carrier)
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]);
    // An odd length and varied bytes, so a bad checksum or a cut shows.
    p.extend((0..161u32).map(|i| (i * 7 + u32::from(seq)) as u8));
    p
}

/// Sends packets `seqs` from `from` to the SBC's `port`; the far socket
/// must get each, intact, from the SBC's port `relay_port`.
fn relay_ok(
    h: &Hosts,
    from: &UdpSocket,
    port: u16,
    to: &UdpSocket,
    relay_port: u16,
    seqs: std::ops::Range<u16>,
) {
    let relay: SocketAddr = format!("{}:{relay_port}", h.sbc).parse().unwrap();
    let mut buf = [0u8; 2048];
    for seq in seqs {
        from.send_to(&rtp(seq), format!("{}:{port}", h.sbc))
            .unwrap();
        let (n, src) = to
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("packet {seq} toward port {port} not relayed: {e}"));
        assert_eq!(src, relay, "relayed from the SBC's port");
        assert_eq!(&buf[..n], &rtp(seq)[..], "packet {seq} intact");
    }
}

#[test]
fn media_is_relayed_through_af_xdp_both_ways() {
    if !in_own_netns("media_is_relayed_through_af_xdp_both_ways") {
        return;
    }
    let net = Net(121);
    let h = Hosts::of(net);
    let mut config = example_config(net, 1);
    config.push_str("\n[media.xdp]\ninterface = \"lo\"\nmode = \"generic\"\n");
    let sbc = Sbc::start(net, &config);
    assert_eq!(
        sbc.metric(r#"sbc_media_xdp_socket{shard="0"}"#),
        1.0,
        "shard 0 has its AF_XDP socket: {}",
        sbc.log()
    );
    let pbx = Peer::bind(&net.pbx());
    let carrier = Peer::bind(&net.carrier_a());
    let (toward_pbx, toward_carrier) = call(&h, &pbx, &carrier);
    let a = UdpSocket::bind(format!("{}:6100", net.pbx())).unwrap();
    let b = UdpSocket::bind(format!("{}:6000", net.carrier_a())).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    // One way first: the next hop comes from the kernel's tables (lo
    // here), not from the far side's packets, so the pbx's packets are
    // rewritten and sent by AF_XDP from the first on.
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 0..20);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_received_total"), 20.0);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_sent_total"), 20.0);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_fallback_total"), 0.0);

    // And back.
    relay_ok(&h, &b, toward_carrier, &a, toward_pbx, 100..130);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_sent_total"), 50.0);
    assert_eq!(
        sbc.metric(r#"sbc_media_packets_total{direction="caller_to_callee"}"#),
        20.0
    );
    assert_eq!(
        sbc.metric(r#"sbc_media_packets_total{direction="callee_to_caller"}"#),
        30.0
    );

    // Once a next hop is 5 s old, one packet to it goes through the UDP
    // socket (the kernel then checks the neighbour itself) and the tables
    // are read again; the next ones take AF_XDP.
    std::thread::sleep(Duration::from_millis(5500));
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 20..23);
    relay_ok(&h, &b, toward_carrier, &a, toward_pbx, 130..133);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_received_total"), 56.0);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_fallback_total"), 2.0);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_sent_total"), 54.0);
    // The kernel's own drop counters are read (about once a second) and
    // show nothing lost on the way in or out.
    let kernel: Vec<_> = sbc
        .metrics()
        .into_iter()
        .filter(|(n, _)| n.starts_with("sbc_media_xdp_kernel_dropped_total{"))
        .collect();
    assert_eq!(kernel.len(), 4, "{kernel:?}");
    assert!(kernel.iter().all(|(_, v)| *v == 0.0), "{kernel:?}");

    // A stranger's packets to the pbx-facing port are dropped as on the
    // socket path (never relayed, never latched).
    let stranger = UdpSocket::bind(format!("{}:6100", net.ip(99))).unwrap();
    stranger
        .send_to(&rtp(999), format!("{}:{toward_pbx}", net.ip(1)))
        .unwrap();
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 60..61);
    assert!(sbc.metric_sum("sbc_media_dropped_total") >= 1.0);
}

#[test]
fn without_xdp_support_the_sbc_relays_through_its_sockets() {
    // No namespace needed: nothing attaches.
    let net = Net(122);
    let h = Hosts::of(net);
    let mut config = example_config(net, 1);
    config.push_str("\n[media.xdp]\ninterface = \"nosuch0\"\n");
    let sbc = Sbc::start(net, &config);
    assert!(
        sbc.log().contains("AF_XDP media path unavailable"),
        "{}",
        sbc.log()
    );
    assert_eq!(sbc.metric(r#"sbc_media_xdp_socket{shard="0"}"#), 0.0);
    let pbx = Peer::bind(&net.pbx());
    let carrier = Peer::bind(&net.carrier_a());
    let (toward_pbx, toward_carrier) = call(&h, &pbx, &carrier);
    let a = UdpSocket::bind(format!("{}:6100", net.pbx())).unwrap();
    let b = UdpSocket::bind(format!("{}:6000", net.carrier_a())).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 0..10);
    relay_ok(&h, &b, toward_carrier, &a, toward_pbx, 0..10);
    assert_eq!(sbc.metric_sum("sbc_media_xdp_received_total"), 0.0);
    assert_eq!(
        sbc.metric_sum("sbc_media_packets_total"),
        20.0,
        "relayed by the sockets"
    );
}

#[test]
fn a_shard_without_a_queue_relays_through_its_sockets() {
    if !in_own_netns("a_shard_without_a_queue_relays_through_its_sockets") {
        return;
    }
    // lo has one receive queue: shard 0 gets the AF_XDP socket, shard 1
    // (whose ports the program passes to the stack) keeps its sockets.
    let net = Net(123);
    let h = Hosts::of(net);
    let mut config = example_config(net, 2);
    config.push_str("\n[media.xdp]\ninterface = \"lo\"\n");
    let sbc = Sbc::start(net, &config);
    assert_eq!(sbc.metric(r#"sbc_media_xdp_socket{shard="0"}"#), 1.0);
    assert_eq!(sbc.metric(r#"sbc_media_xdp_socket{shard="1"}"#), 0.0);
    assert!(
        sbc.log().contains("the interface has no such queue"),
        "{}",
        sbc.log()
    );
    let pbx = Peer::bind(&net.pbx());
    let carrier = Peer::bind(&net.carrier_a());
    let (toward_pbx, toward_carrier) = call(&h, &pbx, &carrier);
    let a = UdpSocket::bind(format!("{}:6100", net.pbx())).unwrap();
    let b = UdpSocket::bind(format!("{}:6000", net.carrier_a())).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 0..10);
    relay_ok(&h, &b, toward_carrier, &a, toward_pbx, 0..10);
    // Whichever shard owns the call, every packet went one way or the
    // other: through AF_XDP when shard 0 owns it, else not at all.
    let via_xdp = sbc.metric_sum("sbc_media_xdp_sent_total");
    assert!(via_xdp == 20.0 || via_xdp == 0.0, "{via_xdp}");
    assert_eq!(sbc.metric_sum("sbc_media_packets_total"), 20.0);
}

/// Runs a command (in this test's namespace, or in `netns_of`'s with
/// nsenter) and asserts it succeeded.
fn sh(netns_of: Option<u32>, cmd: &str) {
    let mut c = match netns_of {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-n", "--"]);
            c
        }
        None => Command::new(cmd.split(' ').next().unwrap()),
    };
    let args: Vec<&str> = match netns_of {
        Some(_) => cmd.split(' ').collect(),
        None => cmd.split(' ').skip(1).collect(),
    };
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills and reaps a child on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn media_crosses_a_veth_link_through_native_xdp() {
    if !in_own_netns("media_crosses_a_veth_link_through_native_xdp") {
        return;
    }
    // Two namespaces joined by a veth pair: the SBC's (held by a sleeping
    // process) with va 10.77.0.1, and this test's with vb 10.77.0.2 (pbx)
    // and .3 (carrier). Media crosses a real Ethernet link, with ARP: the
    // next hops come from the kernel's neighbour table.
    let holder = Reaped(
        Command::new("unshare")
            .args(["--net", "--", "sleep", "300"])
            .spawn()
            .unwrap(),
    );
    let pid = holder.0.id();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == Some(ours.clone()) {
        assert!(Instant::now() < deadline, "no namespace for the SBC");
        std::thread::sleep(Duration::from_millis(20));
    }
    sh(None, "ip link add va type veth peer name vb");
    sh(None, &format!("ip link set va netns {pid}"));
    sh(Some(pid), "ip link set lo up");
    sh(Some(pid), "ip addr add 10.77.0.1/24 dev va");
    sh(Some(pid), "ip link set va up");
    sh(None, "ip addr add 10.77.0.2/24 dev vb");
    sh(None, "ip addr add 10.77.0.3/24 dev vb");
    sh(None, "ip link set vb up");

    let h = Hosts {
        sbc: "10.77.0.1".into(),
        pbx: "10.77.0.2".into(),
        carrier: "10.77.0.3".into(),
    };
    let config = format!(
        "[sip]\nlisten = [\"{s}:5060\"]\n[metrics]\nlisten = \"{s}:9090\"\n[shards]\ncount = 1\npin_threads = false\n\
         [media]\nlisten = \"{s}\"\nports = \"30000-30999\"\n[media.xdp]\ninterface = \"va\"\nmode = \"native\"\n\
         [[trunks]]\nname = \"pbx\"\nsources = [\"{p}\"]\naddress = \"{p}:5060\"\n\
         [[trunks]]\nname = \"carrier\"\nsources = [\"{c}\"]\naddress = \"{c}:5060\"\n\
         [[routes]]\nname = \"out\"\nfrom = [\"pbx\"]\nnumbers = [\"*\"]\ntargets = [{{ trunk = \"carrier\" }}]\n",
        s = h.sbc,
        p = h.pbx,
        c = h.carrier
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sbc.toml");
    std::fs::write(&file, config).unwrap();
    let log_path = dir.path().join("sbc.log");
    let _sbc = Reaped(
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "--"])
            .arg(env!("CARGO_BIN_EXE_sbc"))
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let metrics_at = format!("{}:9090", h.sbc);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&metrics_at, "/health").is_none_or(|b| b.trim() != "ok") {
        assert!(Instant::now() < deadline, "sbc did not come up: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let metric = |family: &str| -> f64 {
        http_get(&metrics_at, "/metrics")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        log().contains("AF_XDP media path attached") && log().contains("native"),
        "{}",
        log()
    );
    assert_eq!(metric("sbc_media_xdp_socket"), 1.0, "{}", log());

    let pbx = Peer::bind(&h.pbx);
    let carrier = Peer::bind(&h.carrier);
    let (toward_pbx, toward_carrier) = call(&h, &pbx, &carrier);
    let a = UdpSocket::bind(format!("{}:6100", h.pbx)).unwrap();
    let b = UdpSocket::bind(format!("{}:6000", h.carrier)).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    // The SBC's kernel resolved both peers over ARP for the signalling;
    // media then takes the fast path both ways.
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 0..30);
    relay_ok(&h, &b, toward_carrier, &a, toward_pbx, 0..30);
    assert_eq!(metric("sbc_media_xdp_received_total"), 60.0, "{}", log());
    assert_eq!(
        metric("sbc_media_xdp_sent_total"),
        60.0,
        "every packet rewritten and sent by AF_XDP: {}",
        log()
    );
    assert_eq!(metric("sbc_media_packets_total"), 60.0);
}
