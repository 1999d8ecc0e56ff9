//! What the sans-IO core exchanges with the I/O layer: messages in, each
//! with the [`Flow`] it came from, and messages out, each with the
//! [`Flow`] it goes to (transport, peer, local socket, connection).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses a dotted-quad IPv4 address, accepting exactly what
/// `Ipv4Addr::from_str` does (four decimal octets of at most 255, no
/// leading zero) in one pass over the bytes, without a UTF-8 check.
pub fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u16;
        while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
            if i - start == 3 {
                return None;
            }
            value = value * 10 + u16::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && s[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == s.len()).then_some(Ipv4Addr::from(octets))
}

/// Parses an IPv4 or IPv6 address as `IpAddr::from_str` does, IPv4 by
/// [`parse_ipv4`].
pub fn parse_ip(s: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(s) {
        return Some(IpAddr::V4(v4));
    }
    std::str::from_utf8(s)
        .ok()?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// A multicast or (IPv4) broadcast address: never a peer's own.
pub fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Index of a local SIP listen address (the order of `sip.listen` in the
/// configuration). Every shard has one socket per listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LocalId(pub u16);

/// A SIP transport (RFC 3261 §18, RFC 7118 for WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// Reliable transports (all of them stream connections here) deliver
    /// in order or fail the connection: the transaction layer does not
    /// retransmit over them (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1), and
    /// responses go back over the connection the request came on.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Secured by TLS: TLS, or WebSocket over TLS.
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// The token in a Via sent-protocol and in `;transport=`.
    pub fn token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The lowercase name used in `;transport=` parameters and in the
    /// configuration.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The `;transport=` parameter a URI reached over this transport
    /// carries (RFC 3261 §19.1.1); none for UDP, the default.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            Transport::Ws => ";transport=ws",
            Transport::Wss => ";transport=wss",
        }
    }

    /// The transport a token names (case-insensitive), as in a Via
    /// sent-protocol or a `;transport=` parameter.
    pub fn from_token(token: &[u8]) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.token().as_bytes().eq_ignore_ascii_case(token))
    }
}

/// Why a stream connection was closed (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClose {
    /// The peer closed it (or reset it).
    Peer,
    /// A receive or send failed.
    Error,
    /// The bytes could not be framed as SIP (garbage, an oversize message,
    /// a missing or bad Content-Length).
    Framing,
    /// No whole message arrived in time after it was opened, or it was
    /// idle too long.
    Timeout,
    /// Refused at once: the shard's or the source's connection limit.
    Limit,
    /// The peer does not read: more output queued than allowed.
    Overflow,
    /// An outgoing connection could not be established.
    ConnectFailed,
    /// The TLS handshake failed, or the TLS records could not be read
    /// (a bad or missing certificate, no common cipher, garbage).
    Handshake,
    /// The SBC stopped.
    Shutdown,
}

impl ConnClose {
    pub const ALL: [ConnClose; 9] = [
        ConnClose::Peer,
        ConnClose::Error,
        ConnClose::Framing,
        ConnClose::Timeout,
        ConnClose::Limit,
        ConnClose::Overflow,
        ConnClose::ConnectFailed,
        ConnClose::Handshake,
        ConnClose::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnClose::Peer => "peer",
            ConnClose::Error => "error",
            ConnClose::Framing => "framing",
            ConnClose::Timeout => "timeout",
            ConnClose::Limit => "limit",
            ConnClose::Overflow => "overflow",
            ConnClose::ConnectFailed => "connect_failed",
            ConnClose::Handshake => "handshake",
            ConnClose::Shutdown => "shutdown",
        }
    }
}

/// A stream connection, named by the I/O layer that owns it (never 0, so
/// `Option<ConnId>` costs nothing in every flow a call keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub std::num::NonZeroU64);

/// Where a message came from or where it goes: the transport, the peer,
/// the local socket, and for stream transports the connection (RFC 5626
/// calls this a flow). Every input carries the flow it arrived on; every
/// output names the flow to send it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    /// The peer's address (the source of an input, the destination of an
    /// output).
    pub remote: SocketAddr,
    /// Our SIP socket (listen address) it arrived on or leaves from.
    pub local: LocalId,
    /// The connection, for stream transports; `None` for UDP, or for a
    /// stream output that may use any (or a new) connection to `remote`.
    pub conn: Option<ConnId>,
}

impl Flow {
    /// A UDP flow between our socket `local` and `remote`.
    pub fn udp(remote: SocketAddr, local: LocalId) -> Self {
        Flow {
            transport: Transport::Udp,
            remote,
            local,
            conn: None,
        }
    }

    /// The same transport and local socket towards another target of the
    /// same peer (a Contact, a route). Over a stream the connection is
    /// kept: requests within a dialog go back over the connection the peer
    /// opened (behind NAT it is the only way in), and `remote` is where a
    /// new one is opened should it be gone.
    pub fn towards(self, remote: SocketAddr) -> Self {
        Flow { remote, ..self }
    }
}

/// A datagram queued by the core, waiting for the I/O layer.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub dest: Flow,
    pub data: Bytes,
}

/// Metadata of a datagram copied into the caller's buffer by `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Flow,
    pub len: usize,
}

/// Queue of datagrams to send, in order. Each is copied into one buffer
/// reused from round to round, so queueing a message allocates nothing and
/// what a transaction keeps for retransmission stays its own (no shared
/// counter per message).
#[derive(Debug, Default)]
pub struct Outbox {
    /// Destination, start in `bytes` and length of each datagram.
    queue: VecDeque<(Flow, usize, usize)>,
    bytes: Vec<u8>,
}

