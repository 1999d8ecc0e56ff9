//! SIPp's `-t un`: a caller gives each call a UDP socket of its own,
//! bound to `-i` on a port the kernel picks; the call's messages leave from
//! it, name its port as `[local_port]`, and what comes back to it is
//! received as any datagram. The socket closes when the call ends. With
//! more than `-max_socket` open, new calls share the open ones in turn,
//! as SIPp's do (and a shared socket closes with its last call).
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
        let entry = Sock {
            sock,
            port,
            calls: 1,
            closing: false,
        };
        let slot = match self.free.pop() {
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
        };
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
        if s.calls == 0 && !s.closing {
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
