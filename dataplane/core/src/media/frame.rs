//! Ethernet frames of the AF_XDP media path: reading an IPv4/UDP frame the
//! XDP program handed over, and rewriting it in place into the frame the
//! relay sends on (new addresses, ports and MACs, same payload), so a
//! relayed packet is never copied.
//!
//! Only the layout the XDP program lets through is accepted: Ethernet II
//! without VLAN tags, IPv4 without options, not fragmented, UDP. Anything
//! else is refused here too (the program and this check are independent).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Ethernet + IPv4 + UDP headers.
pub const HEADERS: usize = ETH_LEN + IP_LEN + UDP_LEN;
const IP: usize = ETH_LEN;
const UDP: usize = ETH_LEN + IP_LEN;
/// TTL of relayed packets (what the kernel's sockets use by default).
const TTL: u8 = 64;

/// What the relay needs of a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Where the UDP payload lies in the frame.
    pub payload: Range<usize>,
}

/// Reads an Ethernet II / IPv4 (no options, not fragmented) / UDP frame.
/// `None` for anything else or when the lengths do not add up.
pub fn parse(frame: &[u8]) -> Option<UdpFrame> {
    let h = frame.get(..HEADERS)?;
    if h[12..14] != [0x08, 0x00] || h[IP] != 0x45 || h[IP + 9] != 17 {
        return None;
    }
    // More-fragments flag or a fragment offset: not a whole datagram.
    if u16::from_be_bytes([h[IP + 6], h[IP + 7]]) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[IP + 2], h[IP + 3]]));
    let udp_len = usize::from(u16::from_be_bytes([h[UDP + 4], h[UDP + 5]]));
    // The IP datagram fits the frame (which may carry Ethernet padding
    // after it) and the UDP datagram fills the IP payload exactly.
    if total > frame.len() - ETH_LEN || udp_len < UDP_LEN || udp_len != total.checked_sub(IP_LEN)? {
        return None;
    }
    Some(UdpFrame {
        src: SocketAddrV4::new(ip_at(h, IP + 12), u16::from_be_bytes([h[UDP], h[UDP + 1]])),
        dst: SocketAddrV4::new(
            ip_at(h, IP + 16),
            u16::from_be_bytes([h[UDP + 2], h[UDP + 3]]),
        ),
        payload: HEADERS..ETH_LEN + total,
    })
}

fn ip_at(h: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(h[at], h[at + 1], h[at + 2], h[at + 3])
}

