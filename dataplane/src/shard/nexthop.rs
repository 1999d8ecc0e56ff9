//! Next hops of the AF_XDP path, from the kernel's own tables: a route
//! lookup (RTM_GETROUTE, so policy routing and every table count) says
//! whether a destination is reached through the XDP interface and via
//! which gateway; the neighbour table (RTM_GETNEIGH) gives that hop's MAC.
//! Nothing is learned from received frames, so a spoofed frame cannot
//! redirect media. A destination reached another way, or whose neighbour
//! is not resolved, is relayed through the UDP sockets, which also has the
//! kernel resolve it.
//!
//! Answers are kept for [`FRESH`] (misses for [`RETRY`]); when an answer
//! expires, that one packet goes through the socket (so the kernel keeps
//! checking the neighbour, which our own frames bypass) and the tables are
//! read again.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long a resolved next hop is used before it is checked again.
pub const FRESH: Duration = Duration::from_secs(5);
/// How long an unresolved destination stays on the socket path.
pub const RETRY: Duration = Duration::from_secs(1);
/// Destinations remembered per shard (all forgotten when full).
const MAX_ENTRIES: usize = 65_536;

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const IFLA_ADDRESS: u16 = 1;
/// NUD_PERMANENT | NOARP | REACHABLE | PROBE | STALE | DELAY.
const NUD_VALID: u16 = 0x80 | 0x40 | 0x02 | 0x10 | 0x04 | 0x08;
/// Hardware types the frame layout fits.
pub const ARPHRD_ETHER: u16 = 1;
pub const ARPHRD_LOOPBACK: u16 = 772;

/// What a cache lookup says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Send through AF_XDP with this destination MAC.
    Hop([u8; 6]),
    /// Known unreachable through the interface (for now): use the socket.
    Socket,
    /// Not known, or expired: use the socket for this packet and resolve.
    Resolve,
}

/// The answers, by destination, with their expiry (sans-IO: explicit time).
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<Ipv4Addr, (Option<[u8; 6]>, Instant)>,
}

impl Cache {
    pub fn lookup(&self, now: Instant, dst: Ipv4Addr) -> Lookup {
        match self.entries.get(&dst) {
            Some(&(_, until)) if until <= now => Lookup::Resolve,
            Some(&(Some(mac), _)) => Lookup::Hop(mac),
            Some(&(None, _)) => Lookup::Socket,
            None => Lookup::Resolve,
        }
    }

    pub fn store(&mut self, now: Instant, dst: Ipv4Addr, mac: Option<[u8; 6]>) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&dst) {
            self.entries.clear();
        }
        let ttl = if mac.is_some() { FRESH } else { RETRY };
        self.entries.insert(dst, (mac, now + ttl));
    }

    /// Whether `dst` has never been looked up (its first packet need not
    /// take the socket when the tables answer at once).
    pub fn is_new(&self, dst: Ipv4Addr) -> bool {
        !self.entries.contains_key(&dst)
    }
}

/// The kernel's answer for a route lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

/// The XDP interface as the kernel describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub hw_type: u16,
    pub mac: [u8; 6],
}

