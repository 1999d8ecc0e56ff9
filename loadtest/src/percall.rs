//! SIPp's `-t un`: a caller gives each call a UDP socket of its own,
//! bound to `-i` on a port the kernel picks; the call's messages leave from
//! it, name its port as `[local_port]`, and what comes back to it is
//! received as any datagram. The socket closes when the call ends. With
//! more than `-max_socket` open, new calls share the open ones in turn,
//! as SIPp's do (and a shared socket closes with its last call).
//!
//! SIPp's `-t ui` uses the same bookkeeping: a socket per source address
//! (the `-ip_field` field of each call's `-inf` line), bound to that
//! address on the thread's port and kept until the end; a caller's calls
//! leave from their address's socket, a callee's answer from the one they
//! were reached on.
//!
//! This module keeps the sockets and their bookkeeping; the runtime arms
//! and cancels their receives in its io_uring.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// One call socket.
#[derive(Debug)]
struct Sock {
    sock: UdpSocket,
    port: u16,
    /// Calls on it.
    calls: u32,
    /// No call left: its receive is being cancelled, then it closes.
    closing: bool,
    /// `-t ui`: an address's socket, kept whatever its calls.
    pinned: bool,
}

/// What [`PerCall::take`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub slot: usize,
    pub port: u16,
    /// A socket opened now: its receive must be armed.
    pub new: bool,
}

/// A thread's call sockets.
#[derive(Debug)]
pub struct PerCall {
    ip: IpAddr,
    max: usize,
    socks: Vec<Option<Sock>>,
    free: Vec<usize>,
    by_call: HashMap<u64, usize>,
    /// Where sharing goes on from (round robin).
    next_shared: usize,
    /// `-buff_size`: each socket's send and receive buffers.
    buffers: Option<usize>,
    /// Sockets that are open and not closing.
    open: usize,
    /// `-t ui`: each source address's socket.
    by_ip: HashMap<IpAddr, usize>,
}

impl PerCall {
    /// Sockets bound to `ip`; at most `max` open (at least one); their
    /// buffers `buffers` bytes (else the kernel's default).
    pub fn new(ip: IpAddr, max: usize, buffers: Option<usize>) -> PerCall {
        PerCall {
            buffers,
            ip,
            max: max.max(1),
            socks: Vec::new(),
            free: Vec::new(),
            by_call: HashMap::new(),
            next_shared: 0,
            open: 0,
            by_ip: HashMap::new(),
        }
    }

    /// `-t ui`: the socket of source address `ip` on `port` (bound now if
    /// it is not; with `shared`, `SO_REUSEPORT`, as a callee's threads
    /// share their port), for one more call.
    pub fn take_ip(&mut self, ip: IpAddr, port: u16, shared: bool) -> io::Result<Taken> {
        if let Some(&slot) = self.by_ip.get(&ip)
            && let Some(s) = self.socks.get_mut(slot).and_then(Option::as_mut)
        {
            s.calls += 1;
            return Ok(Taken {
                slot,
                port: s.port,
                new: false,
            });
        }
        let addr = SocketAddr::new(ip, port);
        let sock = if shared {
            sbc_dataplane::shard::reuseport_udp(addr, self.buffers.unwrap_or(8 << 20))?
        } else {
            UdpSocket::bind(addr)?
        };
        sock.set_nonblocking(true)?;
        let slot = self.insert(Sock {
            port: sock.local_addr()?.port(),
            sock,
            calls: 1,
            closing: false,
            pinned: true,
        });
        self.by_ip.insert(ip, slot);
        Ok(Taken {
            slot,
            port,
            new: true,
        })
    }

