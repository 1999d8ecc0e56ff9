//! The shard loop on io_uring: multishot `recvmsg` into provided-buffer
//! rings (one for SIP, one for media), batched `sendmsg` from fixed send
//! slots, `IORING_OP_MSG_RING` to wake another shard when a datagram is
//! handed over, and a single-shot receive fallback for kernels without
//! provided buffer rings. Unsafe code lives here, in `bufring.rs` and in
//! `slots.rs`.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use io_uring::types::{CancelBuilder, Fd, Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};

use super::bufring::BufRing;
use super::mailbox::{Handoff, Mailbox};
use super::nexthop::Lookup;
use super::slots::{RecvSlot, SendPool, empty_msghdr};
use super::socket::decode_sockaddr;
use super::stream::{
    ACCEPT, CONN_CANCEL, CONN_CONNECT, CONN_RECV, CONN_SEND, Inbound, StreamListener, Streams,
};
use super::xdp::XdpPath;
use sbc_core::b2bua::{Disposition, Engine};
use sbc_core::media::MediaDrop;
use sbc_core::net::{Flow, LocalId};
use sbc_core::policy::Policy;
use sbc_core::stats::{Discard, ShardStats};

const KIND_SHIFT: u32 = 56;
const RECV: u64 = 1 << KIND_SHIFT;
const SEND_SIP: u64 = 2 << KIND_SHIFT;
const SEND_MEDIA: u64 = 3 << KIND_SHIFT;
const WAKE: u64 = 4 << KIND_SHIFT;
const MSG_RING: u64 = 5 << KIND_SHIFT;
const XSK_POLL: u64 = 6 << KIND_SHIFT;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

const BGID_SIP: u16 = 7;
const BGID_MEDIA: u16 = 8;
/// Largest UDP payload plus the recvmsg header and address.
const SIP_RECV_BUF: usize = 65536 + 256;
const SIP_SEND_BUF: usize = 65536;
/// RTP over UDP stays under the path MTU; room for jumbo frames.
const MEDIA_RECV_BUF: usize = 9216 + 256;
const MEDIA_SEND_BUF: usize = 9216;
/// Submits what is queued and sleeps until `want` completions are ready
/// or the wait in `args` ends; a timeout or an interrupted sleep is no
/// error.
fn submit_and_wait(ring: &IoUring, want: usize, args: &SubmitArgs<'_, '_>) -> io::Result<()> {
    match ring.submitter().submit_with_args(want, args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Longest a stopping shard waits for its connections' last words.
const FAREWELL: Duration = Duration::from_secs(1);
/// Longest sleep, so a stop request is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How many completions a shard waits for before waking, at most; with
/// the coalescing window this cuts wake-ups under load.
const BATCH_WANT: usize = 64;
/// Longest sleep while AF_XDP frames wait for the kernel to take them.
const UNSENT_WAIT: Duration = Duration::from_millis(1);
/// How often the kernel's AF_XDP drop counters are read.
const XDP_STATS_EVERY: Duration = Duration::from_secs(1);
/// Next-hop table lookups per loop round on the AF_XDP path.
const MAX_LOOKUPS: u32 = 8;

/// Sizes of the per-shard I/O resources.
#[derive(Debug, Clone, Copy)]
pub struct RingSizes {
    pub sq_entries: u32,
    /// SIP receive buffers (a power of two, at most 32768).
    pub recv_buffers: u16,
    pub send_slots: u16,
    /// Media receive buffers (a power of two, at most 32768).
    pub media_recv_buffers: u16,
    pub media_send_slots: u16,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            sq_entries: 4096,
            recv_buffers: 256,
            send_slots: 256,
            media_recv_buffers: 4096,
            media_send_slots: 2048,
        }
    }
}

/// How sockets receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecvMode {
    /// Multishot `recvmsg` into provided buffer rings when the kernel has
    /// them (5.19+ for buffer rings, 6.0+ for multishot recvmsg), single
    /// shot otherwise.
    #[default]
    Auto,
    /// Force one `recvmsg` per datagram with per-socket buffers (the
    /// fallback path, selectable to test it).
    Single,
}

/// What a socket carries.
#[derive(Debug, Clone, Copy)]
enum Class {
    Sip(LocalId),
    Media(u16),
}

/// Receive state: shared rings, or a slot per socket.
enum Recv {
    Multishot {
        sip: BufRing,
        media: BufRing,
        hdr: Box<libc::msghdr>,
    },
    Single(Box<[RecvSlot]>),
}

/// What one shard's loop owns.
pub(crate) struct ShardIo {
    // Field order matters for Drop: the ring goes first.
    ring: IoUring,
    /// The AF_XDP fast path, when this shard has one.
    xdp: Option<XdpPath>,
    recv: Recv,
    sockets: Vec<(UdpSocket, Class)>,
    /// Index in `sockets` of the first media socket; media sockets follow
    /// in port order from `media_base`.
    media_start: usize,
    media_base: u16,
    sip_send: SendPool,
    media_send: SendPool,
    /// With a relay on both families: where the sockets of the other
    /// family than the first media socket start (same ports, same order).
    media_other_start: Option<usize>,
    /// The family of the sockets at `media_start`.
    media_v4: bool,
    /// The kernel honours `min_wait_usec` (IORING_FEAT_MIN_TIMEOUT, 6.12+).
    min_timeout: bool,
    /// The sockets are registered files (index = position in `sockets`).
    fixed_files: bool,
    /// `IORING_OP_SEND` takes a destination address (6.0+): sends skip
    /// the msghdr copy and import of `sendmsg`.
    send_to: bool,
    /// Index in `sockets` of the UDP socket of each listener (by
    /// [`LocalId`]); `None` for a stream listener.
    udp_of: Vec<Option<usize>>,
    /// SIP over TCP, when a TCP listener is configured.
    pub(crate) streams: Option<Streams>,
    /// Receives whose final completion was already reaped (while the
    /// shard said goodbye): the drop does not wait for them.
    ended_recvs: usize,
}

impl std::fmt::Debug for ShardIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardIo")
            .field("sockets", &self.sockets.len())
            .finish()
    }
}

