//! Fixed memory for `sendmsg` and single-shot `recvmsg`: each slot's
//! buffer, iovec, address and msghdr, at a stable address for as long as
//! the kernel may use them (a send pool's buffers are one allocation,
//! a receive slot holds its own).

use std::net::SocketAddr;

use super::socket::RawAddr;

pub fn empty_msghdr() -> libc::msghdr {
    libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    }
}

/// `UDP_SEGMENT` (linux/udp.h): the cmsg type giving the segment size of
/// a UDP GSO send (Linux 4.18+).
pub const UDP_SEGMENT: libc::c_int = 103;

/// A control message carrying a UDP GSO segment size, laid out as
/// `CMSG_SPACE(sizeof(u16))` bytes: header, then data, then padding.
#[repr(C)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

/// One in-flight `sendmsg` (its buffer is the pool's `size` bytes at
/// its index).
pub(crate) struct SendSlot {
    iov: libc::iovec,
    hdr: libc::msghdr,
    addr: RawAddr,
    gso: GsoCmsg,
}

/// A pool of send slots of one size.
///
/// The slots' buffers are one zeroed allocation: the allocator takes it
/// from fresh pages, which hold no memory until written, so a shard's
/// resident memory grows with the slots it actually uses (taken last in,
/// first out), not with the pool. Separate buffers of a small size class
/// (media's 9 KB) were each cleared at start: 19 MB per shard resident
/// before the first packet.
pub struct SendPool {
    slots: Box<[SendSlot]>,
    bufs: Box<[u8]>,
    size: usize,
    free: Vec<u16>,
    /// Slots handed out (double give-backs are ignored in O(1)).
    taken: Vec<bool>,
}

impl std::fmt::Debug for SendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPool")
            .field("slots", &self.slots.len())
            .field("free", &self.free.len())
            .finish()
    }
}

impl SendPool {
    pub fn new(count: u16, size: usize) -> Self {
        let slots: Box<[SendSlot]> = (0..count)
            .map(|_| SendSlot {
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                hdr: empty_msghdr(),
                addr: RawAddr::default(),
                gso: GsoCmsg {
                    hdr: libc::cmsghdr {
                        cmsg_len: 0,
                        cmsg_level: 0,
                        cmsg_type: 0,
                    },
                    segment: 0,
                    _pad: [0; 6],
                },
            })
            .collect();
        SendPool {
            slots,
            bufs: vec![0u8; usize::from(count) * size].into_boxed_slice(),
            size,
            free: (0..count).rev().collect(),
            taken: vec![false; usize::from(count)],
        }
    }

    pub fn take(&mut self) -> Option<u16> {
        let idx = self.free.pop()?;
        if let Some(t) = self.taken.get_mut(usize::from(idx)) {
            *t = true;
        }
        Some(idx)
    }

