//! The shard loop on io_uring: multishot `recvmsg` into a provided-buffer
//! ring, batched `sendmsg` from a fixed set of send slots, and
//! `IORING_OP_MSG_RING` to wake another shard when a datagram is handed
//! over. All unsafe code of the data plane lives in this file.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use io_uring::types::{CancelBuilder, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::mailbox::{Handoff, Mailbox};
use super::socket::{RawAddr, decode_sockaddr};
use crate::b2bua::{Disposition, Engine};
use crate::net::LocalId;
use crate::policy::Policy;
use crate::stats::{Discard, ShardStats};

const KIND_SHIFT: u32 = 56;
const RECV: u64 = 1 << KIND_SHIFT;
const SEND: u64 = 2 << KIND_SHIFT;
const WAKE: u64 = 3 << KIND_SHIFT;
const MSG_RING: u64 = 4 << KIND_SHIFT;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// Buffer group id of the receive buffer ring.
const BGID: u16 = 7;
/// Largest UDP payload plus the recvmsg header and address.
const RECV_BUF: usize = 65536 + 256;
const SEND_BUF: usize = 65536;
/// Longest sleep, so a stop request is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// How many completions a shard waits for before waking, at most; with
/// `batch_wait` this coalesces wake-ups under load.
const BATCH_WANT: usize = 64;

/// Sizes of the per-shard I/O resources.
#[derive(Debug, Clone, Copy)]
pub struct RingSizes {
    pub sq_entries: u32,
    /// Receive buffers (a power of two, at most 32768).
    pub recv_buffers: u16,
    pub send_slots: u16,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            sq_entries: 1024,
            recv_buffers: 256,
            send_slots: 256,
        }
    }
}

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

/// Provided buffers for multishot receive (IORING_REGISTER_PBUF_RING).
struct BufRing {
    ring: *mut RawBuf,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    /// Next tail to publish (entries added but not yet visible).
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recv_buffers must be a power of two",
            ));
        }
        let ring_layout =
            Layout::from_size_align(usize::from(entries) * std::mem::size_of::<RawBuf>(), 4096)
                .map_err(io::Error::other)?;
        let bufs_layout = Layout::from_size_align(usize::from(entries) * RECV_BUF, 4096)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1); the
        // memory is owned by this struct and freed in Drop with the same
        // layouts.
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
            tail: 0,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    fn mask(&self) -> u16 {
        self.entries - 1
    }

    /// Puts buffer `bid` back at the tail (published by [`BufRing::publish`]).
    fn recycle(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask());
        // SAFETY: slot < entries, so the entry is inside the ring
        // allocation. Fields are written through raw pointers, never through
        // a reference, because entry 0's `resv` (the tail) is read by the
        // kernel concurrently; the kernel reads the other fields only up to
        // the published tail, which this entry is beyond.
        // bid < entries, so the buffer offset stays inside `bufs`.
        unsafe {
            let entry = self.ring.add(slot);
            let addr = self.bufs.add(usize::from(bid) * RECV_BUF);
            std::ptr::addr_of_mut!((*entry).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*entry).len).write(u32::try_from(RECV_BUF).unwrap_or(u32::MAX));
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: entry 0 is inside the allocation; its `resv` field is the
        // ring tail, a naturally aligned u16 shared with the kernel, which
        // reads it with acquire semantics: a release store through an
        // AtomicU16 view publishes the entries written before it.
        let tail = unsafe { &*std::ptr::addr_of!((*self.ring).resv).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes the kernel wrote into buffer `bid`.
    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid).min(usize::from(self.entries) - 1);
        let len = len.min(RECV_BUF);
        // SAFETY: the range is inside the allocation (bid < entries, len <=
        // RECV_BUF); the kernel finished writing it before posting the
        // completion, and it is not handed back until `recycle`.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid * RECV_BUF), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring was
        // unregistered (or the io_uring closed) before this runs, see
        // `ShardIo::drop`.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

/// One in-flight `sendmsg`: the datagram, its iovec, address and header.
struct SendSlot {
    buf: Box<[u8]>,
    iov: libc::iovec,
    hdr: libc::msghdr,
    addr: RawAddr,
}

fn empty_msghdr() -> libc::msghdr {
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

/// What one shard's loop owns.
pub(crate) struct ShardIo {
    // Field order matters for Drop: the ring goes first.
    ring: IoUring,
    bufring: BufRing,
    recv_hdr: Box<libc::msghdr>,
    slots: Box<[SendSlot]>,
    free_slots: Vec<u16>,
    sockets: Vec<UdpSocket>,
    armed: Vec<bool>,
    /// The kernel honours `min_wait_usec` (IORING_FEAT_MIN_TIMEOUT, 6.12+).
    min_timeout: bool,
}

impl std::fmt::Debug for ShardIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardIo")
            .field("sockets", &self.sockets.len())
            .finish()
    }
}

