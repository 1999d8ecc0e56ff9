//! SIP sockets: one UDP socket (or TCP listener) per shard and listen
//! address, all bound to the same address with SO_REUSEPORT so the kernel
//! spreads flows (connections) over the shards.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A socket for `addr`'s family (IPv6 only for an IPv6 address) that
/// every shard may bind to `addr` (SO_REUSEPORT), not bound yet.
fn reuseport(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Opens a reuse-port UDP socket bound to `addr`.
pub fn reuseport_udp(addr: SocketAddr, rcvbuf: usize) -> io::Result<UdpSocket> {
    let socket = reuseport(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: a larger receive buffer absorbs bursts (capped by
    // net.core.rmem_max).
    let _ = socket.set_recv_buffer_size(rcvbuf);
    let _ = socket.set_send_buffer_size(rcvbuf);
    // Best effort: the kernel's receive time of each datagram tells the
    // overload control how long requests waited in the queue.
    let _ = set_receive_timestamps(&socket);
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind SIP UDP {addr}: {e}")))?;
    Ok(socket.into())
}

/// SO_TIMESTAMPNS: each datagram comes with the time the kernel received
/// it (CLOCK_REALTIME), as SCM_TIMESTAMPNS control data ([`received_at`]).
#[allow(unsafe_code)]
fn set_receive_timestamps(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and `on` is a c_int that lives
    // across the call, whose size is passed as the option length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Control space a received datagram's timestamp takes (CMSG_SPACE of a
/// timespec on 64-bit Linux: a 16-byte header and 16 bytes of data).
pub const TIMESTAMP_CONTROL: usize = 32;

/// The kernel's receive time in `control` (the control data of a
/// received message), when it holds SCM_TIMESTAMPNS. Parsed from the
/// bytes (cmsghdr: length, level, type, then the timespec), no pointers.
pub fn received_at(control: &[u8]) -> Option<std::time::SystemTime> {
    let word = std::mem::size_of::<usize>();
    let mut rest = control;
    while rest.len() >= word + 8 {
        let len = usize::from_ne_bytes(rest.get(..word)?.try_into().ok()?);
        let level = i32::from_ne_bytes(rest.get(word..word + 4)?.try_into().ok()?);
        let ty = i32::from_ne_bytes(rest.get(word + 4..word + 8)?.try_into().ok()?);
        if len < word + 8 {
            return None;
        }
        let data = rest.get(word + 8..len)?;
        if level == libc::SOL_SOCKET && ty == libc::SCM_TIMESTAMPNS && data.len() >= 16 {
            let secs = i64::from_ne_bytes(data.get(..8)?.try_into().ok()?);
            let nanos = i64::from_ne_bytes(data.get(8..16)?.try_into().ok()?);
            let since =
                std::time::Duration::new(u64::try_from(secs).ok()?, u32::try_from(nanos).ok()?);
            return std::time::UNIX_EPOCH.checked_add(since);
        }
        // Next header, aligned to a word.
        let next = len.div_ceil(word) * word;
        rest = rest.get(next..)?;
    }
    None
}

/// Opens a reuse-port TCP listener on `addr`.
pub fn reuseport_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = reuseport(addr, Type::STREAM, Protocol::TCP)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind SIP TCP {addr}: {e}")))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Opens the UDP socket of one media port (plain bind: each port belongs
/// to exactly one shard). IPv6 sockets are IPv6 only: a relay serving
/// both families binds one socket per family and port.
pub fn media_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(1 << 18);
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind media port {addr}: {e}")))?;
    Ok(socket.into())
}

/// How long a starting shard waits for media ports still bound by a
/// process that just exited: the kernel frees an io_uring's registered
/// sockets after the process is gone, asynchronously (seen here: up to a
/// second after a SIGKILL).
pub const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// [`media_udp`], retrying while the port is in use until `deadline`.
pub fn media_udp_until(addr: SocketAddr, deadline: std::time::Instant) -> io::Result<UdpSocket> {
    loop {
        match media_udp(addr) {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// Decodes a `sockaddr_in` / `sockaddr_in6` as the kernel wrote it into a
/// receive buffer (native-endian family, network-order port).
pub fn decode_sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let b: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(b)), port))
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(b);
            // Report v4-mapped peers as IPv4.
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SocketAddr::new(ip, port))
        }
        _ => None,
    }
}