    pub fn give_back(&mut self, idx: u16) {
        if let Some(t) = self.taken.get_mut(usize::from(idx))
            && *t
        {
            *t = false;
            self.free.push(idx);
        }
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn buf(&mut self, idx: u16) -> Option<&mut [u8]> {
        if usize::from(idx) >= self.slots.len() {
            return None;
        }
        let start = usize::from(idx).checked_mul(self.size)?;
        self.bufs.get_mut(start..start.checked_add(self.size)?)
    }

    /// Where slot `idx`'s buffer starts (stable while the pool lives: a
    /// boxed slice) and how long it is.
    fn buf_ptr(&mut self, idx: u16) -> Option<(*mut u8, usize)> {
        self.buf(idx).map(|b| (b.as_mut_ptr(), b.len()))
    }

    /// Points the slot's msghdr at its first `len` bytes and at `dest`;
    /// returns the msghdr for the SQE. The pointers stay valid while the
    /// pool lives (the slots never move: a boxed slice).
    pub fn prepare(
        &mut self,
        idx: u16,
        len: usize,
        dest: SocketAddr,
    ) -> Option<*const libc::msghdr> {
        let (buf, size) = self.buf_ptr(idx)?;
        let slot = self.slots.get_mut(usize::from(idx))?;
        slot.addr.set(dest);
        slot.iov.iov_base = buf.cast();
        slot.iov.iov_len = len.min(size);
        slot.hdr.msg_name = slot.addr.as_mut_ptr();
        slot.hdr.msg_namelen = slot.addr.len();
        slot.hdr.msg_iov = &mut slot.iov;
        slot.hdr.msg_iovlen = 1;
        slot.hdr.msg_control = std::ptr::null_mut();
        slot.hdr.msg_controllen = 0;
        Some(&slot.hdr)
    }

    /// Like [`SendPool::prepare`], for a UDP GSO send: the slot's first
    /// `len` bytes leave as datagrams of `segment` bytes each (the last may
    /// be shorter), in order, to `dest`.
    pub fn prepare_gso(
        &mut self,
        idx: u16,
        len: usize,
        dest: SocketAddr,
        segment: u16,
    ) -> Option<*const libc::msghdr> {
        self.prepare(idx, len, dest)?;
        let slot = self.slots.get_mut(usize::from(idx))?;
        let data_len = std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<u16>();
        slot.gso.hdr.cmsg_len = data_len as _;
        slot.gso.hdr.cmsg_level = libc::SOL_UDP;
        slot.gso.hdr.cmsg_type = UDP_SEGMENT;
        slot.gso.segment = segment;
        slot.hdr.msg_control = std::ptr::addr_of_mut!(slot.gso).cast();
        slot.hdr.msg_controllen = std::mem::size_of::<GsoCmsg>() as _;
        Some(&slot.hdr)
    }
}

/// What a `send` with a destination address (sendto) needs: the slot's
/// first `len` bytes and its address, at stable addresses.
#[derive(Debug, Clone, Copy)]
pub struct SendTo {
    pub buf: *const u8,
    pub len: u32,
    pub addr: *const libc::sockaddr,
    pub addr_len: libc::socklen_t,
}

impl SendPool {
    /// Like [`SendPool::prepare`] for `IORING_OP_SEND` with a destination
    /// (kernel 6.0+): no msghdr for the kernel to copy and import.
    pub fn prepare_to(&mut self, idx: u16, len: usize, dest: SocketAddr) -> Option<SendTo> {
        let (buf, size) = self.buf_ptr(idx)?;
        let slot = self.slots.get_mut(usize::from(idx))?;
        slot.addr.set(dest);
        Some(SendTo {
            buf: buf.cast_const(),
            len: u32::try_from(len.min(size)).ok()?,
            addr: slot.addr.as_mut_ptr().cast_const().cast(),
            addr_len: slot.addr.len(),
        })
    }
}

/// Room for any socket address the kernel writes back.
#[repr(C, align(8))]
pub(crate) struct AddrBuf(pub [u8; 128]);

/// Memory for one single-shot `recvmsg` (kernels without multishot or
/// provided buffer rings).
pub(crate) struct RecvSlot {
    buf: Box<[u8]>,
    iov: libc::iovec,
    hdr: libc::msghdr,
    name: AddrBuf,
}

impl RecvSlot {
    pub(crate) fn new(size: usize) -> Self {
        RecvSlot {
            buf: vec![0u8; size].into_boxed_slice(),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            hdr: empty_msghdr(),
            name: AddrBuf([0; 128]),
        }
    }

    /// Resets the msghdr for a new receive; the slot must not move until
    /// the completion (slots live in a boxed slice).
    pub(crate) fn prepare(&mut self) -> *mut libc::msghdr {
        self.iov.iov_base = self.buf.as_mut_ptr().cast();
        self.iov.iov_len = self.buf.len();
        self.hdr = empty_msghdr();
        self.hdr.msg_name = self.name.0.as_mut_ptr().cast();
        self.hdr.msg_namelen = 128;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
        &mut self.hdr
    }

