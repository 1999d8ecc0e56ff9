//! Captures for `play_pcap_audio` / `play_pcap_video` / `play_pcap_image`:
//! the UDP datagrams of a libpcap file with their pacing, read the way
//! SIPp reads them. Each datagram keeps its payload as captured (RTP
//! header included) and its destination port relative to the lowest one
//! in the file, so RTCP (port + 1) goes to the peer's port + 1.

use std::path::Path;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// One datagram to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// When it leaves, µs after the first (gaps where time went backwards
    /// in the capture count as 0, as SIPp's `do_sleep`).
    pub at_us: u64,
    /// Its destination port less the capture's lowest destination port.
    pub port_offset: u16,
    /// The UDP payload (an RTP or RTCP packet, a T.38 UDPTL one...).
    pub payload: Vec<u8>,
}

/// A capture's UDP datagrams, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub packets: Vec<Packet>,
}

/// Link-layer types this reads (pcap LINKTYPE_*).
const LINK_NULL: u32 = 0;
const LINK_ETHERNET: u32 = 1;
const LINK_RAW: u32 = 101;
const LINK_LINUX_SLL: u32 = 113;
const LINK_IPV4: u32 = 228;
const LINK_IPV6: u32 = 229;
const LINK_LINUX_SLL2: u32 = 276;

/// The packets SIPp's `play_dtmf` plays (its `prepare_dtmf`): for
/// `DIGITS[,MS]` (0-9, `*`, `#`, A-D; others skipped; a tone of MS ms,
/// 50 to 2000, else 200), 20 "no-op" RTP packets (payload type 97, four
/// zero bytes, one every 20 ms, sequence numbers stepping by 2 as in
/// SIPp), then per digit RFC 4733 events (payload type 96, volume 10):
/// one every 20 ms while the tone lasts, the first marked, then three
/// end packets 1, 2 and 3 ms after it. The RTP timestamps are SIPp's
/// (24000 + ms). Nothing without a digit.
pub fn dtmf(spec: &[u8], ssrc: u32, first_seq: u16) -> Capture {
    let (digits, tone) = match spec.iter().position(|&b| b == b',') {
        Some(c) => {
            let ms = std::str::from_utf8(&spec[c + 1..])
                .ok()
                .and_then(|t| {
                    let t = t.trim_start();
                    let end = t.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(t.len());
                    t[..end].parse::<u32>().ok()
                })
                .unwrap_or(0);
            (&spec[..c], if (50..=2000).contains(&ms) { ms } else { 200 })
        }
        None => (spec, 200),
    };
    let events: Vec<u8> = digits
        .iter()
        .filter_map(|&d| match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'*' => Some(10),
            b'#' => Some(11),
            b'A'..=b'D' => Some(d - b'A' + 12),
            _ => None,
        })
        .collect();
    let mut packets = Vec::new();
    if events.is_empty() {
        return Capture { packets };
    }
    let rtp = |pt: u8, marker: bool, seq: u16, ts: u32, payload: [u8; 4]| {
        let mut p = Vec::with_capacity(16);
        p.push(0x80);
        p.push(pt | if marker { 0x80 } else { 0 });
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&payload);
        p
    };
    for i in 0..20u16 {
        packets.push(Packet {
            at_us: u64::from(i) * 20_000,
            port_offset: 0,
            payload: rtp(
                97,
                false,
                first_seq.wrapping_add(2 * i),
                24_000 + u32::from(i) * 20,
                [0; 4],
            ),
        });
    }
    let (offset, ts_start) = (400u32, 24_400u32);
    let mut seq = first_seq.wrapping_add(40);
    for (k, &event) in events.iter().enumerate() {
        let k = k as u32;
        let ts = ts_start + k * tone * 2;
        let at = offset + (k + 1) * tone * 2;
        let mut t = 0;
        while t < tone {
            let dur = ((t * 8) as u16).to_be_bytes();
            packets.push(Packet {
                at_us: u64::from(at + t) * 1000,
                port_offset: 0,
                payload: rtp(96, t == 0, seq, ts, [event, 10, dur[0], dur[1]]),
            });
            seq = seq.wrapping_add(1);
            t += 20;
        }
        let dur = ((tone * 8) as u16).to_be_bytes();
        for i in 1..=3 {
            packets.push(Packet {
                at_us: u64::from(at + tone + i) * 1000,
                port_offset: 0,
                payload: rtp(96, false, seq, ts, [event, 0x80 | 10, dur[0], dur[1]]),
            });
            seq = seq.wrapping_add(1);
        }
    }
    Capture { packets }
}

