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
    let toward_carrier = sdp_target(&inv).1;
    let extra = format!(
        "Contact: <sip:callee@{}:5060>\r\nContent-Type: application/sdp\r\n",
        h.carrier
    );
    carrier.send(
        &h.sip(),
        &respond(&inv, 200, "OK", "callee", &extra, &sdp(&h.carrier, 6000)),
    );
    let ok = wait_for(pbx, "200", |m| m.starts_with("SIP/2.0 200"));
    let toward_pbx = sdp_target(&ok).1;
    let to = header(&ok, "To").unwrap();
    let ack = format!(
        "ACK sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {p}:5060;branch=z9hG4bKxdpack;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{p}>;tag=a1\r\nTo: {to}\r\nCall-ID: xdp1@{p}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        sbc = h.sip(),
    );
    pbx.send(&h.sip(), &ack);
    wait_for(carrier, "ACK", |m| m.starts_with("ACK "));
    (toward_pbx, toward_carrier)
}

/// One anchored call and its media sockets.
struct Anchored {
    /// The pbx's and the carrier's SIP sockets, kept open.
    _peers: (Peer, Peer),
    /// The pbx's and the carrier's media sockets.
    a: UdpSocket,
    b: UdpSocket,
    /// The SBC's media ports facing the pbx and the carrier.
    toward_pbx: u16,
    toward_carrier: u16,
}

/// Sets up a call pbx -> carrier ([`call`]) and binds its media sockets.
fn anchored_call(h: &Hosts) -> Anchored {
    let pbx = Peer::bind(&h.pbx);
    let carrier = Peer::bind(&h.carrier);
    let (toward_pbx, toward_carrier) = call(h, &pbx, &carrier);
    let a = UdpSocket::bind(format!("{}:6100", h.pbx)).unwrap();
    let b = UdpSocket::bind(format!("{}:6000", h.carrier)).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    Anchored {
        _peers: (pbx, carrier),
        a,
        b,
        toward_pbx,
        toward_carrier,
    }
}

/// The example configuration on `net` with `shards` and `[media.xdp]`
/// holding `xdp`.
fn xdp_config(net: Net, shards: usize, xdp: &str) -> String {
    let mut config = example_config(net, shards);
    config.push_str(&format!("\n[media.xdp]\n{xdp}\n"));
    config
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
    let config = xdp_config(net, 1, "interface = \"lo\"\nmode = \"generic\"");
    let sbc = Sbc::start(net, &config);
    assert_eq!(
        sbc.metric(r#"sbc_media_xdp_socket{shard="0"}"#),
        1.0,
        "shard 0 has its AF_XDP socket: {}",
        sbc.log()
    );
    let Anchored {
        _peers,
        a,
        b,
        toward_pbx,
        toward_carrier,
    } = anchored_call(&h);

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
    let config = xdp_config(net, 1, "interface = \"nosuch0\"");
    let sbc = Sbc::start(net, &config);
    assert!(
        sbc.log().contains("AF_XDP media path unavailable"),
        "{}",
        sbc.log()
    );
    assert_eq!(sbc.metric(r#"sbc_media_xdp_socket{shard="0"}"#), 0.0);
    let Anchored {
        _peers,
        a,
        b,
        toward_pbx,
        toward_carrier,
    } = anchored_call(&h);
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
    let config = xdp_config(net, 2, "interface = \"lo\"");
    let sbc = Sbc::start(net, &config);
    assert_eq!(sbc.metric(r#"sbc_media_xdp_socket{shard="0"}"#), 1.0);
    assert_eq!(sbc.metric(r#"sbc_media_xdp_socket{shard="1"}"#), 0.0);
    assert!(
        sbc.log().contains("the interface has no such queue"),
        "{}",
        sbc.log()
    );
    let Anchored {
        _peers,
        a,
        b,
        toward_pbx,
        toward_carrier,
    } = anchored_call(&h);
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
    let pid = netns_of.map(|p| p.to_string());
    let mut argv: Vec<&str> = match &pid {
        Some(pid) => vec!["nsenter", "-t", pid, "-n", "--"],
        None => Vec::new(),
    };
    argv.extend(cmd.split(' '));
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
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
    let pid = pid.to_string();
    let sbc = Sbc::start_with(
        &config,
        &format!("{}:9090", h.sbc),
        &["nsenter", "-t", &pid, "-n", "--"],
    );
    assert!(
        sbc.log().contains("AF_XDP media path attached") && sbc.log().contains("native"),
        "{}",
        sbc.log()
    );
    assert_eq!(sbc.metric_sum("sbc_media_xdp_socket"), 1.0, "{}", sbc.log());

    let Anchored {
        _peers,
        a,
        b,
        toward_pbx,
        toward_carrier,
    } = anchored_call(&h);
    // The SBC's kernel resolved both peers over ARP for the signalling;
    // media then takes the fast path both ways.
    relay_ok(&h, &a, toward_pbx, &b, toward_carrier, 0..30);
    relay_ok(&h, &b, toward_carrier, &a, toward_pbx, 0..30);
    assert_eq!(
        sbc.metric_sum("sbc_media_xdp_received_total"),
        60.0,
        "{}",
        sbc.log()
    );
    assert_eq!(
        sbc.metric_sum("sbc_media_xdp_sent_total"),
        60.0,
        "every packet rewritten and sent by AF_XDP: {}",
        sbc.log()
    );
    assert_eq!(sbc.metric_sum("sbc_media_packets_total"), 60.0);
}
