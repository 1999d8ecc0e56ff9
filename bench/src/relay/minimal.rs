//! The baseline relays of the media benchmark, each run in its own process
//! so its CPU time can be read from /proc: every packet received is sent to
//! one destination.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// (a) One `recv_from` and one `send_to` per packet.
pub fn naive(listen: SocketAddr, to: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind(listen)?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = sock.recv_from(&mut buf)?;
        let _ = sock.send_to(&buf[..n], to);
    }
}

const BATCH: usize = 32;

/// Buffers and headers for one `recvmmsg` of up to [`BATCH`] packets and
/// the `sendmmsg` passing them on to one destination. The vectors' heap
/// memory and the boxed address never move, so the pointers between them
/// stay valid for the life of the value.
struct Mmsg {
    _bufs: Vec<[u8; 2048]>,
    _iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    out_iovs: Vec<libc::iovec>,
    out: Vec<libc::mmsghdr>,
    _dest: Box<libc::sockaddr_in>,
}

fn mmsghdr(iov: *mut libc::iovec, name: *mut libc::c_void, namelen: usize) -> libc::mmsghdr {
    libc::mmsghdr {
        msg_hdr: libc::msghdr {
            msg_name: name,
            msg_namelen: namelen as libc::socklen_t,
            msg_iov: iov,
            msg_iovlen: 1,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        },
        msg_len: 0,
    }
}

impl Mmsg {
    fn new(to: SocketAddr) -> io::Result<Self> {
        let SocketAddr::V4(to4) = to else {
            return Err(io::Error::other("IPv4 destination expected"));
        };
        let mut dest = Box::new(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to4.ip().octets()),
            },
            sin_zero: [0; 8],
        });
        let mut bufs = vec![[0u8; 2048]; BATCH];
        let iov = |b: &mut [u8; 2048], len: usize| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: len,
        };
        let mut iovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iov(b, 2048)).collect();
        let mut out_iovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iov(b, 0)).collect();
        let msgs = iovs
            .iter_mut()
            .map(|i| mmsghdr(i, std::ptr::null_mut(), 0))
            .collect();
        let name: *mut libc::c_void = std::ptr::addr_of_mut!(*dest).cast();
        let out = out_iovs
            .iter_mut()
            .map(|i| mmsghdr(i, name, std::mem::size_of::<libc::sockaddr_in>()))
            .collect();
        Ok(Mmsg {
            _bufs: bufs,
            _iovs: iovs,
            msgs,
            out_iovs,
            out,
            _dest: dest,
        })
    }

    /// Receives up to [`BATCH`] packets from `fd` (with `flags`) and sends
    /// them on from the same socket; returns how many.
    #[allow(unsafe_code)]
    fn relay(&mut self, fd: i32, flags: i32) -> io::Result<usize> {
        // SAFETY: `msgs` holds BATCH valid mmsghdrs whose iovecs point into
        // the buffers, all owned by `self` and alive for the call; the
        // kernel writes at most iov_len bytes per buffer.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            self.out_iovs[i].iov_len = self.msgs[i].msg_len as usize;
        }
        // SAFETY: the first `got` entries of `out` point at the destination
        // and at the buffers just filled, with their lengths; all owned by
        // `self`.
        unsafe {
            libc::sendmmsg(fd, self.out.as_mut_ptr(), got as u32, 0);
        }
        Ok(got)
    }
}

/// (b) `recvmmsg` / `sendmmsg`, up to 32 packets per call, on one socket.
pub fn batched(listen: SocketAddr, to: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind(listen)?;
    let mut m = Mmsg::new(to)?;
    loop {
        // MSG_WAITFORONE returns once one packet is in.
        m.relay(sock.as_raw_fd(), libc::MSG_WAITFORONE)?;
    }
}

/// (b′) The batched relay with one socket per stream, as a relay that
/// tells streams apart by port must have: `epoll_wait` for the readable
/// sockets, then `recvmmsg` (up to 32) and `sendmmsg` on each.
#[allow(unsafe_code)]
pub fn batched_ports(
    ip: std::net::IpAddr,
    first: u16,
    count: u16,
    to: SocketAddr,
) -> io::Result<()> {
    let socks: Vec<UdpSocket> = (0..count)
        .map(|i| UdpSocket::bind(SocketAddr::new(ip, first + i)))
        .collect::<io::Result<_>>()?;
    let mut m = Mmsg::new(to)?;
    // SAFETY: epoll_create1 has no memory arguments.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: `events` has room for its length in entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            if let Some(s) = socks.get(ev.u64 as usize) {
                // What is queued now (MSG_DONTWAIT); nothing is no error.
                let _ = m.relay(s.as_raw_fd(), libc::MSG_DONTWAIT);
            }
        }
    }
}
