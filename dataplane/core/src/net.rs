//! What the sans-IO core exchanges with the I/O layer: datagrams to send,
//! addressed by destination and by the local SIP socket to send from.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

/// A multicast or (IPv4) broadcast address: never a peer's own.
pub fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Index of a local SIP listen address (the order of `sip.listen` in the
/// configuration). Every shard has one socket per listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LocalId(pub u16);

/// Where a message goes: the peer and the local socket it leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub addr: SocketAddr,
    pub local: LocalId,
}

/// A datagram queued by the core, waiting for the I/O layer.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub dest: Dest,
    pub data: Bytes,
}

/// Metadata of a datagram copied into the caller's buffer by `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    pub len: usize,
}

/// Queue of datagrams to send, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Outgoing>,
}

impl Outbox {
    pub fn push(&mut self, dest: Dest, data: Bytes) {
        self.queue.push_back(Outgoing { dest, data });
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
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
        let next = self.queue.pop_front()?;
        let len = next.data.len();
        match buf.get_mut(..len) {
            Some(dst) => {
                dst.copy_from_slice(&next.data);
                Some(Ok(Transmit {
                    dest: next.dest,
                    len,
                }))
            }
            None => Some(Err(len)),
        }
    }
}