pub(crate) fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every pointer an entry carries (a msghdr of a receive or
        // send slot, a send slot's buffer and address, or the multishot
        // template) points into memory owned by
        // the ShardIo, which stays put until the request completes or is
        // cancelled in ShardIo::drop.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// The shard's ring, with a completion queue eight times its submission
/// queue.
fn setup_ring(sq_entries: u32) -> io::Result<IoUring> {
    match IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .setup_cqsize(sq_entries * 8)
        .build(sq_entries)
    {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => Err(e),
        // Kernels before 6.1 lack DEFER_TASKRUN.
        Err(_) => IoUring::builder()
            .setup_cqsize(sq_entries * 8)
            .build(sq_entries),
    }
}

/// How many times a ring is set up at its full size while the kernel
/// answers ENOMEM, with a wait after each, twice as long each time from
/// [`SHORT_OF_MEMORY_WAIT`] (1.3 s in all).
const SHORT_OF_MEMORY_TRIES: u32 = 6;
const SHORT_OF_MEMORY_WAIT: Duration = Duration::from_millis(20);
/// The smallest submission queue a shard settles for.
const SMALLEST_RING: u32 = 256;

/// Sets up `what` (a ring, a provided-buffer ring) of `entries`, riding
/// out a kernel short of memory.
///
/// The kernel allocates a ring's memory at setup (and pins a buffer ring's
/// pages, faulting them in), and with its free pages low (a page cache
/// filling memory, a zone too fragmented for the completion queue's pages)
/// it answers ENOMEM for a moment. So ENOMEM is tried again after a wait,
/// and when the waits are used up, once more with a quarter of the entries
/// (not below [`SMALLEST_RING`]): a shard that starts with a smaller ring
/// serves; one that fails stops the SBC. Any other error is returned as it
/// is.
pub(crate) fn retry_short_of_memory<T>(
    what: &'static str,
    entries: u32,
    mut setup: impl FnMut(u32) -> io::Result<T>,
    mut sleep: impl FnMut(Duration),
) -> io::Result<T> {
    let short = |e: &io::Error| e.raw_os_error() == Some(libc::ENOMEM);
    let mut wait = SHORT_OF_MEMORY_WAIT;
    for _ in 0..SHORT_OF_MEMORY_TRIES {
        match setup(entries) {
            Err(e) if short(&e) => {
                sleep(wait);
                wait = wait.saturating_mul(2);
            }
            done => return done,
        }
    }
    let smaller = (entries / 4).max(SMALLEST_RING.min(entries));
    match setup(smaller) {
        Ok(ring) if smaller < entries => {
            tracing::warn!(
                what,
                entries = smaller,
                wanted = entries,
                "short of memory: the shard runs with fewer entries"
            );
            Ok(ring)
        }
        done => done,
    }
}

impl ShardIo {
    pub(crate) fn new(
        sip: Vec<(UdpSocket, LocalId)>,
        (me, tcp, tls): (
            usize,
            Vec<StreamListener>,
            Arc<ArcSwap<crate::tls::TlsSetup>>,
        ),
        media: (Vec<UdpSocket>, Vec<UdpSocket>),
        media_base: u16,
        sizes: RingSizes,
        mode: RecvMode,
        xdp: Option<XdpPath>,
    ) -> io::Result<Self> {
        let ring = retry_short_of_memory("ring", sizes.sq_entries, setup_ring, std::thread::sleep)?;
        let mut udp_of = Vec::new();
        for (i, (_, local)) in sip.iter().enumerate() {
            let at = usize::from(local.0);
            if udp_of.len() <= at {
                udp_of.resize(at + 1, None);
            }
            if let Some(slot) = udp_of.get_mut(at) {
                *slot = Some(i);
            }
        }
        let mut sockets: Vec<(UdpSocket, Class)> = sip
            .into_iter()
            .map(|(s, local)| (s, Class::Sip(local)))
            .collect();
        let media_start = sockets.len();
        let (media, media_other) = media;
        let media_v4 = media
            .first()
            .and_then(|s| s.local_addr().ok())
            .is_none_or(|a| a.is_ipv4());
        let media_other_start = (!media_other.is_empty()).then(|| media_start + media.len());
        // One socket per port, and with a relay on both families a
        // second run of them, port for port, of the other family.
        for run in [media, media_other] {
            for (i, s) in run.into_iter().enumerate() {
                let port = u16::try_from(usize::from(media_base) + i).unwrap_or(0);
                sockets.push((s, Class::Media(port)));
            }
        }
        let recv = match mode {
            RecvMode::Auto => match Self::multishot(&ring, sizes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "no provided buffer rings: single-shot receive");
                    Self::single(&sockets)
                }
            },
            RecvMode::Single => Self::single(&sockets),
        };
        let min_timeout = ring.params().is_feature_min_timeout();
        // Registered files: the kernel skips the per-request fd lookup.
        let fds: Vec<i32> = sockets.iter().map(|(s, _)| s.as_raw_fd()).collect();
        let fixed_files = ring.submitter().register_files(&fds).is_ok();
        // Zero-copy send arrived with destination addresses on plain send
        // (both 6.0): the probe for one tells the other.
        let mut probe = Probe::new();
        let send_to = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::SendZc::CODE);
        let streams = if tcp.is_empty() {
            None
        } else {
            Some(Streams::new(me, tcp, tls, &ring).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("SIP over TCP and TLS need provided buffer rings (Linux 6.0+): {e}"),
                )
            })?)
        };
        Ok(ShardIo {
            ring,
            xdp,
            recv,
            sockets,
            media_start,
            media_base,
            sip_send: SendPool::new(sizes.send_slots, SIP_SEND_BUF),
            media_send: SendPool::new(sizes.media_send_slots, MEDIA_SEND_BUF),
            media_other_start,
            media_v4,
            min_timeout,
            fixed_files,
            send_to,
            udp_of,
            streams,
            ended_recvs: 0,
        })
    }

    /// Where the media sockets that send to `to` start: those of its
    /// family.
    fn media_start_for(&self, to: std::net::SocketAddr) -> usize {
        match self.media_other_start {
            Some(other) if to.is_ipv4() != self.media_v4 => other,
            _ => self.media_start,
        }
    }

    fn multishot(ring: &IoUring, sizes: RingSizes) -> io::Result<Recv> {
        let sip = BufRing::new(sizes.recv_buffers, SIP_RECV_BUF, BGID_SIP)?;
        let media = BufRing::new(sizes.media_recv_buffers, MEDIA_RECV_BUF, BGID_MEDIA)?;
        for r in [&sip, &media] {
            // SAFETY: the ring memory is page aligned, holds `entries`
            // entries and lives as long as the ShardIo (unregistered in
            // Drop before it is freed).
            unsafe {
                ring.submitter()
                    .register_buf_ring_with_flags(r.ring_addr(), r.entries(), r.bgid, 0)
            }?;
        }
        let mut hdr = Box::new(empty_msghdr());
        hdr.msg_namelen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).unwrap_or(128);
        // Room for the receive timestamp of SIP datagrams.
        hdr.msg_controllen = super::socket::TIMESTAMP_CONTROL;
        Ok(Recv::Multishot { sip, media, hdr })
    }

    fn single(sockets: &[(UdpSocket, Class)]) -> Recv {
        let slots = sockets
            .iter()
            .map(|(_, class)| {
                RecvSlot::new(match class {
                    Class::Sip(_) => SIP_SEND_BUF,
                    Class::Media(_) => MEDIA_SEND_BUF,
                })
            })
            .collect();
        Recv::Single(slots)
    }

    pub(crate) fn ring_fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    fn arm_recv(&mut self, idx: usize) -> io::Result<()> {
        let Some((sock, class)) = self.sockets.get(idx) else {
            return Ok(());
        };
        let fd = Fd(sock.as_raw_fd());
        let fixed = self
            .fixed_files
            .then(|| Fixed(u32::try_from(idx).unwrap_or(u32::MAX)));
        let entry = match &mut self.recv {
            Recv::Multishot { hdr, .. } => {
                let group = match class {
                    Class::Sip(_) => BGID_SIP,
                    Class::Media(_) => BGID_MEDIA,
                };
                match fixed {
                    Some(f) => opcode::RecvMsgMulti::new(f, &**hdr, group).build(),
                    None => opcode::RecvMsgMulti::new(fd, &**hdr, group).build(),
                }
            }
            Recv::Single(slots) => {
                let Some(slot) = slots.get_mut(idx) else {
                    return Ok(());
                };
                match fixed {
                    Some(f) => opcode::RecvMsg::new(f, slot.prepare()).build(),
                    None => opcode::RecvMsg::new(fd, slot.prepare()).build(),
                }
            }
        };
        push(&mut self.ring, &entry.user_data(RECV | idx as u64))
    }

    /// Asks for a completion whenever the AF_XDP socket has frames.
    fn arm_xsk_poll(&mut self) -> io::Result<()> {
        let Some(xdp) = &self.xdp else {
            return Ok(());
        };
        let entry = opcode::PollAdd::new(Fd(xdp.xsk.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(XSK_POLL);
        push(&mut self.ring, &entry)
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
        push(&mut self.ring, &entry)
    }

    /// Moves SIP messages from the engine into free send slots (UDP) or
    /// onto their connections (streams); messages for another shard's
    /// connection go to `elsewhere`.
    fn flush(
        &mut self,
        now: Instant,
        engine: &mut Engine,
        stats: &ShardStats,
        elsewhere: &mut Vec<(usize, Handoff)>,
    ) -> io::Result<()> {
        while let Some(dest) = engine.peek_transmit() {
            if dest.transport.is_reliable() {
                let Some(o) = engine.poll_outgoing() else {
                    break;
                };
                let Some(streams) = &mut self.streams else {
                    stats.discard(sbc_core::stats::Discard::Unanswerable);
                    continue;
                };
                match streams.owner_elsewhere(&o.dest) {
                    Some(shard) => elsewhere.push((
                        shard,
                        Handoff::Send {
                            dest: o.dest,
                            data: o.data,
                        },
                    )),
                    None => streams.send(
                        &mut self.ring,
                        now,
                        (o.dest, o.data),
                        engine.policy(),
                        stats,
                    )?,
                }
                continue;
            }
            let Some(idx) = self.sip_send.take() else {
                break;
            };
            let Some(t) = self
                .sip_send
                .buf(idx)
                .and_then(|buf| engine.poll_transmit(buf))
            else {
                self.sip_send.give_back(idx);
                break;
            };
            let local = self
                .udp_of
                .get(usize::from(t.dest.local.0))
                .copied()
                .flatten()
                .or_else(|| self.udp_of.iter().flatten().next().copied())
                .unwrap_or(usize::MAX);
            let Some((sock, _)) = self.sockets.get(local) else {
                self.sip_send.give_back(idx);
                continue;
            };
            let fd = Fd(sock.as_raw_fd());
            let target = self.fixed_files.then_some(local);
            let Some(entry) = send_entry(
                &mut self.sip_send,
                idx,
                t.len,
                t.dest.remote,
                fd,
                target,
                self.send_to,
            ) else {
                self.sip_send.give_back(idx);
                continue;
            };
            push(&mut self.ring, &entry.user_data(SEND_SIP | u64::from(idx)))?;
        }
        Ok(())
    }
}

/// The SQE sending slot `idx`'s first `len` bytes to `dest` from socket
/// `fd` (or registered file `fixed`).
fn send_entry(
    pool: &mut SendPool,
    idx: u16,
    len: usize,
    dest: std::net::SocketAddr,
    fd: Fd,
    fixed: Option<usize>,
    send_to: bool,
) -> Option<squeue::Entry> {
    let fixed = fixed.map(|i| Fixed(u32::try_from(i).unwrap_or(u32::MAX)));
    if send_to {
        let to = pool.prepare_to(idx, len, dest)?;
        let entry = match fixed {
            Some(f) => opcode::Send::new(f, to.buf, to.len),
            None => opcode::Send::new(fd, to.buf, to.len),
        };
        return Some(entry.dest_addr(to.addr).dest_addr_len(to.addr_len).build());
    }
    let hdr = pool.prepare(idx, len, dest)?;
    Some(match fixed {
        Some(f) => opcode::SendMsg::new(f, hdr).build(),
        None => opcode::SendMsg::new(fd, hdr).build(),
    })
}

/// Sends a media packet out of our port `from_port` (a free function so the
/// receive memory holding `data` can stay borrowed meanwhile).
#[allow(clippy::too_many_arguments)]
fn send_media(
    ring: &mut IoUring,
    sockets: &[(UdpSocket, Class)],
    media_start: usize,
    media_base: u16,
    pool: &mut SendPool,
    from_port: u16,
    to: std::net::SocketAddr,
    data: &[u8],
    stats: &ShardStats,
    fixed_files: bool,
    send_to: bool,
) -> io::Result<()> {
    let index = usize::from(from_port.wrapping_sub(media_base)) + media_start;
    let Some((sock, Class::Media(_))) = sockets.get(index) else {
        stats.media_drop(MediaDrop::UnknownPort);
        return Ok(());
    };
    let fd = Fd(sock.as_raw_fd());
    if data.len() > MEDIA_SEND_BUF {
        // Larger than a send slot: dropped whole, never cut short.
        stats.media_drop(MediaDrop::Oversized);
        return Ok(());
    }
    let Some(idx) = pool.take() else {
        stats.media_drop(MediaDrop::PoolExhausted);
        return Ok(());
    };
    let Some(buf) = pool.buf(idx).filter(|b| b.len() >= data.len()) else {
        pool.give_back(idx);
        stats.media_drop(MediaDrop::Oversized);
        return Ok(());
    };
    let n = data.len();
    buf[..n].copy_from_slice(data);
    let Some(entry) = send_entry(pool, idx, n, to, fd, fixed_files.then_some(index), send_to)
    else {
        pool.give_back(idx);
        return Ok(());
    };
    push(ring, &entry.user_data(SEND_MEDIA | u64::from(idx)))
}

/// Takes the completions ready; returns how many were receives' final
/// ones (a multishot receive that ended, or a single-shot one).
fn ended_receives(ring: &mut IoUring) -> usize {
    ring.completion()
        .filter(|c| c.user_data() & !INDEX_MASK == RECV && !cqueue::more(c.flags()))
        .count()
}

impl Drop for ShardIo {
    fn drop(&mut self) {
        // Cancel every request still in flight and wait (up to a second)
        // for the kernel to let go of the buffers and slots they point to,
        // before the memory is freed.
        let timeout = Timespec::new().sec(1);
        // What the last round queued but did not submit (a receive armed
        // again after its final completion, left queued when the submission
        // met a full completion queue, or when the loop left on an error)
        // goes in first, so the cancel reaches it: submitted later, by the
        // reaping below, it would stay armed and hold its socket, and the
        // port, until the kernel tears the ring down after the stop.
        let _ = self.ring.submit();
        // Each socket's receive first, named by its own user data, newest
        // first, in batches of 256. Cancelling "any" at once made the
        // kernel (6.18) walk its armed requests again for every one it
        // cancelled, since a cancelled request leaves them only when the
        // ring's deferred work runs: with a shard's 10,000 media sockets
        // the stop took 0.65 s of CPU, close to the second allowed (now
        // 20 ms). After each batch, a wait for as many completions as
        // receives were cancelled runs that work (a wait runs only about
        // as much of it as it waits for) and the final completions are
        // reaped, so the completion queue never fills.
        let mut armed = self.sockets.len().saturating_sub(self.ended_recvs);
        let mut cancelled = 0;
        for (n, idx) in (0..self.sockets.len()).rev().enumerate() {
            let r = self
                .ring
                .submitter()
                .register_sync_cancel(Some(timeout), CancelBuilder::user_data(RECV | idx as u64));
            cancelled += usize::from(r.is_ok());
            if n % 256 == 255 || idx == 0 {
                let ts = Timespec::new().nsec(10_000_000);
                let _ = self
                    .ring
                    .submitter()
                    .submit_with_args(cancelled, &SubmitArgs::new().timespec(&ts));
                cancelled = 0;
                armed = armed.saturating_sub(ended_receives(&mut self.ring));
            }
        }
        // Whatever else is in flight (sends, stream requests), now few.
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), CancelBuilder::any());
        // Reap the cancelled receives (one final completion per socket:
        // each has one armed), so they are freed, with the socket
        // references they hold, now. Bounded: a receive that had already
        // ended is not waited for past the second.
        armed = armed.saturating_sub(ended_receives(&mut self.ring));
        let deadline = Instant::now() + Duration::from_secs(1);
        while armed > 0 && Instant::now() < deadline {
            let ts = Timespec::new().nsec(10_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            armed = armed.saturating_sub(ended_receives(&mut self.ring));
        }
        if let Recv::Multishot { .. } = self.recv {
            let _ = self.ring.submitter().unregister_buf_ring(BGID_SIP);
            let _ = self.ring.submitter().unregister_buf_ring(BGID_MEDIA);
        }
        if self.streams.is_some() {
            let _ = self
                .ring
                .submitter()
                .unregister_buf_ring(super::stream::BGID_STREAM);
        }
        // Let go of the registered sockets now: otherwise the kernel keeps
        // them (and their ports) until it has torn the ring down, after
        // this process is gone, and a restart finds its ports in use.
        if self.fixed_files {
            let _ = self.ring.submitter().unregister_files();
        }
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
    pub directory: super::Directory,
    pub stop: Arc<AtomicBool>,
    /// Once woken by a first completion, how long to wait for more before
    /// processing (interrupt-coalescing style; a zero window disables).
    pub pacer: super::Pacer,
    /// When the last media datagram arrived (it shortens the wait).
    pub media_seen: Option<Instant>,
    /// Overload control: queue waits and the thread's CPU share set the
    /// engine's share of new calls admitted.
    pub governor: sbc_core::overload::Governor,
    /// Fault injection: the loop ends with an error at its first wake-up
    /// after this ([`super::RuntimeConfig::stop_shard_after`]).
    pub fault_at: Option<Instant>,
    /// The wall clock at this round's start (received datagrams carry
    /// their kernel receive time on it).
    pub wall: std::time::SystemTime,
    /// The window in which this shard last told the others of peers it
    /// could not send to ([`Handoff::Unsent`]): its start, and how many.
    pub unsent_forwarded: Option<(Instant, usize)>,
}

/// The calling thread's CPU time so far, user and system (zero if the
/// clock cannot be read, which only makes the load look lighter).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration;
    // CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Puts `h` in shard `to`'s mailbox, noting the ring to wake; a full
/// mailbox drops it (counted).
fn post(
    mailboxes: &[Arc<Mailbox>],
    stats: &ShardStats,
    to: usize,
    h: Handoff,
    wakes: &mut Vec<i32>,
) {
    let Some(mb) = mailboxes.get(to) else {
        return;
    };
    match mb.push(h) {
        Ok(true) => wakes.push(mb.ring_fd()),
        Ok(false) => {}
        Err(_) => stats.discard(Discard::Unanswerable),
    }
}

/// Hands a message for a call (or binding) another shard owns to that
/// shard's mailbox.
fn hand_off(
    mailboxes: &[Arc<Mailbox>],
    stats: &ShardStats,
    owner: sbc_core::b2bua::ShardId,
    origin: Flow,
    data: &[u8],
    wakes: &mut Vec<i32>,
) {
    ShardStats::inc(&stats.handed_off);
    let h = Handoff::Datagram {
        origin,
        data: data.into(),
    };
    post(mailboxes, stats, usize::from(owner.0), h, wakes);
}

/// A datagram read by a completion: where it came from and its bytes.
struct Received<'b> {
    src: Option<std::net::SocketAddr>,
    data: &'b [u8],
    truncated: bool,
    /// When the kernel received it (SIP sockets, multishot receive).
    stamp: Option<std::time::SystemTime>,
}