    /// What the completed receive wrote: source address bytes, payload,
    /// and whether the datagram was truncated.
    pub(crate) fn received(&self, len: usize) -> (&[u8], &[u8], bool) {
        let namelen = (self.hdr.msg_namelen as usize).min(self.name.0.len());
        let truncated = self.hdr.msg_flags & libc::MSG_TRUNC != 0;
        (
            &self.name.0[..namelen],
            &self.buf[..len.min(self.buf.len())],
            truncated,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each slot's buffer is its own `size` bytes of the pool's one
    /// allocation: what is written in one is not seen in another, and the
    /// msghdr and the sendto arguments point at the slot's bytes.
    #[test]
    fn send_pool_slots_have_their_own_bytes() {
        let mut p = SendPool::new(3, 100);
        for i in 0..3u8 {
            let b = p.buf(u16::from(i)).unwrap();
            assert_eq!(b.len(), 100);
            assert!(b.iter().all(|&x| x == 0));
            b.fill(i + 1);
        }
        assert!(p.buf(3).is_none());
        for i in 0..3u8 {
            assert!(p.buf(u16::from(i)).unwrap().iter().all(|&x| x == i + 1));
        }
        let dest = "127.0.0.1:9".parse().unwrap();
        let start = p.buf(1).unwrap().as_ptr();
        let to = p.prepare_to(1, 500, dest).unwrap();
        assert_eq!((to.buf, to.len), (start, 100));
        let hdr = p.prepare(2, 40, dest).unwrap();
        // SAFETY: the msghdr and its iovec live in the pool, borrowed for
        // these reads.
        let iov = unsafe { *(*hdr).msg_iov };
        assert_eq!(
            iov.iov_base.cast_const().cast::<u8>(),
            p.buf(2).unwrap().as_ptr()
        );
        assert_eq!(iov.iov_len, 40);
    }

    #[test]
    fn send_pool_hands_out_each_slot_once() {
        let mut p = SendPool::new(2, 64);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert_ne!(a, b);
        assert!(p.take().is_none() && !p.has_free());
        let hdr = p.prepare(a, 10, "127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(!hdr.is_null());
        p.give_back(a);
        p.give_back(a);
        assert_eq!(p.take(), Some(a));
        assert!(p.take().is_none(), "a double give-back is ignored");
        // The GSO control message is laid out as CMSG_SPACE(2) bytes.
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
        let (space, clen) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
        assert_eq!(std::mem::size_of::<GsoCmsg>(), space as usize);
        let hdr = p
            .prepare_gso(a, 30, "127.0.0.1:9".parse().unwrap(), 10)
            .unwrap();
        // SAFETY: the msghdr lives in the pool, borrowed for these reads.
        let (controllen, cmsg_len) = unsafe {
            let h = &*hdr;
            (
                h.msg_controllen,
                (*h.msg_control.cast::<libc::cmsghdr>()).cmsg_len,
            )
        };
        assert_eq!(controllen, space as usize);
        assert_eq!(cmsg_len, clen as usize);
        // A plain send from the same slot carries no control message.
        let hdr = p.prepare(a, 10, "127.0.0.1:9".parse().unwrap()).unwrap();
        // SAFETY: as above.
        assert!(unsafe { (*hdr).msg_control.is_null() });
        let to = p.prepare_to(a, 10, "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(to.len, 10);
        assert_eq!(
            to.addr_len as usize,
            std::mem::size_of::<libc::sockaddr_in>()
        );
        let to = p.prepare_to(a, 100, "[::1]:9".parse().unwrap()).unwrap();
        assert_eq!(to.len, 64, "never past the slot");
        assert_eq!(
            to.addr_len as usize,
            std::mem::size_of::<libc::sockaddr_in6>()
        );
    }
}