/// Turns a frame [`parse`] accepted into the frame that relays its payload
/// from `src` to `dst`, from our interface's `macs.0` to the next hop
/// `macs.1`: the TTL and the DSCP/ECN byte are reset (as the relay's
/// sockets send: the peer's marking does not cross the SBC), and both
/// checksums are computed afresh. (Not updated from the
/// received ones: a frame from a local sender, in generic mode, carries
/// only the partial UDP checksum the sender left to checksum offload.)
/// `false`, with the frame untouched, when it is not a frame `parse`
/// accepts.
pub fn rewrite(
    frame: &mut [u8],
    macs: ([u8; 6], [u8; 6]),
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> bool {
    match parse(frame) {
        Some(parsed) => rewrite_parsed(frame, &parsed, macs, src, dst),
        None => false,
    }
}

/// [`rewrite`] for a frame already read by [`parse`] (`parsed`), so the
/// relay reads each frame once. `false`, with the frame untouched, when
/// the frame is shorter than `parsed` says.
pub fn rewrite_parsed(
    frame: &mut [u8],
    parsed: &UdpFrame,
    macs: ([u8; 6], [u8; 6]),
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> bool {
    let end = parsed.payload.end;
    if frame.len() < end.max(HEADERS) {
        return false;
    }
    let h = &mut frame[..HEADERS];
    h[0..6].copy_from_slice(&macs.1);
    h[6..12].copy_from_slice(&macs.0);
    h[IP + 1] = 0;
    h[IP + 12..IP + 16].copy_from_slice(&src.ip().octets());
    h[IP + 16..IP + 20].copy_from_slice(&dst.ip().octets());
    h[UDP..UDP + 2].copy_from_slice(&src.port().to_be_bytes());
    h[UDP + 2..UDP + 4].copy_from_slice(&dst.port().to_be_bytes());
    h[UDP + 6] = 0;
    h[UDP + 7] = 0;
    // Pseudo-header (addresses, protocol, UDP length), then the datagram.
    let udp = &frame[UDP..end];
    let pseudo = sum_words(&frame[IP + 12..IP + 20]) + 17 + udp.len() as u32;
    let udp_sum = match !fold(u64::from(pseudo) + sum_bytes(udp)) {
        0 => 0xffff,
        c => c,
    };
    let h = &mut frame[..HEADERS];
    h[UDP + 6..UDP + 8].copy_from_slice(&udp_sum.to_be_bytes());

    h[IP + 8] = TTL;
    h[IP + 10] = 0;
    h[IP + 11] = 0;
    let ip_sum = !fold(u64::from(sum_words(&h[IP..IP + IP_LEN])));
    h[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
    true
}

/// One's-complement sum of big-endian 16-bit words (an even length).
fn sum_words(b: &[u8]) -> u32 {
    b.chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum()
}

/// The one's-complement sum of `b` as big-endian 16-bit words (an odd
/// last byte padded with zero), eight bytes at a time, not yet folded.
fn sum_bytes(b: &[u8]) -> u64 {
    let mut chunks = b.chunks_exact(8);
    let mut sum: u64 = 0;
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add the two 32-bit halves (carries stay in the upper bits).
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p.get(1).copied().unwrap_or(0)]));
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(sum).unwrap_or(0xffff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const US: [u8; 6] = [2, 0, 0, 0, 0, 0x5];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    /// A frame built by etherparse (an independent encoder).
    fn frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(A, US)
            .ipv4(src.ip().octets(), dst.ip().octets(), 57)
            .udp(src.port(), dst.port());
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out[15] = 0xb8; // EF, as a peer may mark it
        let sum = etherparse::Ipv4HeaderSlice::from_slice(&out[14..34])
            .unwrap()
            .to_header()
            .calc_header_checksum();
        out[24..26].copy_from_slice(&sum.to_be_bytes());
        out
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// Checks a frame with etherparse: both checksums right, and returns
    /// (macs, source, destination, ttl, payload).
    fn check(f: &[u8]) -> ([u8; 6], [u8; 6], SocketAddrV4, SocketAddrV4, u8, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("not ethernet")
        };
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not ipv4")
        };
        let Some(TransportSlice::Udp(udp)) = p.transport else {
            panic!("not udp")
        };
        let iph = ip.header().to_header();
        assert_eq!(
            iph.header_checksum,
            iph.calc_header_checksum(),
            "IPv4 checksum"
        );
        let udph = udp.to_header();
        if udph.checksum != 0 {
            assert_eq!(
                udph.checksum,
                udph.calc_checksum_ipv4(&iph, udp.payload()).unwrap(),
                "UDP checksum"
            );
        }
        (
            eth.source(),
            eth.destination(),
            SocketAddrV4::new(iph.source.into(), udph.source_port),
            SocketAddrV4::new(iph.destination.into(), udph.destination_port),
            iph.time_to_live,
            udp.payload().to_vec(),
        )
    }

    #[test]
    fn parses_what_etherparse_builds() {
        let f = frame(addr("192.0.2.7:4000"), addr("198.51.100.1:30000"), b"rtp!");
        let p = parse(&f).unwrap();
        assert_eq!(p.src, addr("192.0.2.7:4000"));
        assert_eq!(p.dst, addr("198.51.100.1:30000"));
        assert_eq!(&f[p.payload], b"rtp!");
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = frame(addr("192.0.2.7:4000"), addr("198.51.100.1:30000"), b"x");
        f.resize(60, 0);
        let p = parse(&f).unwrap();
        assert_eq!(&f[p.payload], b"x");
    }

    #[test]
    fn refuses_other_layouts() {
        let good = frame(addr("192.0.2.7:4000"), addr("198.51.100.1:30000"), b"abcd");
        type Spoil = fn(&mut Vec<u8>);
        let cases: [(&str, Spoil); 7] = [
            ("IPv6 ethertype", |f| {
                f[12..14].copy_from_slice(&[0x86, 0xdd])
            }),
            ("IP options", |f| f[14] = 0x46),
            ("TCP", |f| f[23] = 6),
            ("more fragments", |f| f[20] |= 0x20),
            ("fragment offset", |f| f[21] = 1),
            ("total length past the frame", |f| f[17] += 1),
            ("UDP length short of the IP payload", |f| f[39] -= 1),
        ];
        for (what, spoil) in cases {
            let mut f = good.clone();
            spoil(&mut f);
            assert_eq!(parse(&f), None, "{what}");
        }
        assert_eq!(parse(&good[..HEADERS - 1]), None, "truncated");
    }

    #[test]
    fn rewrite_gives_a_valid_frame_to_the_new_peer() {
        let mut f = frame(
            addr("192.0.2.7:4000"),
            addr("198.51.100.1:30000"),
            &[0x80; 160],
        );
        assert!(rewrite(
            &mut f,
            (US, B),
            addr("198.51.100.1:30002"),
            addr("203.0.113.9:5004"),
        ));
        let (src_mac, dst_mac, src, dst, ttl, payload) = check(&f);
        assert_eq!((src_mac, dst_mac), (US, B));
        assert_eq!(
            (src, dst),
            (addr("198.51.100.1:30002"), addr("203.0.113.9:5004"))
        );
        assert_eq!(ttl, TTL);
        assert_eq!(f[15], 0, "DSCP and ECN reset");
        assert_eq!(payload, vec![0x80; 160]);
    }

    #[test]
    fn a_received_partial_checksum_does_not_matter() {
        // As a local sender leaves it for checksum offload: garbage here.
        let mut f = frame(
            addr("192.0.2.7:4000"),
            addr("198.51.100.1:30000"),
            b"abcdefg",
        );
        f[40] = 0x12;
        f[41] = 0x34;
        assert!(rewrite(
            &mut f,
            (US, B),
            addr("198.51.100.1:30002"),
            addr("203.0.113.9:5004"),
        ));
        assert_ne!(&f[40..42], &[0, 0], "a checksum is sent");
        check(&f);
    }

    #[test]
    fn rewrite_refuses_what_parse_refuses() {
        let mut f = vec![0u8; HEADERS - 1];
        assert!(!rewrite(
            &mut f,
            (US, B),
            addr("1.2.3.4:5"),
            addr("5.6.7.8:9")
        ));
        assert!(f.iter().all(|&b| b == 0));
        let mut f = frame(addr("192.0.2.7:4000"), addr("198.51.100.1:30000"), b"abcd");
        f[23] = 6;
        let before = f.clone();
        assert!(!rewrite(
            &mut f,
            (US, B),
            addr("1.2.3.4:5"),
            addr("5.6.7.8:9")
        ));
        assert_eq!(f, before);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_agrees_with_etherparse(bytes in proptest::collection::vec(any::<u8>(), 42..100), fix in any::<bool>()) {
            let mut f = bytes;
            if fix {
                // Mostly-valid headers, so the accepting paths are reached.
                f[12] = 0x08; f[13] = 0; f[14] = 0x45; f[23] = 17; f[20] &= 0x40; f[21] = 0;
                let total = u16::try_from(f.len() - 14).unwrap();
                f[16..18].copy_from_slice(&total.to_be_bytes());
                f[38..40].copy_from_slice(&(total - 20).to_be_bytes());
            }
            if let Some(p) = parse(&f) {
                let s = SlicedPacket::from_ethernet(&f).unwrap();
                let Some(TransportSlice::Udp(udp)) = s.transport else { panic!("not udp") };
                prop_assert_eq!(udp.payload(), &f[p.payload]);
            }
        }

        #[test]
        fn rewritten_checksums_are_right(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), c in any::<[u8; 4]>(), d in any::<[u8; 4]>(),
            ports in any::<[u16; 4]>(),
        ) {
            let from = SocketAddrV4::new(a.into(), ports[0]);
            let us = SocketAddrV4::new(b.into(), ports[1]);
            let mut f = frame(from, us, &payload);
            let (out_src, out_dst) = (SocketAddrV4::new(c.into(), ports[2]), SocketAddrV4::new(d.into(), ports[3]));
            prop_assert!(parse(&f).is_some());
            prop_assert!(rewrite(&mut f, (US, B), out_src, out_dst));
            let (_, _, src, dst, _, body) = check(&f);
            prop_assert_eq!((src, dst), (out_src, out_dst));
            prop_assert_eq!(body, payload);
        }
    }
}
