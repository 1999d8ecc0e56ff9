//! Provided-buffer rings (IORING_REGISTER_PBUF_RING) for multishot receive.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// One entry of a provided-buffer ring, laid out as the kernel's
/// `struct io_uring_buf`. The `resv` field of entry 0 is the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

// The layout must be the kernel's (the crate's own view of it agrees).
const _: () =
    assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<io_uring::types::BufRingEntry>());
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// A ring of `entries` buffers of `size` bytes each.
///
/// The owner registers it with an io_uring
/// (`register_buf_ring_with_flags(ring_addr(), entries(), bgid, 0)`) and
/// must unregister it, or drop the ring, before dropping this: the kernel
/// writes into the buffers until then.
#[derive(Debug)]
pub struct BufRing {
    ring: *mut RawBuf,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    size: usize,
    /// Next tail to publish (entries added but not yet visible).
    tail: u16,
    pub bgid: u16,
}

impl BufRing {
    pub fn new(entries: u16, size: usize, bgid: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffers: a power of two of them, non-empty",
            ));
        }
        let ring_layout =
            Layout::from_size_align(usize::from(entries) * std::mem::size_of::<RawBuf>(), 4096)
                .map_err(io::Error::other)?;
        let bufs_layout =
            Layout::from_size_align(usize::from(entries) * size, 4096).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size >=
        // 1); the memory is owned by this struct and freed in Drop with the
        // same layouts.
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<RawBuf>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring.is_null() || bufs.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "receive buffers",
            ));
        }
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            size,
            tail: 0,
            bgid,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    pub fn ring_addr(&self) -> u64 {
        self.ring as u64
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    fn mask(&self) -> u16 {
        self.entries - 1
    }

    /// Puts buffer `bid` back at the tail (published by [`BufRing::publish`]).
    pub fn recycle(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask());
        let bid = bid.min(self.entries - 1);
        // SAFETY: slot < entries, so the entry is inside the ring
        // allocation. Fields are written through raw pointers, never through
        // a reference, because entry 0's `resv` (the tail) is read by the
        // kernel concurrently; the kernel reads the other fields only up to
        // the published tail, which this entry is beyond. bid < entries, so
        // the buffer offset stays inside `bufs`.
        unsafe {
            let entry = self.ring.add(slot);
            let addr = self.bufs.add(usize::from(bid) * self.size);
            std::ptr::addr_of_mut!((*entry).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*entry).len)
                .write(u32::try_from(self.size).unwrap_or(u32::MAX));
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: entry 0 is inside the allocation; its `resv` field is the
        // ring tail, a naturally aligned u16 shared with the kernel, which
        // reads it with acquire semantics: a release store through an
        // AtomicU16 view publishes the entries written before it.
        let tail = unsafe { &*std::ptr::addr_of!((*self.ring).resv).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid).min(usize::from(self.entries) - 1);
        let len = len.min(self.size);
        // SAFETY: the range is inside the allocation (bid < entries, len <=
        // size); the kernel finished writing it before posting the
        // completion, and it is not handed back until `recycle`.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid * self.size), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring was
        // unregistered and in-flight requests cancelled before this runs
        // (see `ShardIo::drop`).
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled_in_place() {
        let mut r = BufRing::new(4, 128, 1).unwrap();
        assert_eq!(r.buffer(3, 1000).len(), 128, "clamped to the buffer size");
        assert_eq!(r.buffer(9, 10).len(), 10, "ids clamped to the ring");
        r.recycle(2);
        r.publish();
        assert_eq!(r.entries(), 4);
        assert!(BufRing::new(3, 128, 1).is_err());
    }
}