/// A route netlink socket for the shard's lookups.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW.cloexec(),
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        // A lookup never holds a shard up for long.
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// Sends one request and returns the payload of its answer (`type`,
    /// body), or the kernel's error.
    fn ask(&mut self, msg_type: u16, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = 16 + body.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        req.extend_from_slice(&msg_type.to_ne_bytes());
        req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(body);
        self.sock.send(&req)?;
        // Skip answers to earlier requests that timed out.
        for _ in 0..8 {
            let n = (&self.sock).read(&mut self.buf)?;
            if let Some(answer) = answer_for(&self.buf[..n.min(self.buf.len())], seq) {
                return answer;
            }
        }
        Err(io::Error::other("no netlink answer"))
    }

    /// The interface's hardware type and address.
    pub fn link(&mut self, ifindex: u32) -> io::Result<Link> {
        let mut body = [0u8; 16];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let (t, reply) = self.ask(RTM_GETLINK, &body)?;
        parse_link(t, &reply).ok_or_else(|| io::Error::other("unreadable RTM_NEWLINK"))
    }

    /// The kernel's route to `dst`.
    pub fn route(&mut self, dst: Ipv4Addr) -> io::Result<Route> {
        let mut body = Vec::with_capacity(20);
        // rtmsg: AF_INET, /32, the rest zero.
        body.extend_from_slice(&[libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut body, RTA_DST, &dst.octets());
        let (t, reply) = self.ask(RTM_GETROUTE, &body)?;
        parse_route(t, &reply).ok_or_else(|| io::Error::other("unreadable RTM_NEWROUTE"))
    }

    /// The MAC of neighbour `hop` on `ifindex`, when the kernel has a
    /// usable entry.
    pub fn neighbour(&mut self, ifindex: u32, hop: Ipv4Addr) -> io::Result<Option<[u8; 6]>> {
        let mut body = Vec::with_capacity(20);
        // ndmsg: AF_INET, padding, ifindex, state, flags, type.
        body.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]);
        push_attr(&mut body, NDA_DST, &hop.octets());
        match self.ask(RTM_GETNEIGH, &body) {
            Ok((t, reply)) => Ok(parse_neighbour(t, &reply)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next hop MAC for `dst` when it is reached through `ifindex`
    /// (on a loopback interface, any MAC does: zeros).
    pub fn resolve(&mut self, ifindex: u32, link: Link, dst: Ipv4Addr) -> Option<[u8; 6]> {
        let route = self.route(dst).ok()?;
        if route.oif != Some(ifindex) {
            return None;
        }
        if link.hw_type == ARPHRD_LOOPBACK {
            return Some([0; 6]);
        }
        self.neighbour(ifindex, route.gateway.unwrap_or(dst))
            .ok()
            .flatten()
    }
}

fn push_attr(body: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    body.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(data);
    body.resize(body.len() + (4 - len % 4) % 4, 0);
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Among the netlink messages in one datagram, the answer to `seq`: its
/// type and body, or the error it reports. `None` when none answers it.
fn answer_for(mut d: &[u8], seq: u32) -> Option<io::Result<(u16, Vec<u8>)>> {
    while d.len() >= 16 {
        let len = usize::try_from(u32_at(d, 0)?).ok()?;
        if len < 16 || len > d.len() {
            return None;
        }
        let (t, s) = (u16_at(d, 4)?, u32_at(d, 8)?);
        let body = &d[16..len];
        if s == seq {
            if t == NLMSG_ERROR {
                let code = i32::from_ne_bytes(body.get(..4)?.try_into().ok()?);
                return Some(Err(if code < 0 {
                    io::Error::from_raw_os_error(-code)
                } else {
                    io::Error::other("netlink acknowledgement without an answer")
                }));
            }
            return Some(Ok((t, body.to_vec())));
        }
        d = d.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// The attributes after a fixed header of `skip` bytes: (type, data).
fn attrs(body: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut d = body.get(skip..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(d, 0)?);
        let kind = u16_at(d, 2)? & 0x3fff;
        if len < 4 || len > d.len() {
            return None;
        }
        let data = &d[4..len];
        d = d.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, data))
    })
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = data.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

fn parse_route(t: u16, body: &[u8]) -> Option<Route> {
    if t != RTM_NEWROUTE || body.len() < 12 {
        return None;
    }
    let mut r = Route {
        oif: None,
        gateway: None,
    };
    for (kind, data) in attrs(body, 12) {
        match kind {
            RTA_OIF => r.oif = u32_at(data, 0),
            RTA_GATEWAY => r.gateway = ipv4(data),
            _ => {}
        }
    }
    Some(r)
}

fn parse_neighbour(t: u16, body: &[u8]) -> Option<[u8; 6]> {
    if t != RTM_NEWNEIGH || u16_at(body, 8)? & NUD_VALID == 0 {
        return None;
    }
    attrs(body, 12)
        .find(|(k, _)| *k == NDA_LLADDR)
        .and_then(|(_, d)| d.try_into().ok())
}

fn parse_link(t: u16, body: &[u8]) -> Option<Link> {
    if t != RTM_NEWLINK {
        return None;
    }
    let hw_type = u16_at(body, 2)?;
    let mac = attrs(body, 16)
        .find(|(k, _)| *k == IFLA_ADDRESS)
        .and_then(|(_, d)| d.try_into().ok())
        .unwrap_or([0; 6]);
    Some(Link { hw_type, mac })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn message(t: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn cache_answers_until_expiry_then_asks_again() {
        let t0 = Instant::now();
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let other = Ipv4Addr::new(192, 0, 2, 2);
        let mut c = Cache::default();
        assert!(c.is_new(ip));
        assert_eq!(c.lookup(t0, ip), Lookup::Resolve);
        c.store(t0, ip, Some([1, 2, 3, 4, 5, 6]));
        c.store(t0, other, None);
        assert!(!c.is_new(ip));
        assert_eq!(
            c.lookup(t0 + FRESH / 2, ip),
            Lookup::Hop([1, 2, 3, 4, 5, 6])
        );
        assert_eq!(c.lookup(t0 + FRESH, ip), Lookup::Resolve, "expired");
        assert_eq!(c.lookup(t0, other), Lookup::Socket);
        assert_eq!(c.lookup(t0 + RETRY, other), Lookup::Resolve, "retried");
    }

    #[test]
    fn route_reply_gives_interface_and_gateway() {
        let mut body = vec![2, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        push_attr(&mut body, 15, &254u32.to_ne_bytes()); // RTA_TABLE
        push_attr(&mut body, RTA_DST, &[198, 51, 100, 7]);
        push_attr(&mut body, RTA_OIF, &3u32.to_ne_bytes());
        push_attr(&mut body, RTA_GATEWAY, &[192, 0, 2, 254]);
        let mut d = message(3, 6, b"noise");
        d.resize(d.len().next_multiple_of(4), 0);
        d.extend(message(RTM_NEWROUTE, 7, &body));
        let (t, b) = answer_for(&d, 7).unwrap().unwrap();
        assert_eq!(
            parse_route(t, &b),
            Some(Route {
                oif: Some(3),
                gateway: Some(Ipv4Addr::new(192, 0, 2, 254))
            })
        );
        assert!(answer_for(&d, 8).is_none(), "no answer to another request");
    }

    #[test]
    fn errors_and_unusable_neighbours() {
        let d = message(NLMSG_ERROR, 1, &(-libc::ENOENT).to_ne_bytes());
        let e = answer_for(&d, 1).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let neighbour = |state: u16| {
            let mut body = vec![2, 0, 0, 0, 3, 0, 0, 0];
            body.extend_from_slice(&state.to_ne_bytes());
            body.extend_from_slice(&[0, 1]);
            push_attr(&mut body, NDA_DST, &[192, 0, 2, 254]);
            push_attr(&mut body, NDA_LLADDR, &[2, 0, 0, 0, 0, 9]);
            body
        };
        assert_eq!(
            parse_neighbour(RTM_NEWNEIGH, &neighbour(0x02)),
            Some([2, 0, 0, 0, 0, 9]),
            "reachable"
        );
        assert!(
            parse_neighbour(RTM_NEWNEIGH, &neighbour(0x04)).is_some(),
            "stale"
        );
        assert_eq!(
            parse_neighbour(RTM_NEWNEIGH, &neighbour(0x01)),
            None,
            "incomplete"
        );
        assert_eq!(
            parse_neighbour(RTM_NEWNEIGH, &neighbour(0x20)),
            None,
            "failed"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let d: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = answer_for(&d, 1);
            let _ = parse_route(RTM_NEWROUTE, &d);
            let _ = parse_neighbour(RTM_NEWNEIGH, &d);
            let _ = parse_link(RTM_NEWLINK, &d);
        }
    }

    #[test]
    fn the_kernel_routes_loopback_through_lo() {
        // Live: no privileges needed for lookups.
        let mut nl = Netlink::open().unwrap();
        let lo = 1;
        let link = nl.link(lo).unwrap();
        assert_eq!(link.hw_type, ARPHRD_LOOPBACK);
        let route = nl.route(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(route.oif, Some(lo));
        assert_eq!(nl.resolve(lo, link, Ipv4Addr::LOCALHOST), Some([0; 6]));
        assert_eq!(
            nl.resolve(lo + 1000, link, Ipv4Addr::LOCALHOST),
            None,
            "not through that interface"
        );
    }
}