impl Capture {
    /// Reads a capture file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a libpcap file (microsecond or nanosecond timestamps, either
    /// byte order). Packets that are not UDP over IPv4 or IPv6 are skipped;
    /// a truncated packet (captured shorter than it was) is an error, as
    /// in SIPp: its payload would go out cut.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let header = bytes
            .get(..24)
            .ok_or("not a pcap file (shorter than its header)")?;
        let magic = [header[0], header[1], header[2], header[3]];
        let (big, nanos) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                return Err("pcapng is not read: save the capture as pcap".into());
            }
            _ => return Err("not a pcap file (unknown magic number)".into()),
        };
        let u32_at = |b: &[u8], at: usize| -> u32 {
            let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if big {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        let link = u32_at(header, 20) & 0x0fff_ffff;
        if ![
            LINK_NULL,
            LINK_ETHERNET,
            LINK_RAW,
            LINK_LINUX_SLL,
            LINK_IPV4,
            LINK_IPV6,
            LINK_LINUX_SLL2,
        ]
        .contains(&link)
        {
            return Err(format!(
                "link type {link} is not read (Ethernet, Linux cooked, raw IP or loopback captures are)"
            ));
        }
        let mut packets: Vec<(u64, u16, Vec<u8>)> = Vec::new();
        let mut rest = &bytes[24..];
        let mut n = 0usize;
        while !rest.is_empty() {
            n += 1;
            let rec = rest
                .get(..16)
                .ok_or_else(|| format!("packet {n}: record header cut short"))?;
            let (secs, frac) = (u64::from(u32_at(rec, 0)), u64::from(u32_at(rec, 4)));
            let caplen = u32_at(rec, 8) as usize;
            let len = u32_at(rec, 12) as usize;
            let data = rest
                .get(16..16 + caplen)
                .ok_or_else(|| format!("packet {n}: data cut short"))?;
            rest = &rest[16 + caplen..];
            if caplen != len {
                return Err(format!(
                    "packet {n} was captured truncated ({caplen} of {len} bytes): capture with -s0"
                ));
            }
            let ts = secs * 1_000_000 + if nanos { frac / 1000 } else { frac };
            if let Some((dport, payload)) = udp_of(link, data) {
                packets.push((ts, dport, payload.to_vec()));
            }
        }
        let base = packets.iter().map(|p| p.1).min().unwrap_or(0);
        // Each gap forward in capture time is slept; a step back is not.
        let mut at = 0u64;
        let mut last: Option<u64> = None;
        let packets = packets
            .into_iter()
            .map(|(ts, dport, payload)| {
                if let Some(l) = last
                    && ts > l
                {
                    at += ts - l;
                }
                last = Some(ts);
                Packet {
                    at_us: at,
                    port_offset: dport - base,
                    payload,
                }
            })
            .collect();
        Ok(Capture { packets })
    }

    /// How long the capture plays, µs.
    pub fn duration_us(&self) -> u64 {
        self.packets.last().map_or(0, |p| p.at_us)
    }
}

