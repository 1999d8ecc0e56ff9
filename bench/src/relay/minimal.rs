//! The two baseline relays of the media benchmark, each run in its own
//! process so its CPU time can be read from /proc: every packet received
//! on one socket is sent to one destination.

use std::io;
use std::net::{SocketAddr, UdpSocket};

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

/// (b) `recvmmsg` / `sendmmsg`, up to 32 packets per call.
#[allow(unsafe_code)]
pub fn batched(listen: SocketAddr, to: SocketAddr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = UdpSocket::bind(listen)?;
    let fd = sock.as_raw_fd();
    let SocketAddr::V4(to4) = to else {
        return Err(io::Error::other("IPv4 destination expected"));
    };
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: iov,
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        })
        .collect();
    let mut out_iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: 0,
        })
        .collect();
    let mut out: Vec<libc::mmsghdr> = out_iovs
        .iter_mut()
        .map(|iov| libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: std::ptr::addr_of!(dest).cast_mut().cast(),
                msg_namelen: std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                msg_iov: iov,
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        })
        .collect();
    loop {
        // SAFETY: `msgs` holds BATCH valid mmsghdrs whose iovecs point into
        // `bufs`, all alive for the call; the kernel writes at most iov_len
        // bytes per buffer. MSG_WAITFORONE returns once one packet is in.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            out_iovs[i].iov_len = msgs[i].msg_len as usize;
        }
        // SAFETY: the first `got` entries of `out` point at `dest` and at
        // the buffers just filled, with their lengths; all alive here.
        unsafe {
            libc::sendmmsg(fd, out.as_mut_ptr(), got as u32, 0);
        }
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
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to4) = to else {
        return Err(io::Error::other("IPv4 destination expected"));
    };
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let socks: Vec<UdpSocket> = (0..count)
        .map(|i| UdpSocket::bind(SocketAddr::new(ip, first + i)))
        .collect::<io::Result<_>>()?;
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
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: iov,
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        })
        .collect();
    let mut out_iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: 0,
        })
        .collect();
    let mut out: Vec<libc::mmsghdr> = out_iovs
        .iter_mut()
        .map(|iov| libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: std::ptr::addr_of!(dest).cast_mut().cast(),
                msg_namelen: std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                msg_iov: iov,
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        })
        .collect();
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
            let Some(s) = socks.get(ev.u64 as usize) else {
                continue;
            };
            let fd = s.as_raw_fd();
            // SAFETY: as in `batched`: the mmsghdrs point into `bufs`,
            // alive for the call; MSG_DONTWAIT takes what is queued.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got <= 0 {
                continue;
            }
            let got = got as usize;
            for i in 0..got {
                out_iovs[i].iov_len = msgs[i].msg_len as usize;
            }
            // SAFETY: the first `got` entries of `out` point at `dest` and
            // at the buffers just filled.
            unsafe {
                libc::sendmmsg(fd, out.as_mut_ptr(), got as u32, 0);
            }
        }
    }
}
