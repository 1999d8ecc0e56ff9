//! Cross-shard hand-off: a bounded lock-free queue per shard, and a flag
//! that makes sure a sleeping owner is woken exactly when needed. It
//! carries datagrams for calls and bindings another shard owns, and the
//! engines' own messages (binding lookups).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crossbeam_queue::ArrayQueue;

use sbc_core::b2bua::ShardMessage;
use sbc_core::net::Flow;

/// What one shard hands another.
#[derive(Debug)]
pub enum Handoff {
    /// A datagram received for a call (or a binding) the other shard
    /// owns, with the flow it arrived on (at the shard that received it).
    Datagram { origin: Flow, data: Box<[u8]> },
    /// A message of the engines' own (a binding lookup and its answer).
    Message(ShardMessage),
    /// A message to send over a stream connection the other shard owns
    /// (`dest.conn` names it).
    Send { dest: Flow, data: bytes::Bytes },
    /// What the sending shard had for this peer (no configured trunk: a
    /// phone, whose connection is that shard's) could not be sent: a call
    /// here ringing it hears so (`Engine::handle_unsent`).
    Unsent {
        transport: sbc_core::net::Transport,
        remote: std::net::SocketAddr,
    },
}

/// One shard's inbox.
#[derive(Debug)]
pub struct Mailbox {
    queue: ArrayQueue<Handoff>,
    /// Set by a sender that has (or is about to have) woken the owner;
    /// cleared by the owner right before it drains the queue.
    notified: AtomicBool,
    /// The owner's io_uring fd, for IORING_OP_MSG_RING wake-ups (-1 until
    /// the owner's ring exists).
    ring_fd: AtomicI32,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            queue: ArrayQueue::new(capacity.max(1)),
            notified: AtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
        }
    }

    pub fn set_ring_fd(&self, fd: i32) {
        self.ring_fd.store(fd, Ordering::Release);
    }

    pub fn ring_fd(&self) -> i32 {
        self.ring_fd.load(Ordering::Acquire)
    }

    /// Queues a datagram. Returns `Err` (giving it back) when full, and
    /// `Ok(true)` when the caller must wake the owner.
    pub fn push(&self, h: Handoff) -> Result<bool, Handoff> {
        self.queue.push(h)?;
        // AcqRel: the owner's swap(false) that reads this `true`
        // synchronizes with it, so the push above is visible to its drain.
        Ok(!self.notified.swap(true, Ordering::AcqRel))
    }

    /// Called by the owner before draining: re-arms wake-ups.
    pub fn rearm(&self) {
        self.notified.swap(false, Ordering::AcqRel);
    }

    pub fn pop(&self) -> Option<Handoff> {
        self.queue.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbc_core::net::LocalId;

    fn h() -> Handoff {
        Handoff::Datagram {
            origin: Flow::udp("127.0.0.1:5060".parse().unwrap(), LocalId(0)),
            data: Box::new([1, 2, 3]),
        }
    }

    #[test]
    fn only_the_first_push_after_a_drain_wakes() {
        let m = Mailbox::new(4);
        assert!(m.push(h()).unwrap());
        assert!(!m.push(h()).unwrap());
        m.rearm();
        assert!(m.pop().is_some() && m.pop().is_some() && m.pop().is_none());
        assert!(m.push(h()).unwrap());
    }

    #[test]
    fn full_queue_gives_the_datagram_back() {
        let m = Mailbox::new(1);
        m.push(h()).unwrap();
        assert!(m.push(h()).is_err());
    }

    #[test]
    fn concurrent_senders_lose_nothing() {
        use std::sync::Arc;
        let m = Arc::new(Mailbox::new(100_000));
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        m.push(h()).unwrap();
                    }
                })
            })
            .collect();
        let mut got = 0;
        while got < 20_000 {
            m.rearm();
            while m.pop().is_some() {
                got += 1;
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(got, 20_000);
    }
}