/// The destination port and payload of a UDP datagram in a captured frame
/// (`None`: not UDP over IP).
fn udp_of(link: u32, frame: &[u8]) -> Option<(u16, &[u8])> {
    let sliced = match link {
        LINK_ETHERNET => SlicedPacket::from_ethernet(frame),
        LINK_RAW | LINK_IPV4 | LINK_IPV6 => SlicedPacket::from_ip(frame),
        LINK_LINUX_SLL => SlicedPacket::from_linux_sll(frame),
        // BSD loopback: a 4-byte address family in host order, then IP.
        LINK_NULL => match frame.get(4..) {
            Some(ip) => SlicedPacket::from_ip(ip),
            None => return None,
        },
        // SLL2: a 20-byte header whose first two bytes are the protocol.
        LINK_LINUX_SLL2 => match frame.get(20..) {
            Some(ip) => SlicedPacket::from_ip(ip),
            None => return None,
        },
        _ => return None,
    };
    let p = sliced.ok()?;
    if !matches!(p.net, Some(NetSlice::Ipv4(_) | NetSlice::Ipv6(_))) {
        return None;
    }
    match p.transport {
        Some(TransportSlice::Udp(u)) => Some((u.destination_port(), u.payload())),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dtmf_is_made_as_sipp_makes_it() {
        assert!(dtmf(b"xyz", 7, 1200).packets.is_empty());
        // "1#" with 100 ms tones (a 40 ms tone would be 200 ms).
        let c = dtmf(b"1x#,100", 0xdead_beef, 1200);
        let n = |i: usize| &c.packets[i];
        // 20 no-ops, then per digit 5 tone packets and 3 ends.
        assert_eq!(c.packets.len(), 20 + 2 * (5 + 3));
        let seq = |i: usize| u16::from_be_bytes([n(i).payload[2], n(i).payload[3]]);
        let ts = |i: usize| u32::from_be_bytes(n(i).payload[4..8].try_into().unwrap());
        assert_eq!(
            (n(0).payload[1], seq(0), ts(0), n(0).at_us),
            (97, 1200, 24_000, 0)
        );
        assert_eq!((seq(19), ts(19), n(19).at_us), (1238, 24_380, 380_000));
        assert_eq!(&n(0).payload[8..12], &0xdead_beef_u32.to_be_bytes());
        assert_eq!(&n(0).payload[12..], &[0, 0, 0, 0]);
        // Digit 1: marked first packet at 400 + 200 ms, volume 10.
        assert_eq!(
            (n(20).payload[1], seq(20), ts(20), n(20).at_us),
            (0x80 | 96, 1240, 24_400, 600_000)
        );
        assert_eq!(&n(20).payload[12..], &[1, 10, 0, 0]);
        assert_eq!((n(21).payload[1], n(21).at_us), (96, 620_000));
        assert_eq!(&n(21).payload[12..], &[1, 10, 0, 160]);
        // Its ends: E set, the whole duration, 1-3 ms after the tone.
        assert_eq!((seq(25), ts(25), n(25).at_us), (1245, 24_400, 701_000));
        assert_eq!(&n(27).payload[12..], &[1, 0x80 | 10, 3, 32]);
        assert_eq!(n(27).at_us, 703_000);
        // "#" (11): 200 ms later in both clocks.
        assert_eq!((seq(28), ts(28), n(28).at_us), (1248, 24_600, 800_000));
        assert_eq!(n(28).payload[12], 11);
        assert!(c.packets.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        // Out of range tone lengths are 200 ms.
        assert_eq!(dtmf(b"5,20", 1, 0).packets.len(), 20 + 10 + 3);
    }

    /// A pcap file (little-endian, µs) of Ethernet frames: each entry is
    /// (seconds, microseconds, UDP destination port, payload).
    pub(crate) fn ethernet_pcap(packets: &[(u32, u32, u16, &[u8])]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        for &(s, us, dport, payload) in packets {
            let mut frame = Vec::new();
            etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 1, 3, 143], [10, 1, 6, 18], 64)
                .udp(5000, dport)
                .write(&mut frame, payload)
                .unwrap();
            f.extend_from_slice(&s.to_le_bytes());
            f.extend_from_slice(&us.to_le_bytes());
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(&frame);
        }
        f
    }

    #[test]
    fn udp_payloads_keep_their_pacing_and_port_offsets() {
        let file = ethernet_pcap(&[
            (10, 0, 2006, b"rtp-1"),
            (10, 20_000, 2006, b"rtp-2"),
            (10, 30_000, 2007, b"rtcp"),
            // Back in time: sent at once.
            (10, 25_000, 2006, b"rtp-3"),
            (11, 0, 2006, b"rtp-4"),
        ]);
        let c = Capture::parse(&file).unwrap();
        let got: Vec<(u64, u16, &[u8])> = c
            .packets
            .iter()
            .map(|p| (p.at_us, p.port_offset, p.payload.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, &b"rtp-1"[..]),
                (20_000, 0, b"rtp-2"),
                (30_000, 1, b"rtcp"),
                (30_000, 0, b"rtp-3"),
                (1_005_000, 0, b"rtp-4"),
            ]
        );
        assert_eq!(c.duration_us(), 1_005_000);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert!(Capture::parse(b"short").unwrap_err().contains("header"));
        assert!(
            Capture::parse(&[0u8; 24])
                .unwrap_err()
                .contains("magic number")
        );
        let mut cut = ethernet_pcap(&[(1, 0, 4000, b"abc")]);
        cut.truncate(cut.len() - 2);
        assert!(Capture::parse(&cut).unwrap_err().contains("cut short"));
        // Captured shorter than on the wire.
        let mut trunc = ethernet_pcap(&[(1, 0, 4000, b"abc")]);
        trunc[24 + 12] += 1;
        assert!(Capture::parse(&trunc).unwrap_err().contains("truncated"));
        let mut linktype = ethernet_pcap(&[]);
        linktype[20] = 105;
        assert!(
            Capture::parse(&linktype)
                .unwrap_err()
                .contains("link type 105")
        );
    }

    #[test]
    fn nanosecond_big_endian_captures_are_read() {
        // One raw-IP packet, nanosecond timestamps, big-endian header.
        let mut f = vec![0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&101u32.to_be_bytes());
        for (s, ns) in [(5u32, 0u32), (5, 20_000_000)] {
            let mut ip = Vec::new();
            etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
                .udp(1, 7078)
                .write(&mut ip, b"x")
                .unwrap();
            f.extend_from_slice(&s.to_be_bytes());
            f.extend_from_slice(&ns.to_be_bytes());
            f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
            f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
            f.extend_from_slice(&ip);
        }
        let c = Capture::parse(&f).unwrap();
        assert_eq!(c.packets.len(), 2);
        assert_eq!(c.packets[1].at_us, 20_000);
    }

    #[test]
    fn non_udp_frames_are_skipped() {
        let mut f = ethernet_pcap(&[(1, 0, 4000, b"rtp")]);
        // An ARP frame.
        let arp = [[0xff; 6].as_slice(), &[2; 6], &[0x08, 0x06], &[0; 28]].concat();
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&5u32.to_le_bytes());
        f.extend_from_slice(&(arp.len() as u32).to_le_bytes());
        f.extend_from_slice(&(arp.len() as u32).to_le_bytes());
        f.extend_from_slice(&arp);
        let c = Capture::parse(&f).unwrap();
        assert_eq!(c.packets.len(), 1);
    }
}