impl ShardIo {
    pub(crate) fn new(sockets: Vec<UdpSocket>, sizes: RingSizes) -> io::Result<Self> {
        let ring = match IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .setup_cqsize(sizes.sq_entries * 8)
            .build(sizes.sq_entries)
        {
            Ok(r) => r,
            // Kernels before 6.1 lack DEFER_TASKRUN.
            Err(_) => IoUring::builder()
                .setup_cqsize(sizes.sq_entries * 8)
                .build(sizes.sq_entries)?,
        };
        let bufring = BufRing::new(sizes.recv_buffers)?;
        // SAFETY: the ring memory is page aligned, holds `recv_buffers`
        // entries and lives as long as `ShardIo` (unregistered in Drop
        // before it is freed).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufring.ring as u64,
                bufring.entries,
                BGID,
                0,
            )
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring provided buffer ring (Linux 5.19+): {e}"),
            )
        })?;
        let mut recv_hdr = Box::new(empty_msghdr());
        recv_hdr.msg_namelen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).unwrap_or(128);
        let slots: Box<[SendSlot]> = (0..sizes.send_slots)
            .map(|_| SendSlot {
                buf: vec![0u8; SEND_BUF].into_boxed_slice(),
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                hdr: empty_msghdr(),
                addr: RawAddr::default(),
            })
            .collect();
        let free_slots = (0..sizes.send_slots).rev().collect();
        let armed = vec![false; sockets.len()];
        let min_timeout = ring.params().is_feature_min_timeout();
        Ok(ShardIo {
            ring,
            bufring,
            recv_hdr,
            slots,
            free_slots,
            sockets,
            armed,
            min_timeout,
        })
    }

    pub(crate) fn ring_fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every pointer an entry carries (msghdr of a receive
            // or send slot) points into memory owned by `self` that stays
            // put until the completion for that entry is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_recv(&mut self, idx: usize) -> io::Result<()> {
        let Some(sock) = self.sockets.get(idx) else {
            return Ok(());
        };
        let entry = opcode::RecvMsgMulti::new(Fd(sock.as_raw_fd()), &*self.recv_hdr, BGID)
            .build()
            .user_data(RECV | idx as u64);
        self.push(&entry)?;
        self.armed[idx] = true;
        Ok(())
    }

    /// Queues a wake-up CQE on another shard's ring.
    fn wake(&mut self, ring_fd: i32) -> io::Result<()> {
        if ring_fd < 0 {
            return Ok(());
        }
        let entry = opcode::MsgRingData::new(Fd(ring_fd), 0, WAKE, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(MSG_RING);
        self.push(&entry)
    }

    /// Moves datagrams from the engine into free send slots.
    fn flush(&mut self, engine: &mut Engine) -> io::Result<()> {
        while engine.pending_transmits() > 0 {
            let Some(idx) = self.free_slots.pop() else {
                break;
            };
            let slot = &mut self.slots[usize::from(idx)];
            let Some(t) = engine.poll_transmit(&mut slot.buf) else {
                self.free_slots.push(idx);
                break;
            };
            let Some(sock) = self
                .sockets
                .get(usize::from(t.dest.local.0))
                .or(self.sockets.first())
            else {
                self.free_slots.push(idx);
                continue;
            };
            let fd = sock.as_raw_fd();
            slot.addr.set(t.dest.addr);
            slot.iov.iov_base = slot.buf.as_mut_ptr().cast();
            slot.iov.iov_len = t.len;
            slot.hdr.msg_name = if slot.addr.is_v6 {
                std::ptr::addr_of_mut!(slot.addr.v6).cast()
            } else {
                std::ptr::addr_of_mut!(slot.addr.v4).cast()
            };
            slot.hdr.msg_namelen = slot.addr.len();
            slot.hdr.msg_iov = &mut slot.iov;
            slot.hdr.msg_iovlen = 1;
            let entry = opcode::SendMsg::new(Fd(fd), &slot.hdr)
                .build()
                .user_data(SEND | u64::from(idx));
            self.push(&entry)?;
        }
        Ok(())
    }
}

impl Drop for ShardIo {
    fn drop(&mut self) {
        // Cancel every request still in flight and wait (up to a second)
        // for the kernel to let go of the buffers and send slots they point
        // to, before the memory is freed.
        let timeout = Timespec::new().sec(1);
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), CancelBuilder::any());
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