/// Bytes taken by sent datagrams at the front of the buffer, past which
/// they are moved out while some wait (the I/O layer ran out of slots).
const OUTBOX_SLACK: usize = 1 << 20;

impl Outbox {
    pub fn push(&mut self, dest: Flow, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.queue.push_back((dest, start, data.len()));
    }

    /// Where the next datagram goes.
    pub fn front(&self) -> Option<Flow> {
        self.queue.front().map(|&(dest, _, _)| dest)
    }

    /// The next datagram, as a buffer of its own (stream transports queue
    /// it on a connection).
    pub fn pop(&mut self) -> Option<Outgoing> {
        let (dest, start, len) = self.queue.pop_front()?;
        let data = Bytes::copy_from_slice(self.bytes.get(start..start + len).unwrap_or_default());
        self.consumed();
        Some(Outgoing { dest, data })
    }

    /// Forgets the datagrams taken: all at once when none waits, or the
    /// front of the buffer when a backlog has made it large.
    fn consumed(&mut self) {
        match self.queue.front() {
            None => self.bytes.clear(),
            Some(&(_, start, _)) if start >= OUTBOX_SLACK => {
                self.bytes.drain(..start);
                for entry in &mut self.queue {
                    entry.1 -= start;
                }
            }
            Some(_) => {}
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Copies the next datagram into `buf`. A datagram larger than `buf` is
    /// dropped (and reported as `Err` with its size) rather than truncated.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Result<Transmit, usize>> {
        let (dest, start, len) = self.queue.pop_front()?;
        let result = match (buf.get_mut(..len), self.bytes.get(start..start + len)) {
            (Some(dst), Some(src)) => {
                dst.copy_from_slice(src);
                Ok(Transmit { dest, len })
            }
            _ => Err(len),
        };
        self.consumed();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The one-pass IPv4 parse accepts and rejects what std does.
        #[test]
        fn parse_ip_agrees_with_std(s in "[0-9.:a-f]{0,20}") {
            prop_assert_eq!(parse_ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok());
            prop_assert_eq!(parse_ip(s.as_bytes()), s.parse::<IpAddr>().ok());
        }

        #[test]
        fn parse_ipv4_agrees_with_std_on_near_quads(
            parts in proptest::collection::vec("(0|00|01|[1-9][0-9]{0,3}|)", 0..6),
            tail in "(|x| |.)",
        ) {
            let s = parts.join(".") + &tail;
            prop_assert_eq!(parse_ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok());
        }
    }

    #[test]
    fn parse_ip_examples() {
        assert_eq!(parse_ipv4(b"192.0.2.1"), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(parse_ipv4(b"255.255.255.255"), Some(Ipv4Addr::BROADCAST));
        assert_eq!(parse_ipv4(b"0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        for bad in [
            &b"256.0.0.1"[..],
            b"1.2.3",
            b"1.2.3.4.",
            b"01.2.3.4",
            b"1.2.3.4 ",
            b"1..2.3",
            b"1.2.3.0004",
            b"",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_ip(b"2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip(b"::ffff:1.2.3.4"), "::ffff:1.2.3.4".parse().ok());
    }

    fn flow(port: u16) -> Flow {
        Flow::udp(SocketAddr::from(([192, 0, 2, 1], port)), LocalId(0))
    }

    #[test]
    fn the_outbox_gives_back_what_was_queued_in_order_and_refuses_what_does_not_fit() {
        let mut out = Outbox::default();
        out.push(flow(1), b"first");
        out.push(flow(2), b"second, longer");
        out.push(flow(3), b"third");
        assert_eq!(out.front(), Some(flow(1)));
        let mut buf = [0u8; 8];
        let t = out.poll_transmit(&mut buf).unwrap().unwrap();
        assert_eq!((t.dest, &buf[..t.len]), (flow(1), &b"first"[..]));
        assert_eq!(out.poll_transmit(&mut buf), Some(Err(14)), "dropped whole");
        let o = out.pop().unwrap();
        assert_eq!((o.dest, &o.data[..]), (flow(3), &b"third"[..]));
        assert!(out.is_empty() && out.pop().is_none());
        assert!(out.bytes.is_empty(), "an empty outbox keeps no bytes");
    }

    #[test]
    fn a_backlog_moves_what_was_sent_out_of_the_buffer() {
        let mut out = Outbox::default();
        let big = vec![7u8; 1000];
        let mut buf = [0u8; 1000];
        // Never drained: the I/O layer takes one for each two queued.
        for i in 0..4000u16 {
            let mut message = big.clone();
            message[0] = (i % 251) as u8;
            out.push(flow(i), &message);
            if i % 2 == 0 {
                let t = out.poll_transmit(&mut buf).unwrap().unwrap();
                assert_eq!(buf[0], ((t.dest.remote.port()) % 251) as u8);
            }
        }
        assert_eq!(out.len(), 2000);
        assert!(out.bytes.len() <= OUTBOX_SLACK + 2000 * 1000 + 1000);
        let mut expect = 2000u16;
        while let Some(Ok(t)) = out.poll_transmit(&mut buf) {
            assert_eq!(t.dest, flow(expect));
            assert_eq!(buf[0], (expect % 251) as u8);
            expect += 1;
        }
        assert_eq!(expect, 4000);
    }
}