    fn insert(&mut self, entry: Sock) -> usize {
        match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.socks.get_mut(slot) {
                    *s = Some(entry);
                }
                slot
            }
            None => {
                self.socks.push(Some(entry));
                self.socks.len() - 1
            }
        }
    }

    /// A socket for a call about to start: a new one while fewer than
    /// `max` are open, else the next open one in turn.
    pub fn take(&mut self) -> io::Result<Taken> {
        if self.open >= self.max
            && let Some(t) = self.share()
        {
            return Ok(t);
        }
        let sock = UdpSocket::bind(SocketAddr::new(self.ip, 0))?;
        sock.set_nonblocking(true)?;
        if let Some(n) = self.buffers {
            let s = socket2::SockRef::from(&sock);
            s.set_recv_buffer_size(n)?;
            s.set_send_buffer_size(n)?;
        }
        let port = sock.local_addr()?.port();
        let slot = self.insert(Sock {
            sock,
            port,
            calls: 1,
            closing: false,
            pinned: false,
        });
        self.open += 1;
        Ok(Taken {
            slot,
            port,
            new: true,
        })
    }

    fn share(&mut self) -> Option<Taken> {
        let n = self.socks.len();
        for i in 0..n {
            let slot = (self.next_shared + i) % n;
            if let Some(s) = self.socks.get_mut(slot).and_then(Option::as_mut)
                && !s.closing
                && !s.pinned
            {
                s.calls += 1;
                self.next_shared = slot + 1;
                return Some(Taken {
                    slot,
                    port: s.port,
                    new: false,
                });
            }
        }
        None
    }

    /// The call `serial` started on `slot`.
    pub fn bind_call(&mut self, serial: u64, slot: usize) {
        self.by_call.insert(serial, slot);
    }

    /// A socket taken for a call that did not start (or a call that
    /// ended) gives it back: true when that was its last call, so its
    /// receive is to be cancelled (it closes when that completes).
    pub fn release(&mut self, slot: usize) -> bool {
        let Some(s) = self.socks.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        s.calls = s.calls.saturating_sub(1);
        if s.calls == 0 && !s.closing && !s.pinned {
            s.closing = true;
            self.open = self.open.saturating_sub(1);
            return true;
        }
        false
    }

    /// The call `serial` ended: its socket's slot when that closes now
    /// (see [`PerCall::release`]).
    pub fn call_ended(&mut self, serial: u64) -> Option<usize> {
        let slot = self.by_call.remove(&serial)?;
        self.release(slot).then_some(slot)
    }

    /// The socket of call `serial`.
    pub fn fd_of(&self, serial: u64) -> Option<RawFd> {
        let slot = *self.by_call.get(&serial)?;
        self.fd(slot)
    }

    /// The socket in `slot`.
    pub fn fd(&self, slot: usize) -> Option<RawFd> {
        self.socks
            .get(slot)
            .and_then(Option::as_ref)
            .map(|s| s.sock.as_raw_fd())
    }

    /// The multishot receive of `slot` ended: true when it is to be armed
    /// again; a closing socket closes now and its slot is free.
    pub fn recv_ended(&mut self, slot: usize) -> bool {
        match self.socks.get_mut(slot) {
            Some(Some(s)) if s.closing => {
                if let Some(e) = self.socks.get_mut(slot) {
                    *e = None;
                }
                self.free.push(slot);
                false
            }
            Some(Some(_)) => true,
            _ => false,
        }
    }

    /// The slots whose sockets are still there (their receives armed or
    /// being cancelled).
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.socks
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i))
    }

    /// Sockets open for calls.
    pub fn open(&self) -> usize {
        self.open
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_call_has_its_socket_until_the_limit_then_they_are_shared() {
        let mut pc = PerCall::new("127.176.3.1".parse().unwrap(), 2, None);
        let a = pc.take().unwrap();
        let b = pc.take().unwrap();
        assert!(a.new && b.new && a.port != b.port && a.slot != b.slot);
        pc.bind_call(1, a.slot);
        pc.bind_call(2, b.slot);
        assert_eq!(pc.open(), 2);
        // Past -max_socket: the open ones in turn.
        let c = pc.take().unwrap();
        let d = pc.take().unwrap();
        assert!(!c.new && !d.new);
        assert_eq!((c.port, d.port), (a.port, b.port));
        pc.bind_call(3, c.slot);
        pc.bind_call(4, d.slot);
        // A shared socket stays while a call is on it.
        assert_eq!(pc.call_ended(1), None);
        assert_eq!(pc.fd_of(3), pc.fd(a.slot));
        // Its last call gone, it closes once its receive ends.
        assert_eq!(pc.call_ended(3), Some(a.slot));
        assert_eq!(pc.open(), 1);
        assert!(pc.fd(a.slot).is_some(), "open until its receive ends");
        assert!(!pc.recv_ended(a.slot));
        assert!(pc.fd(a.slot).is_none());
        // A socket whose receive ended by itself is armed again.
        assert!(pc.recv_ended(b.slot));
        // The freed slot is used again, with a new port.
        let e = pc.take().unwrap();
        assert!(e.new);
        assert_eq!(e.slot, a.slot);
        assert_eq!(pc.slots().count(), 2);
        // A call that did not start gives its socket back.
        assert!(pc.release(e.slot));
        assert_eq!(pc.fd_of(99), None);
    }

    #[test]
    fn each_source_address_has_one_socket_kept_to_the_end() {
        let mut pc = PerCall::new("127.176.3.4".parse().unwrap(), usize::MAX, None);
        let (a, b): (IpAddr, IpAddr) = (
            "127.176.3.5".parse().unwrap(),
            "127.176.3.6".parse().unwrap(),
        );
        let port = UdpSocket::bind("127.176.3.5:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let first = pc.take_ip(a, port, false).unwrap();
        assert!(first.new);
        assert_eq!(first.port, port);
        pc.bind_call(1, first.slot);
        // Another call from the same address shares it.
        let again = pc.take_ip(a, port, false).unwrap();
        assert!(!again.new);
        assert_eq!(again.slot, first.slot);
        pc.bind_call(2, again.slot);
        let other = pc.take_ip(b, port, false).unwrap();
        assert!(other.new && other.slot != first.slot);
        pc.bind_call(3, other.slot);
        assert_eq!(pc.fd_of(2), pc.fd(first.slot));
        // Its calls gone, the socket stays.
        assert_eq!(pc.call_ended(1), None);
        assert_eq!(pc.call_ended(2), None);
        assert!(pc.fd(first.slot).is_some());
        // An address's socket is not shared out to -t un calls.
        assert!(pc.share().is_none());
        // Bound where asked.
        let s = pc.socks[other.slot].as_ref().unwrap();
        assert_eq!(s.sock.local_addr().unwrap(), SocketAddr::new(b, port));
    }

    #[test]
    fn a_call_socket_receives_what_is_sent_to_its_port() {
        let mut pc = PerCall::new("127.176.3.2".parse().unwrap(), 10, Some(1 << 16));
        let t = pc.take().unwrap();
        let peer = UdpSocket::bind("127.176.3.3:0").unwrap();
        peer.send_to(b"hi", ("127.176.3.2", t.port)).unwrap();
        let fd = pc.fd(t.slot).unwrap();
        let sock = pc.socks[t.slot].as_ref().unwrap();
        assert_eq!(sock.sock.as_raw_fd(), fd);
        let mut buf = [0u8; 8];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match sock.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(&buf[..n], b"hi");
                    assert_eq!(from, peer.local_addr().unwrap());
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