/// Everything a shard thread runs with.
pub(crate) struct ShardLoop {
    pub io: ShardIo,
    pub engine: Engine,
    pub stats: Arc<ShardStats>,
    pub mailboxes: Arc<[Arc<Mailbox>]>,
    pub me: usize,
    pub policy: Arc<ArcSwap<Policy>>,
    pub stop: Arc<AtomicBool>,
    /// Once woken by a first completion, wait up to this long for more
    /// before processing (interrupt-coalescing style; zero disables).
    pub batch_wait: Duration,
}

impl ShardLoop {
    pub(crate) fn run(mut self) -> io::Result<()> {
        for i in 0..self.io.sockets.len() {
            self.io.arm_recv(i)?;
        }
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        let mut wakes: Vec<i32> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            ShardStats::inc(&self.stats.loop_iterations);
            let current = self.policy.load();
            if !Arc::ptr_eq(&current, self.engine.policy()) {
                self.engine.set_policy(Arc::clone(&current));
            }

            completions.clear();
            completions.extend(
                self.io
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &completions {
                match ud & !INDEX_MASK {
                    RECV => {
                        self.on_recv(now, (ud & INDEX_MASK) as usize, res, flags, &mut wakes)?
                    }
                    SEND => {
                        let idx = (ud & INDEX_MASK) as u16;
                        self.io.free_slots.push(idx);
                        if res < 0 {
                            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "sendmsg failed");
                        } else {
                            self.stats
                                .bytes_out
                                .fetch_add(res as u64, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
            self.io.bufring.publish();

            // Datagrams other shards handed to us.
            let mailbox = Arc::clone(&self.mailboxes[self.me]);
            mailbox.rearm();
            while let Some(h) = mailbox.pop() {
                let _ = self.engine.handle_datagram(now, h.src, h.local, &h.data);
            }

            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.io.flush(&mut self.engine)?;
            for fd in wakes.drain(..) {
                self.io.wake(fd)?;
            }

            let busy = self.engine.pending_transmits() > 0 && !self.io.free_slots.is_empty();
            let wait = if busy {
                Duration::ZERO
            } else {
                self.engine
                    .poll_timeout()
                    .map_or(MAX_WAIT, |t| t.saturating_duration_since(Instant::now()))
                    .min(MAX_WAIT)
            };
            let ts = Timespec::from(wait);
            let mut args = SubmitArgs::new().timespec(&ts);
            let mut want = usize::from(!busy && !wait.is_zero());
            if want > 0 && self.io.min_timeout && !self.batch_wait.is_zero() {
                // Sleep until BATCH_WANT completions are ready, but return
                // with whatever is there once batch_wait has passed (or at
                // the next timer): fewer wake-ups under load, bounded delay.
                want = BATCH_WANT;
                args = args
                    .min_wait_usec(u32::try_from(self.batch_wait.as_micros()).unwrap_or(u32::MAX));
            }
            match self.io.ring.submitter().submit_with_args(want, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_recv(
        &mut self,
        now: Instant,
        idx: usize,
        res: i32,
        flags: u32,
        wakes: &mut Vec<i32>,
    ) -> io::Result<()> {
        if res >= 0
            && let Some(bid) = cqueue::buffer_select(flags)
        {
            let len = usize::try_from(res).unwrap_or(0);
            let buf = self.io.bufring.buffer(bid, len);
            if let Ok(msg) = RecvMsgOut::parse(buf, &self.io.recv_hdr) {
                self.stats
                    .bytes_in
                    .fetch_add(msg.payload_data().len() as u64, Ordering::Relaxed);
                if msg.is_payload_truncated() {
                    self.stats.discard(Discard::Oversized);
                } else if let Some(src) = decode_sockaddr(msg.name_data()) {
                    let local = LocalId(u16::try_from(idx).unwrap_or(0));
                    let data = msg.payload_data();
                    if let Disposition::HandOff(owner) =
                        self.engine.handle_datagram(now, src, local, data)
                    {
                        ShardStats::inc(&self.stats.handed_off);
                        if let Some(mb) = self.mailboxes.get(usize::from(owner.0)) {
                            let h = Handoff {
                                src,
                                local,
                                data: data.into(),
                            };
                            match mb.push(h) {
                                Ok(true) => wakes.push(mb.ring_fd()),
                                Ok(false) => {}
                                Err(_) => self.stats.discard(Discard::Unanswerable),
                            }
                        }
                    }
                }
            }
            self.io.bufring.recycle(bid);
        } else if res < 0 && -res != libc::ENOBUFS {
            tracing::warn!(error = %io::Error::from_raw_os_error(-res), "recvmsg failed");
        }
        if !cqueue::more(flags) {
            // Multishot ended (buffers ran out, or an error): re-arm.
            self.io.armed[idx] = false;
            self.io.bufring.publish();
            self.io.arm_recv(idx)?;
        }
        Ok(())
    }
}