/// A destination in the form `sendmsg` wants, stored inline.
#[derive(Clone, Copy)]
pub struct RawAddr {
    pub v4: libc::sockaddr_in,
    pub v6: libc::sockaddr_in6,
    pub is_v6: bool,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAddr")
            .field("is_v6", &self.is_v6)
            .finish()
    }
}

impl Default for RawAddr {
    fn default() -> Self {
        RawAddr {
            v4: libc::sockaddr_in {
                sin_family: 0,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            },
            v6: libc::sockaddr_in6 {
                sin6_family: 0,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
                sin6_scope_id: 0,
            },
            is_v6: false,
        }
    }
}

impl RawAddr {
    /// Fills in `addr`; an IPv4 destination on an IPv6 socket would need a
    /// mapped address, but every socket here has one family.
    pub fn set(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => {
                self.is_v6 = false;
                self.v4.sin_family = libc::AF_INET as libc::sa_family_t;
                self.v4.sin_port = a.port().to_be();
                self.v4.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            }
            SocketAddr::V6(a) => {
                self.is_v6 = true;
                self.v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                self.v6.sin6_port = a.port().to_be();
                self.v6.sin6_flowinfo = a.flowinfo();
                self.v6.sin6_addr.s6_addr = a.ip().octets();
                self.v6.sin6_scope_id = a.scope_id();
            }
        }
    }

    /// The address in the form `msghdr.msg_name` wants.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        if self.is_v6 {
            std::ptr::addr_of_mut!(self.v6).cast()
        } else {
            std::ptr::addr_of_mut!(self.v4).cast()
        }
    }

    pub fn len(&self) -> libc::socklen_t {
        let n = if self.is_v6 {
            std::mem::size_of::<libc::sockaddr_in6>()
        } else {
            std::mem::size_of::<libc::sockaddr_in>()
        };
        // Both sizes are small constants.
        libc::socklen_t::try_from(n).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIP socket gets the kernel's receive time of each datagram, and
    /// [`received_at`] reads it from the control data.
    #[test]
    #[allow(unsafe_code)]
    fn sip_datagrams_carry_their_receive_time() {
        use std::os::fd::AsRawFd;
        let sock = reuseport_udp("127.0.0.1:0".parse().unwrap(), 1 << 16).unwrap();
        let to = sock.local_addr().unwrap();
        let before = std::time::SystemTime::now();
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"OPTIONS", to)
            .unwrap();
        let mut data = [0u8; 64];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut hdr = crate::shard::slots::empty_msghdr();
        hdr.msg_iov = &raw mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `hdr` points at `iov` (into `data`) and at `control`,
        // all alive and of the lengths given, for the duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut hdr, 0) };
        assert_eq!(n, 7);
        let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let at = received_at(&bytes[..hdr.msg_controllen]).expect("a timestamp");
        let after = std::time::SystemTime::now();
        assert!(at >= before - std::time::Duration::from_millis(5) && at <= after);
        assert!(hdr.msg_controllen <= TIMESTAMP_CONTROL);
        // Nothing, or something else, is no timestamp.
        assert_eq!(received_at(&[]), None);
        assert_eq!(received_at(&bytes[..8]), None);
    }

    #[test]
    fn a_media_port_still_held_is_waited_for_until_the_deadline() {
        let addr: SocketAddr = "127.177.0.1:31555".parse().unwrap();
        let held = media_udp(addr).unwrap();
        let past = std::time::Instant::now();
        let e = media_udp_until(addr, past).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("127.177.0.1:31555"), "{e}");
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let sock = media_udp_until(addr, deadline).expect("bound once released");
        assert_eq!(sock.local_addr().unwrap(), addr);
        release.join().unwrap();
    }

    #[test]
    fn decodes_v4_and_v6_sockaddrs() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&5060u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 10]);
        assert_eq!(
            decode_sockaddr(&v4),
            Some("127.0.0.10:5060".parse().unwrap())
        );
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&5070u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            decode_sockaddr(&v6),
            Some("[2001:db8::1]:5070".parse().unwrap())
        );
        assert_eq!(decode_sockaddr(&[1]), None);
    }

    #[test]
    fn two_reuseport_sockets_share_an_address() {
        let a = reuseport_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = a.local_addr().unwrap();
        let b = reuseport_udp(addr, 1 << 20).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
    }
}