impl ShardLoop {
    pub(crate) fn run(mut self) -> io::Result<()> {
        for i in 0..self.io.sockets.len() {
            self.io.arm_recv(i)?;
        }
        self.io.arm_xsk_poll()?;
        if let Some(streams) = &mut self.io.streams {
            streams.arm(&mut self.io.ring)?;
        }
        let mut inbound: Vec<Inbound> = Vec::new();
        let mut elsewhere: Vec<(usize, Handoff)> = Vec::new();
        // Installing the starting snapshot plans its health probes.
        let first = Arc::clone(self.engine.policy());
        self.engine.set_policy(Instant::now(), first);
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
        let mut wakes: Vec<i32> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.fault_at.is_some_and(|at| now >= at) {
                return Err(io::Error::other("stopped by fault injection"));
            }
            self.wall = std::time::SystemTime::now();
            ShardStats::inc(&self.stats.loop_iterations);
            let current = self.policy.load();
            if !Arc::ptr_eq(&current, self.engine.policy()) {
                self.engine.set_policy(now, Arc::clone(&current));
            }

            completions.clear();
            completions.extend(
                self.io
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            // Connects first: a trunk connection that could not be opened
            // fails its calls over (RFC 3261 §8.1.3.1) before this round's
            // new requests are routed, so none of theirs, still to be
            // sent, is taken for one that never left.
            for &(ud, res, flags) in &completions {
                if ud & !INDEX_MASK == CONN_CONNECT {
                    let idx = (ud & INDEX_MASK) as usize;
                    self.on_stream(now, ud, idx, res, flags, &mut inbound)?;
                }
            }
            if let Some(streams) = &mut self.io.streams {
                for (transport, remote) in streams.take_unsent() {
                    self.engine.handle_unsent(now, transport, remote);
                    // A phone's connection is this shard's, but the call
                    // ringing it may be another's (a trunk's connections
                    // are each shard's own). At most UNSENT_PEERS peers
                    // per PEER_SCAN_EVERY, so that strangers whose answers
                    // cannot be delivered do not fill the mailboxes.
                    if self.mailboxes.len() < 2 || self.engine.is_trunk(transport, remote) {
                        continue;
                    }
                    let window = match self.unsent_forwarded {
                        Some((start, n))
                            if now.saturating_duration_since(start)
                                < sbc_core::b2bua::PEER_SCAN_EVERY =>
                        {
                            (start, n)
                        }
                        _ => (now, 0),
                    };
                    if window.1 >= sbc_core::b2bua::UNSENT_PEERS {
                        continue;
                    }
                    self.unsent_forwarded = Some((window.0, window.1 + 1));
                    elsewhere.extend(
                        (0..self.mailboxes.len())
                            .filter(|&shard| shard != self.me)
                            .map(|shard| (shard, Handoff::Unsent { transport, remote })),
                    );
                }
            }
            let mut received = 0u64;
            for &(ud, res, flags) in &completions {
                let idx = (ud & INDEX_MASK) as usize;
                received += u64::from(ud & !INDEX_MASK == RECV);
                match ud & !INDEX_MASK {
                    RECV => self.on_recv(now, idx, res, flags, &mut wakes)?,
                    XSK_POLL if !cqueue::more(flags) => self.io.arm_xsk_poll()?,
                    ACCEPT | CONN_RECV | CONN_SEND | CONN_CANCEL => {
                        self.on_stream(now, ud, idx, res, flags, &mut inbound)?;
                    }
                    SEND_SIP | SEND_MEDIA => {
                        let pool = if ud & !INDEX_MASK == SEND_SIP {
                            &mut self.io.sip_send
                        } else {
                            &mut self.io.media_send
                        };
                        pool.give_back(u16::try_from(idx).unwrap_or(u16::MAX));
                        if res < 0 {
                            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "sendmsg failed");
                        } else if ud & !INDEX_MASK == SEND_SIP {
                            self.stats
                                .bytes_out
                                .fetch_add(u64::from(res.unsigned_abs()), Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
            if let Recv::Multishot { sip, media, .. } = &self.io.recv {
                sip.publish();
                media.publish();
            }

            received += self.relay_xdp(now)?;
            received += inbound.len() as u64;

            // Messages framed out of stream connections.
            for m in inbound.drain(..) {
                self.deliver(now, m.flow, &m.data, &mut wakes);
            }
            if let Some(streams) = &mut self.io.streams {
                streams.sweep(&mut self.io.ring, now, &self.stats)?;
            }

            // Datagrams other shards handed to us.
            let mailbox = &self.mailboxes[self.me];
            mailbox.rearm();
            while let Some(h) = mailbox.pop() {
                match h {
                    Handoff::Datagram { origin, data } => {
                        received += 1;
                        let _ = self.engine.handle_datagram(now, origin, &data);
                    }
                    Handoff::Message(m) => self.engine.handle_shard_message(now, m),
                    Handoff::Send { dest, data } => {
                        if let Some(streams) = &mut self.io.streams {
                            // The connection is ours (its id says so).
                            streams.send(
                                &mut self.io.ring,
                                now,
                                (dest, data),
                                self.engine.policy(),
                                &self.stats,
                            )?;
                        }
                    }
                    Handoff::Unsent { transport, remote } => {
                        self.engine.handle_unsent(now, transport, remote);
                    }
                }
            }

            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.io
                .flush(now, &mut self.engine, &self.stats, &mut elsewhere)?;
            // Stream work that is a chain of round trips (a connection
            // being set up, a handshake, output waiting behind a send in
            // flight) makes the next wait not linger for more completions;
            // established connections coalesce like datagrams.
            let streamed = self.io.streams.as_mut().is_some_and(|s| s.take_urgent(now));
            for (shard, h) in elsewhere.drain(..) {
                post(&self.mailboxes, &self.stats, shard, h, &mut wakes);
            }
            while let Some(event) = self.engine.poll_event() {
                super::events::log(self.me, &event);
                if let (sbc_core::b2bua::Event::Registration(change), Some(to)) =
                    (event, &self.directory.changes)
                {
                    // The control plane applies, persists and publishes it.
                    let _ = to.send(change);
                }
            }
            // The engine's messages for other shards (binding lookups).
            // A full mailbox drops a lookup: the asking call times out.
            while let Some((to, m)) = self.engine.poll_shard_message() {
                let h = Handoff::Message(m);
                post(
                    &self.mailboxes,
                    &self.stats,
                    usize::from(to.0),
                    h,
                    &mut wakes,
                );
            }
            for fd in wakes.drain(..) {
                self.io.wake(fd)?;
            }

            // The load signal: queue waits, and this thread's CPU time
            // (read once a window).
            let worked = Instant::now();
            let spent = worked.saturating_duration_since(now).as_nanos();
            self.stats
                .busy_nanos
                .fetch_add(u64::try_from(spent).unwrap_or(u64::MAX), Ordering::Relaxed);
            if let Some(admit) = self.governor.record(worked, thread_cpu_time) {
                self.engine.set_admission(admit);
            }
            let busy = self.engine.pending_transmits() > 0 && self.io.sip_send.has_free();
            // Frames the kernel could not take yet are kicked again soon.
            let max_wait = if self.io.xdp.as_ref().is_some_and(|x| x.xsk.unsent()) {
                UNSENT_WAIT
            } else {
                MAX_WAIT
            };
            let wait = if busy {
                Duration::ZERO
            } else {
                self.engine
                    .poll_timeout()
                    .map_or(max_wait, |t| t.saturating_duration_since(Instant::now()))
                    .min(max_wait)
            };
            let ts = Timespec::from(wait);
            let mut args = SubmitArgs::new().timespec(&ts);
            let mut want = usize::from(!busy && !wait.is_zero());
            self.pacer.received(worked, received);
            // At least 1 µs: a zero min_wait would wait for all BATCH_WANT.
            let window = match self.pacer.window(worked, self.media_seen) {
                w if w.is_zero() => w,
                w => w.max(Duration::from_micros(1)),
            };
            if want > 0 && self.io.min_timeout && !window.is_zero() && !streamed {
                // Sleep until BATCH_WANT completions are ready, but return
                // with whatever is there once the window has passed (or at
                // the next timer): fewer wake-ups under load, bounded delay.
                want = BATCH_WANT;
                args = args.min_wait_usec(u32::try_from(window.as_micros()).unwrap_or(u32::MAX));
            }
            submit_and_wait(&self.io.ring, want, &args)?;
        }
        self.farewell()
    }

    /// A completion of a stream listener or connection.
    fn on_stream(
        &mut self,
        now: Instant,
        ud: u64,
        idx: usize,
        res: i32,
        flags: u32,
        inbound: &mut Vec<Inbound>,
    ) -> io::Result<()> {
        let io = &mut self.io;
        let Some(streams) = &mut io.streams else {
            return Ok(());
        };
        let slot = u16::try_from(idx).unwrap_or(u16::MAX);
        let ring = &mut io.ring;
        match ud & !INDEX_MASK {
            ACCEPT => streams.on_accept(ring, now, idx, res, flags, &self.stats),
            CONN_RECV => streams.on_recv(ring, now, slot, res, flags, &self.stats, inbound),
            CONN_SEND => streams.on_send(ring, now, slot, res, &self.stats),
            CONN_CONNECT => streams.on_connect(ring, slot, res, &self.stats),
            CONN_CANCEL => {
                streams.on_cancel();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The shard stops: its stream connections say their last words (TLS
    /// close_notify, a WebSocket close) and close, for `FAREWELL` at most;
    /// what arrives meanwhile is not read.
    fn farewell(&mut self) -> io::Result<()> {
        let start = Instant::now();
        match &mut self.io.streams {
            Some(streams) => streams.close_all(&mut self.io.ring, start, &self.stats)?,
            None => return Ok(()),
        }
        let mut ignored: Vec<Inbound> = Vec::new();
        let mut completions: Vec<(u64, i32, u32)> = Vec::new();
        while self.io.streams.as_ref().is_some_and(Streams::finishing) {
            let now = Instant::now();
            let Some(left) = FAREWELL.checked_sub(now.saturating_duration_since(start)) else {
                break;
            };
            let ts = Timespec::from(left.min(MAX_WAIT));
            let args = SubmitArgs::new().timespec(&ts);
            submit_and_wait(&self.io.ring, 1, &args)?;
            completions.clear();
            completions.extend(
                self.io
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &completions {
                let idx = (ud & INDEX_MASK) as usize;
                match ud & !INDEX_MASK {
                    ACCEPT | CONN_RECV | CONN_SEND | CONN_CONNECT | CONN_CANCEL => {
                        self.on_stream(Instant::now(), ud, idx, res, flags, &mut ignored)?;
                    }
                    // A datagram receive that ended is not armed again.
                    RECV if !cqueue::more(flags) => self.io.ended_recvs += 1,
                    _ => {}
                }
            }
            ignored.clear();
        }
        Ok(())
    }

    /// A message from a stream connection, to the engine or the shard
    /// that owns its call.
    fn deliver(&mut self, now: Instant, origin: Flow, data: &[u8], wakes: &mut Vec<i32>) {
        if let Disposition::HandOff(owner) = self.engine.handle_datagram(now, origin, data) {
            hand_off(&self.mailboxes, &self.stats, owner, origin, data, wakes);
        }
    }

    /// Relays the frames the AF_XDP socket holds: each accepted frame is
    /// rewritten in place and transmitted from the same memory when the
    /// destination's next hop is resolved, else its payload goes out
    /// through the UDP socket of its port (as on the socket path).
    /// Relays the frames the AF_XDP socket holds; how many there were.
    fn relay_xdp(&mut self, now: Instant) -> io::Result<u64> {
        let io = &mut self.io;
        let Some(path) = io.xdp.as_mut() else {
            return Ok(0);
        };
        if now.saturating_duration_since(path.stats_read) >= XDP_STATS_EVERY {
            path.stats_read = now;
            if let Some(drops) = path.xsk.kernel_drops() {
                for (counter, v) in self.stats.xdp_kernel_dropped.iter().zip(drops) {
                    counter.store(v, Ordering::Relaxed);
                }
            }
        }
        let (umem, xsk) = path.xsk.parts();
        xsk.reap();
        let mut received = 0u64;
        let mut sent = 0u64;
        let mut fallback = 0u64;
        // Table lookups per round, so a burst of new destinations cannot
        // hold the loop up.
        let mut lookups = MAX_LOOKUPS;
        while let Some((addr, len)) = xsk.next() {
            received += 1;
            self.media_seen = Some(now);
            let Some(frame) = umem.frame(addr, len) else {
                self.stats.media_drop(MediaDrop::Malformed);
                xsk.recycle(addr);
                continue;
            };
            let Some(parsed) = sbc_core::media::frame::parse(frame) else {
                self.stats.media_drop(MediaDrop::Malformed);
                xsk.recycle(addr);
                continue;
            };
            let payload = frame.get(parsed.payload.clone()).unwrap_or(b"");
            let src = std::net::SocketAddr::V4(parsed.src);
            let Some(f) = self
                .engine
                .handle_media(now, parsed.dst.port(), src, payload)
            else {
                xsk.recycle(addr);
                continue;
            };
            let hop = match f.to {
                std::net::SocketAddr::V4(to) => match path.hops.lookup(now, *to.ip()) {
                    Lookup::Hop(mac) => Some((to, mac)),
                    Lookup::Socket => None,
                    Lookup::Resolve if lookups > 0 => {
                        lookups -= 1;
                        let first = path.hops.is_new(*to.ip());
                        let mac = path.netlink.resolve(path.ifindex, path.link, *to.ip());
                        path.hops.store(now, *to.ip(), mac);
                        // After an expiry this packet takes the socket,
                        // which has the kernel check the neighbour.
                        mac.filter(|_| first).map(|m| (to, m))
                    }
                    Lookup::Resolve => None,
                },
                std::net::SocketAddr::V6(_) => None,
            };
            match hop {
                Some((to, mac)) if xsk.can_send() => {
                    let from = std::net::SocketAddrV4::new(path.source, f.from_port);
                    if sbc_core::media::frame::rewrite_parsed(
                        frame,
                        &parsed,
                        (path.link.mac, mac),
                        from,
                        to,
                    ) {
                        xsk.send(addr, len);
                        sent += 1;
                    } else {
                        self.stats.media_drop(MediaDrop::Malformed);
                        xsk.recycle(addr);
                    }
                }
                _ => {
                    // Not for the fast path (another family, no next hop):
                    // from the socket of the destination's family.
                    let start = match io.media_other_start {
                        Some(other) if f.to.is_ipv4() != io.media_v4 => other,
                        _ => io.media_start,
                    };
                    let result = send_media(
                        &mut io.ring,
                        &io.sockets,
                        start,
                        io.media_base,
                        &mut io.media_send,
                        f.from_port,
                        f.to,
                        payload,
                        &self.stats,
                        io.fixed_files,
                        io.send_to,
                    );
                    fallback += 1;
                    xsk.recycle(addr);
                    result?;
                }
            }
        }
        // Counted before the frames leave, so whoever receives them sees
        // them counted.
        if received > 0 {
            self.stats
                .xdp_received
                .fetch_add(received, Ordering::Relaxed);
            self.stats.xdp_sent.fetch_add(sent, Ordering::Relaxed);
            self.stats
                .xdp_fallback
                .fetch_add(fallback, Ordering::Relaxed);
        }
        xsk.flush();
        Ok(received)
    }

    fn on_recv(
        &mut self,
        now: Instant,
        idx: usize,
        res: i32,
        flags: u32,
        wakes: &mut Vec<i32>,
    ) -> io::Result<()> {
        let Some(class) = self.io.sockets.get(idx).map(|(_, c)| *c) else {
            return Ok(());
        };
        let len = usize::try_from(res).unwrap_or(0);
        let mut recycle = None;
        // Borrow only the receive memory here, so the engine, the stats and
        // the send pools stay usable below.
        let received = match &self.io.recv {
            _ if res < 0 => None,
            Recv::Multishot { sip, media, hdr } => {
                let ring = match class {
                    Class::Sip(_) => sip,
                    Class::Media(_) => media,
                };
                cqueue::buffer_select(flags).and_then(|bid| {
                    recycle = Some(bid);
                    let buf = ring.buffer(bid, len);
                    let m = RecvMsgOut::parse(buf, hdr).ok()?;
                    // The payload follows the recvmsg header, the name and
                    // the control data (io_uring_recvmsg_out is 16 bytes).
                    let start = 16 + hdr.msg_namelen as usize + hdr.msg_controllen;
                    Some(Received {
                        src: decode_sockaddr(m.name_data()),
                        data: buf
                            .get(start..start + m.payload_data().len())
                            .unwrap_or(b""),
                        truncated: m.is_payload_truncated(),
                        stamp: super::socket::received_at(m.control_data()),
                    })
                })
            }
            Recv::Single(slots) => slots.get(idx).map(|slot| {
                let (name, data, truncated) = slot.received(len);
                Received {
                    src: decode_sockaddr(name),
                    data,
                    truncated,
                    stamp: None,
                }
            }),
        };
        if let Some(r) = received {
            match (class, r.src) {
                (Class::Media(_), _) if r.truncated => self.stats.media_drop(MediaDrop::Oversized),
                _ if r.truncated => self.stats.discard(Discard::Oversized),
                (Class::Sip(local), Some(src)) => {
                    self.stats
                        .bytes_in
                        .fetch_add(r.data.len() as u64, Ordering::Relaxed);
                    // How long it waited in the socket: the overload signal.
                    if let Some(waited) = r.stamp.and_then(|at| self.wall.duration_since(at).ok()) {
                        self.governor.queued(waited);
                    }
                    let origin = Flow::udp(src, local);
                    if let Disposition::HandOff(owner) =
                        self.engine.handle_datagram(now, origin, r.data)
                    {
                        hand_off(&self.mailboxes, &self.stats, owner, origin, r.data, wakes);
                    }
                }
                (Class::Media(port), Some(src)) => {
                    self.media_seen = Some(now);
                    if let Some(f) = self.engine.handle_media(now, port, src, r.data) {
                        let start = self.io.media_start_for(f.to);
                        send_media(
                            &mut self.io.ring,
                            &self.io.sockets,
                            start,
                            self.io.media_base,
                            &mut self.io.media_send,
                            f.from_port,
                            f.to,
                            r.data,
                            &self.stats,
                            self.io.fixed_files,
                            self.io.send_to,
                        )?;
                    }
                }
                (_, None) => {}
            }
        } else if res < 0 && -res != libc::ENOBUFS {
            tracing::warn!(error = %io::Error::from_raw_os_error(-res), "recvmsg failed");
        }
        if let (Some(bid), Recv::Multishot { sip, media, .. }) = (recycle, &mut self.io.recv) {
            match class {
                Class::Sip(_) => sip.recycle(bid),
                Class::Media(_) => media.recycle(bid),
            }
        }
        let rearm = match self.io.recv {
            Recv::Multishot { .. } => !cqueue::more(flags),
            Recv::Single(_) => true,
        };
        if rearm {
            if let Recv::Multishot { sip, media, .. } = &self.io.recv {
                sip.publish();
                media.publish();
            }
            self.io.arm_recv(idx)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{SHORT_OF_MEMORY_TRIES, retry_short_of_memory, thread_cpu_time};
    use std::io;
    use std::time::Duration;

    fn enomem() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOMEM)
    }

    #[test]
    fn a_ring_short_of_memory_is_set_up_again_after_growing_waits() {
        let mut asked = Vec::new();
        let mut slept = Vec::new();
        let got = retry_short_of_memory(
            "test",
            4096,
            |n| {
                asked.push(n);
                if asked.len() < 3 {
                    Err(enomem())
                } else {
                    Ok(n)
                }
            },
            |d| slept.push(d),
        );
        assert_eq!(got.ok(), Some(4096));
        assert_eq!(asked, [4096, 4096, 4096]);
        assert_eq!(
            slept,
            [Duration::from_millis(20), Duration::from_millis(40)]
        );
    }

    #[test]
    fn when_the_waits_run_out_a_quarter_ring_is_tried_once_then_the_error_stands() {
        let mut asked = Vec::new();
        let mut slept = Duration::ZERO;
        let got = retry_short_of_memory(
            "test",
            4096,
            |n| {
                asked.push(n);
                if n == 4096 { Err(enomem()) } else { Ok(n) }
            },
            |d| slept += d,
        );
        assert_eq!(got.ok(), Some(1024));
        let tries = usize::try_from(SHORT_OF_MEMORY_TRIES).unwrap_or(0);
        assert_eq!(asked.len(), tries + 1);
        assert_eq!(slept, Duration::from_millis(20 * 63));

        // Never below the floor, and never above what was asked.
        let mut last = 0;
        let got = retry_short_of_memory(
            "test",
            512,
            |n| {
                last = n;
                Err::<u32, _>(enomem())
            },
            |_| {},
        );
        assert_eq!(got.err().and_then(|e| e.raw_os_error()), Some(libc::ENOMEM));
        assert_eq!(last, 256);
        let got = retry_short_of_memory(
            "test",
            64,
            |n| {
                last = n;
                Err::<u32, _>(enomem())
            },
            |_| {},
        );
        assert!(got.is_err());
        assert_eq!(last, 64);
    }

    #[test]
    fn other_errors_are_not_tried_again() {
        let mut calls = 0;
        let got = retry_short_of_memory(
            "test",
            4096,
            |_| {
                calls += 1;
                Err::<u32, _>(io::Error::from_raw_os_error(libc::EINVAL))
            },
            |_| panic!("no wait for EINVAL"),
        );
        assert_eq!(got.err().and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
        assert_eq!(calls, 1);
    }

    #[test]
    fn the_thread_cpu_clock_counts_this_threads_work() {
        let start = thread_cpu_time();
        assert!(start > Duration::ZERO);
        // Work until the clock moves a millisecond (bounded in count).
        let mut x = 1u64;
        let mut moved = false;
        for _ in 0..10_000 {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            if thread_cpu_time() >= start + Duration::from_millis(1) {
                moved = true;
                break;
            }
        }
        assert!(moved, "{x}");
        // Another thread's clock is its own: it starts near zero, not here.
        let other = std::thread::spawn(thread_cpu_time)
            .join()
            .unwrap_or_default();
        assert!(other < thread_cpu_time());
    }
}
