//! One load thread: a UDP socket driven by its own io_uring (multishot
//! `recvmsg` into a provided-buffer ring, batched `sendmsg` from fixed send
//! slots), or TCP connections polled through it ([`crate::stream`]), an
//! [`Endpoint`] with the thread's calls, and rate control.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use sbc_dataplane::shard::{
    BufRing, SendPool, decode_sockaddr, empty_msghdr, reuseport_tcp, reuseport_udp,
};

use crate::engine::{Config, Endpoint, Start};
use crate::gso::{Grouper, Limits};
use crate::media::{MediaSender, MediaSockets};
use crate::percall::PerCall;
use crate::rate::RatePlan;
use crate::scenario::IntCmd;
use crate::scenario::Scenario;
use crate::stats::Stats;
use crate::steer::{Steer, share};
use crate::stream::{Mode, Streams};
use crate::tracefile::TraceFiles;

const RECV: u64 = 1;
/// The polls of the 3PCC twin sockets: [`crate::twin::Twins`]'s token in
/// the low bits.
const TWIN: u64 = 1 << 45;
const SEND: u64 = 2 << 32;
/// The poll of a TCP listener.
const LISTEN: u64 = 5;
/// `-t un`: the receive of a call socket (its slot in the low bits), and
/// the cancellation of one.
const UN_RECV: u64 = 1 << 44;
const UN_CANCEL: u64 = 1 << 43;
/// The poll of a TCP connection: slot in the low 24 bits, its
/// generation (8 bits) above; [`STREAM_OUT`] marks a poll for writing.
const STREAM: u64 = 1 << 48;
const STREAM_OUT: u64 = 1 << 47;
const BGID: u16 = 1;
const RECV_BUFFERS: u16 = 2048;
/// Largest datagram received, plus the recvmsg header and address.
const RECV_BUF: usize = 16384 + 256;
const SEND_SLOTS: u16 = 4096;
const SEND_BUF: usize = 16384;
/// Most datagrams in one UDP GSO send (UDP_MAX_SEGMENTS on older kernels).
const GSO_SEGMENTS: u32 = 64;
/// Longest sleep, so a stop request is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Calls started per loop iteration at most (keeps receive latency low
/// when catching up).
const START_BURST: u64 = 512;

/// What one thread does.
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    pub index: usize,
    pub threads: usize,
    pub bind: SocketAddr,
    /// Share other threads' port (a callee on one port).
    pub reuse_port: bool,
    /// Where a caller sends; `None` for a callee.
    pub remote: Option<SocketAddr>,
    /// `-rsa`: where messages go instead (and what `--connect` connects
    /// to).
    pub send_to: Option<SocketAddr>,
    /// This thread's share of the call rate (calls per second), rising
    /// with `-rate_increase`.
    pub rate: RatePlan,
    /// `-users`: this thread's share of the calls kept open at once
    /// (instead of a rate).
    pub users: Option<usize>,
    /// The first of this thread's users (SIPp's user ids start at 1).
    pub first_user: u32,
    /// Stop creating calls once the rate reaches `-rate_max` (SIPp quits
    /// there unless `-no_rate_quit`).
    pub quit_at_max: bool,
    /// This thread's share of `-l` (open calls).
    pub limit: Option<usize>,
    pub core: Option<usize>,
    /// Connect the socket to `remote` (`--connect`).
    pub connect: bool,
    /// `-t u1`: `None`; `-t t1`, `-t tn`: TCP.
    pub tcp: Option<Mode>,
    /// `-t l1`, `-t ln`: TLS on the TCP connections.
    pub tls: Option<Arc<crate::tls::TlsSetup>>,
    /// `-t un`, a caller: a UDP socket per call, at most this many open
    /// (`-max_socket`).
    pub per_call: Option<usize>,
    /// `-buff_size`: the UDP sockets' send and receive buffers (bytes;
    /// default 8 MiB).
    pub buffers: Option<usize>,
    /// Wake-up coalescing: sleep until `BATCH_WANT` completions are ready
    /// or this long has passed (kernels with IORING_FEAT_MIN_TIMEOUT).
    pub batch_wait: Duration,
    /// The `-watchdog_*` options.
    pub watchdog: crate::watchdog::Limits,
    /// `-max_reconnect`, `-reconnect_close`, `-reconnect_sleep`.
    pub reconnect: crate::stream::Reconnect,
    /// `-t ui`: the source addresses of the `-inf` file (a callee listens
    /// on each).
    pub per_ip: Option<Arc<Vec<IpAddr>>>,
}

/// Completions a thread waits for before waking, at most.
const BATCH_WANT: usize = 64;

/// Run-wide control shared by the threads.
#[derive(Debug)]
pub struct Control {
    pub epoch: Instant,
    pub stop: Arc<AtomicBool>,
    /// `-timeout`: no new calls from here on.
    pub soft_stop: Option<Instant>,
    /// Open calls are abandoned (counted as failed) here.
    pub deadline: Option<Instant>,
    /// `<exec int_cmd="stop_gracefully">`: no new calls in any thread.
    pub graceful: AtomicBool,
    /// `<exec int_cmd="stop_now">` stopped the run.
    pub stopped_now: AtomicBool,
    /// Where captures are played from.
    pub media: Arc<MediaSockets>,
    /// `-trace_msg`, `-trace_err`.
    pub trace: TraceFiles,
    /// The wall clock (µs since the Unix epoch) at `epoch`.
    pub wall_epoch_us: u64,
    /// The 3PCC twin connections, taken by thread 0.
    pub twin: std::sync::Mutex<Option<crate::twin::Twins>>,
    /// `-oocsf`/`-oocsn`: what a caller runs for a request of no call.
    pub out_of_call: Option<Arc<Scenario>>,
    /// `-trace_stat`: each thread's figures and open calls, published
    /// about once a second for the statistics file.
    pub snapshots: Option<Snapshots>,
    /// `-trace_error_codes`: the threads' unexpected response codes since
    /// the file's last line.
    pub error_codes: Option<std::sync::Mutex<Vec<u16>>>,
    /// The rate, users, limit and pause the remote control and the keys
    /// set during the run.
    pub steer: Steer,
}

impl Control {
    /// `t` as microseconds since the run's epoch (the endpoints' clock).
    pub fn micros(&self, t: Instant) -> u64 {
        crate::engine::micros_since(self.epoch, t)
    }

    /// The wall clock at `t`, µs since the Unix epoch (for traces).
    pub fn wall_us(&self, t: Instant) -> u64 {
        self.wall_epoch_us.saturating_add(self.micros(t))
    }
}

/// Per thread: its figures and its open calls, the latest published.
pub type Snapshots = std::sync::Mutex<Vec<Option<(Stats, u64)>>>;

/// How often a thread publishes its figures for the statistics file, µs.
const PUBLISH_US: u64 = 1_000_000;
/// How often a thread publishes its open calls for `dump tasks`, µs.
const OPEN_PUBLISH_US: u64 = 100_000;
/// How often the media ports the calls read (RTP checks, echoes) are
/// looked at, at most (SIPp's echo looks every 10 ms).
const MEDIA_POLL_US: u64 = 5_000;
/// Most datagrams read from one media port a round, and their largest
/// size (UDP's: none is cut).
const MEDIA_READS: usize = 64;
const MEDIA_BUF: usize = 65_536;

/// A thread's SIP socket(s).
#[derive(Debug)]
pub enum Socket {
    Udp(UdpSocket),
    Tcp(Box<Streams>),
}

/// Binds the thread's socket (before the threads start, so a bad address
/// is reported at once): UDP, or a TCP listener (a caller's too: peers
/// may connect to it, and its port is `[local_port]`).
pub fn bind(plan: &ThreadPlan) -> io::Result<Socket> {
    if plan.reuse_port && plan.index == 0 {
        unshared(plan)?;
    }
    if let Some(mode) = plan.tcp {
        let listener = if plan.reuse_port {
            reuseport_tcp(plan.bind)?
        } else {
            std::net::TcpListener::bind(plan.bind)?
        };
        let streams = Streams::new(mode, listener, plan.remote)?;
        return Ok(Socket::Tcp(Box::new(match &plan.tls {
            Some(tls) => streams.with_tls(Arc::clone(tls)),
            None => streams,
        })));
    }
    let buffers = plan.buffers.unwrap_or(8 << 20);
    let s = if plan.reuse_port {
        reuseport_udp(plan.bind, buffers)?
    } else {
        let s = UdpSocket::bind(plan.bind)?;
        let sock = socket2::SockRef::from(&s);
        // As SIPp: a -buff_size the kernel refuses is an error.
        let set = sock
            .set_recv_buffer_size(buffers)
            .and_then(|()| sock.set_send_buffer_size(buffers));
        if plan.buffers.is_some() {
            set?;
        }
        s
    };
    if let (true, Some(remote)) = (plan.connect, plan.send_to.or(plan.remote)) {
        s.connect(remote)?;
    }
    Ok(Socket::Udp(s))
}

/// `SO_REUSEPORT` lets every thread of a callee listen on one port, and
/// would as silently let another process share it (the kernel would split
/// the traffic between the two). As SIPp does, a port some other socket
/// holds is refused: a plain bind of it must succeed first (checked once,
/// before the first thread's socket).
fn unshared(plan: &ThreadPlan) -> io::Result<()> {
    if plan.bind.port() == 0 {
        return Ok(());
    }
    let probe = match plan.tcp {
        Some(_) => std::net::TcpListener::bind(plan.bind).map(drop),
        None => UdpSocket::bind(plan.bind).map(drop),
    };
    probe.map_err(|e| io::Error::new(e.kind(), format!("{e}: another socket holds it")))
}

struct Io {
    ring: IoUring,
    bufs: BufRing,
    hdr: Box<libc::msghdr>,
    send: SendPool,
    in_flight: usize,
    /// The UDP socket (none with TCP).
    fd: Option<Fd>,
    min_timeout: bool,
    /// `IORING_OP_SEND` takes a destination address (6.0+).
    send_to: bool,
    /// The socket is connected to this address: sends there carry none.
    connected: Option<SocketAddr>,
    /// Same-size datagrams to one destination leave in one UDP GSO send;
    /// off after the kernel refuses one.
    gso: bool,
    /// Per send slot: the destination and segment size of a GSO send in
    /// flight, to resend its datagrams one by one if the kernel refuses it.
    gso_sent: Vec<Option<(SocketAddr, u16, usize)>>,
}

impl Io {
    fn new(sock: Option<&UdpSocket>, connected: Option<SocketAddr>) -> io::Result<Self> {
        // Deferred task work: completions are posted when this thread
        // asks for them, so arriving datagrams do not wake it one by one.
        let ring: IoUring = match IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .setup_cqsize(32768)
            .build(8192)
        {
            Ok(r) => r,
            // Kernels before 6.1 lack DEFER_TASKRUN.
            Err(_) => IoUring::builder().setup_cqsize(32768).build(8192)?,
        };
        let min_timeout = ring.params().is_feature_min_timeout();
        // A TCP thread receives no datagram and sends none: token pools.
        let (recv_buffers, send_slots) = if sock.is_some() {
            (RECV_BUFFERS, SEND_SLOTS)
        } else {
            (2, 2)
        };
        let bufs = BufRing::new(recv_buffers, RECV_BUF, BGID)?;
        // SAFETY: the ring memory is page aligned, holds `entries` entries
        // and lives as long as `Io`; Drop unregisters it before `bufs` is
        // freed (fields drop after Drop::drop runs).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring_addr(), bufs.entries(), BGID, 0)
        }?;
        let mut hdr = Box::new(empty_msghdr());
        hdr.msg_namelen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).unwrap_or(128);
        // Zero-copy send came with destination addresses on plain send
        // (both 6.0): the probe for one tells the other.
        let mut probe = Probe::new();
        let send_to = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::SendZc::CODE);
        Ok(Io {
            ring,
            bufs,
            hdr,
            send: SendPool::new(send_slots, SEND_BUF),
            in_flight: 0,
            fd: sock.map(|s| Fd(s.as_raw_fd())),
            min_timeout,
            send_to,
            connected,
            gso: true,
            gso_sent: vec![None; usize::from(send_slots)],
        })
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry pushed here points only at memory owned by
        // `Io` (the boxed msghdr for receives, a send slot for sends) that
        // stays put until its completion is reaped, which happens before
        // `Io` is dropped (Drop waits for in-flight operations).
        if unsafe { self.ring.submission().push(entry) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        Ok(())
    }

    fn arm_recv(&mut self) -> io::Result<()> {
        let Some(fd) = self.fd else {
            return Ok(());
        };
        self.arm_recv_on(fd, RECV)
    }

    /// A multishot receive on `fd` into the buffer ring.
    fn arm_recv_on(&mut self, fd: Fd, user_data: u64) -> io::Result<()> {
        let e = opcode::RecvMsgMulti::new(fd, &*self.hdr, BGID)
            .build()
            .user_data(user_data);
        self.push(&e)
    }

    /// Takes a send slot and copies `parts` into it, one after the other:
    /// the slot and the length, `None` when no slot is free, an error
    /// (`too_large`) when they do not fit.
    fn fill<'b>(
        &mut self,
        parts: impl Iterator<Item = &'b [u8]>,
        too_large: &str,
    ) -> io::Result<Option<(u16, usize)>> {
        let Some(idx) = self.send.take() else {
            return Ok(None);
        };
        let Some(buf) = self.send.buf(idx) else {
            self.send.give_back(idx);
            return Ok(None);
        };
        let mut len = 0;
        for p in parts {
            let Some(room) = buf.get_mut(len..len + p.len()) else {
                self.send.give_back(idx);
                return Err(io::Error::new(io::ErrorKind::InvalidInput, too_large));
            };
            room.copy_from_slice(p);
            len += p.len();
        }
        Ok(Some((idx, len)))
    }

    /// Queues one datagram; false when no send slot is free.
    fn send(&mut self, dst: SocketAddr, bytes: &[u8]) -> io::Result<bool> {
        self.send_via(None, dst, bytes)
    }

    /// Queues one datagram from `via` (a call's socket, `-t un`) or the
    /// thread's; false when no send slot is free.
    fn send_via(&mut self, via: Option<Fd>, dst: SocketAddr, bytes: &[u8]) -> io::Result<bool> {
        let main = via.is_none();
        let fd = via
            .or(self.fd)
            .ok_or_else(|| io::Error::other("no UDP socket"))?;
        let Some((idx, _)) =
            self.fill(std::iter::once(bytes), "message larger than a send slot")?
        else {
            return Ok(false);
        };
        let e = if self.send_to {
            let Some(to) = self.send.prepare_to(idx, bytes.len(), dst) else {
                self.send.give_back(idx);
                return Ok(false);
            };
            let send = opcode::Send::new(fd, to.buf, to.len);
            if main && self.connected == Some(dst) {
                send.build()
            } else {
                send.dest_addr(to.addr).dest_addr_len(to.addr_len).build()
            }
        } else {
            let Some(hdr) = self.send.prepare(idx, bytes.len(), dst) else {
                self.send.give_back(idx);
                return Ok(false);
            };
            opcode::SendMsg::new(fd, hdr).build()
        }
        .user_data(SEND | u64::from(idx));
        self.push(&e)?;
        self.in_flight += 1;
        Ok(true)
    }

    /// Queues `parts` (each `segment` bytes, to `dst`) as one UDP GSO send;
    /// false when no send slot is free.
    fn send_gso<'b>(
        &mut self,
        dst: SocketAddr,
        segment: usize,
        parts: impl Iterator<Item = &'b [u8]>,
    ) -> io::Result<bool> {
        let fd = self.fd.ok_or_else(|| io::Error::other("no UDP socket"))?;
        let seg = u16::try_from(segment).map_err(|_| io::Error::other("segment too large"))?;
        let Some((idx, len)) = self.fill(parts, "GSO group larger than a send slot")? else {
            return Ok(false);
        };
        let Some(hdr) = self.send.prepare_gso(idx, len, dst, seg) else {
            self.send.give_back(idx);
            return Ok(false);
        };
        if let Some(m) = self.gso_sent.get_mut(usize::from(idx)) {
            *m = Some((dst, seg, len));
        }
        let e = opcode::SendMsg::new(fd, hdr)
            .build()
            .user_data(SEND | u64::from(idx));
        self.push(&e)?;
        self.in_flight += 1;
        Ok(true)
    }

    /// A send completed: frees its slot. A refused GSO send turns GSO off
    /// and its datagrams go to `resend`, one by one.
    fn sent(&mut self, idx: u16, result: i32, resend: &mut Vec<(SocketAddr, Vec<u8>)>) -> bool {
        let gso = self
            .gso_sent
            .get_mut(usize::from(idx))
            .and_then(Option::take);
        let mut failed = result < 0;
        if let (Some((dst, seg, len)), true) = (gso, failed) {
            self.gso = false;
            if let Some(buf) = self.send.buf(idx) {
                for part in buf[..len.min(buf.len())].chunks(usize::from(seg).max(1)) {
                    resend.push((dst, part.to_vec()));
                }
                failed = false;
            }
        }
        self.send.give_back(idx);
        self.in_flight = self.in_flight.saturating_sub(1);
        !failed
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        // Cancel the receive and let the kernel finish with every buffer
        // before the memory goes.
        let cancel = opcode::AsyncCancel::new(RECV).build().user_data(0);
        let _ = self.push(&cancel);
        let _ = self.ring.submit();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.in_flight > 0 && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(10));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for cqe in self.ring.completion() {
                if cqe.user_data() & SEND != 0 {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

/// A received datagram's completion: the datagram (if a buffer came with
/// it) goes to the endpoint and the buffer back to the ring.
fn take_datagram(
    io: &mut Io,
    ep: &mut Endpoint,
    ctl: &Control,
    now: Instant,
    result: i32,
    flags: u32,
) {
    let Some(bid) = cqueue::buffer_select(flags) else {
        return;
    };
    if result >= 0 {
        let len = usize::try_from(result).unwrap_or(0);
        let buf = io.bufs.buffer(bid, len);
        if let Ok(m) = RecvMsgOut::parse(buf, &io.hdr) {
            let payload = m.payload_data();
            if m.is_payload_truncated() {
                ep.stats.parse_errors += 1;
            } else if let Some(src) = decode_sockaddr(m.name_data()) {
                if ctl.trace.traces_messages() {
                    ctl.trace.message(ctl.wall_us(now), false, src, payload);
                }
                ep.handle_datagram(now, src, payload);
            }
        }
    }
    io.bufs.recycle(bid);
}

/// Starts one call: with `-t un` on a socket of its own (armed for
/// receiving when new), its port the call's `[local_port]`; with `-t ui`
/// (`ui`: the main socket's address and the thread's port) on the socket
/// of the address its `-inf` line names. False when no call could start.
fn start_one(
    ep: &mut Endpoint,
    io: &mut Io,
    per_call: Option<&mut PerCall>,
    now: Instant,
    ui: Option<SocketAddr>,
) -> io::Result<bool> {
    let Some(pc) = per_call else {
        return Ok(ep.start_call(now));
    };
    if let Some(main) = ui {
        let started = ep.start_call_on(now, 0);
        if let Start::Call(serial) = started {
            let text = String::from_utf8_lossy(ep.started_source())
                .trim()
                .to_owned();
            match text.parse::<IpAddr>() {
                // The main socket's address: the main socket.
                Ok(ip) if ip == main.ip() => {}
                Ok(ip) => match pc.take_ip(ip, main.port(), false) {
                    Ok(t) => {
                        if t.new
                            && let Some(fd) = pc.fd(t.slot)
                        {
                            io.arm_recv_on(Fd(fd), UN_RECV | t.slot as u64)?;
                        }
                        pc.bind_call(serial, t.slot);
                    }
                    // As SIPp: a fatal error.
                    Err(e) => {
                        ep.fatal = Some(format!(
                            "-t ui: unable to bind a UDP socket to {}: {e}",
                            SocketAddr::new(ip, main.port())
                        ));
                    }
                },
                Err(_) => {
                    ep.fatal = Some(format!(
                        "-t ui: the -ip_field field of the call's -inf line is not an IP address: '{text}'"
                    ));
                }
            }
        }
        return Ok(started != Start::Nothing);
    }
    // No socket opened (and closed at once) when no call may start.
    if !ep.may_create() {
        return Ok(false);
    }
    let taken = match pc.take() {
        Ok(t) => t,
        Err(e) => {
            ep.errors
                .push(format!("-t un: cannot open a socket for a call: {e}"));
            return Ok(false);
        }
    };
    if taken.new
        && let Some(fd) = pc.fd(taken.slot)
    {
        io.arm_recv_on(Fd(fd), UN_RECV | taken.slot as u64)?;
    }
    let started = ep.start_call_on(now, taken.port);
    match started {
        Start::Call(serial) => pc.bind_call(serial, taken.slot),
        Start::Failed | Start::Nothing => {
            if pc.release(taken.slot) {
                cancel_call_socket(io, taken.slot)?;
            }
        }
    }
    Ok(started != Start::Nothing)
}

/// Cancels a call socket's receive; the socket closes when it ends.
fn cancel_call_socket(io: &mut Io, slot: usize) -> io::Result<()> {
    let e = opcode::AsyncCancel::new(UN_RECV | slot as u64)
        .build()
        .user_data(UN_CANCEL);
    io.push(&e)
}

/// Starts `sh -c COMMAND` (SIPp runs it with `system`), input from
/// nowhere; `None` if it cannot start.
fn spawn_shell(command: &[u8]) -> Option<std::process::Child> {
    use std::os::unix::ffi::OsStrExt;
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(std::ffi::OsStr::from_bytes(command))
        .stdin(std::process::Stdio::null())
        .spawn()
        .ok()
}

/// SIPp's `-bg`: forks; the parent prints the child's PID and exits with
/// status 99 (SIPp's `EXIT_OTHER`), the child goes on with standard
/// input, output and error on /dev/null. Call it before any other thread
/// of the process starts.
pub fn background() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: fork has no memory-safety preconditions; the caller runs it
    // while the process has a single thread, so the child's copy holds no
    // lock another thread owned.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            use std::os::fd::AsRawFd;
            for fd in [0, 1, 2] {
                // SAFETY: dup2 on descriptors this process owns: `null` is
                // open for the whole call, 0-2 are the standard streams.
                if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        }
        child => {
            use std::io::Write;
            println!("Background mode - PID=[{child}]");
            let _ = std::io::stdout().flush();
            std::process::exit(99);
        }
    }
}

/// Lost connections, as `-max_reconnect`, `-reconnect_close` and
/// `-reconnect_sleep` say: their calls fail (or go on), SIPp's warning,
/// the wait before reconnecting (the thread sleeps, as SIPp does), or the
/// end of the run when no reconnection is left.
fn connections_lost(
    ep: &mut Endpoint,
    now: Instant,
    lost: &mut Vec<(SocketAddr, Option<u64>, crate::stats::FailReason)>,
    policy: &mut crate::stream::Reconnect,
    caller: bool,
) {
    for (peer, call, reason) in std::mem::take(lost) {
        let l = policy.lost(peer, reason, caller);
        if let Some(w) = l.warning {
            ep.stats.warnings += 1;
            ep.errors.push(w);
        }
        if let Some(e) = l.fatal
            && ep.fatal.is_none()
        {
            ep.fatal = Some(e);
        }
        if l.fail_calls {
            ep.connection_lost(now, peer, call, reason);
        }
        if !l.sleep.is_zero() {
            std::thread::sleep(l.sleep);
        }
    }
}

/// What the watchdog found goes where SIPp's warnings and errors go: a
/// trip or a reset is a warning (the errors file, the Warnings count), an
/// overload ends the run as a fatal error.
fn watched(ep: &mut Endpoint, event: crate::watchdog::Event) {
    use crate::watchdog::Event;
    match event {
        Event::Tripped { major, warning } => {
            if major {
                ep.stats.watchdog_major += 1;
            } else {
                ep.stats.watchdog_minor += 1;
            }
            ep.stats.warnings += 1;
            ep.errors.push(warning);
        }
        Event::Reset(warning) => {
            ep.stats.warnings += 1;
            ep.errors.push(warning);
        }
        Event::Overload(error) => {
            if ep.fatal.is_none() {
                ep.fatal = Some(error);
            }
        }
    }
}

/// A caller thread takes its share of what the remote control or the
/// keys set: the rate, the open-call limit, the users (new user ids for
/// more users than it ever had).
fn follow(
    s: &crate::steer::Steering,
    plan: &mut ThreadPlan,
    ep: &mut Endpoint,
    steer: &Steer,
    owned: &mut usize,
) {
    plan.rate = s.plan.share(plan.threads);
    plan.limit = Some(s.limit.div_ceil(plan.threads.max(1)).max(1));
    if let (Some(total), Some(_)) = (s.users, plan.users) {
        let mine = share(total, plan.threads, plan.index);
        if mine > *owned {
            let more = u32::try_from(mine - *owned).unwrap_or(u32::MAX);
            ep.add_users(steer.take_users(more), more);
            *owned = mine;
        }
        plan.users = Some(mine);
    }
}

/// Runs one thread until its calls are done, the deadline passes or
/// `stop` is set. Returns its statistics.
pub fn run_thread(
    sock: Socket,
    cfg: Arc<Config>,
    scn: Arc<Scenario>,
    plan: ThreadPlan,
    ctl: Arc<Control>,
) -> io::Result<Stats> {
    if let Some(core) = plan.core {
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    let (udp, mut tcp) = match sock {
        Socket::Udp(u) => (Some(u), None),
        Socket::Tcp(t) => (None, Some(t)),
    };
    let local_port = match (&udp, &tcp) {
        (Some(u), _) => u.local_addr()?.port(),
        (_, Some(t)) => t.listener().local_addr()?.port(),
        _ => 0,
    };
    let mut ep = Endpoint::new(
        cfg,
        scn,
        local_port,
        plan.remote,
        plan.index as u64 + 1,
        plan.threads as u64,
    );
    if let Some(u) = plan.users {
        ep.set_users(plan.first_user, u32::try_from(u).unwrap_or(u32::MAX));
    }
    if let Some(o) = &ctl.out_of_call {
        ep.set_out_of_call(Arc::clone(o));
    }
    let mut io = Io::new(
        udp.as_ref(),
        plan.connect
            .then_some(plan.send_to.or(plan.remote))
            .flatten(),
    )?;
    io.arm_recv()?;
    let mut per_call = plan
        .per_call
        .map(|max| PerCall::new(plan.bind.ip(), max, plan.buffers));
    let caller = plan.remote.is_some();
    // -t ui: a caller's calls leave from their address's socket (opened
    // at its first call); a callee listens on every address of the file.
    let ui = plan
        .per_ip
        .is_some()
        .then(|| SocketAddr::new(plan.bind.ip(), local_port));
    if let (Some(ips), Some(pc), Some(main), false) = (&plan.per_ip, per_call.as_mut(), ui, caller)
    {
        for &ip in ips.iter().filter(|&&ip| ip != main.ip()) {
            let t = pc.take_ip(ip, main.port(), true)?;
            if t.new
                && let Some(fd) = pc.fd(t.slot)
            {
                io.arm_recv_on(Fd(fd), UN_RECV | t.slot as u64)?;
            }
        }
    }
    let mut started: u64 = 0;
    let mut pending: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    // -t un: messages that waited for a send slot, with their call.
    let mut pending_un: Vec<(u64, SocketAddr, Vec<u8>)> = Vec::new();
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(1024);
    let mut grouper = Grouper::default();
    let mut media = MediaSender::new(Arc::clone(&ctl.media));
    let mut media_in = vec![0u8; MEDIA_BUF];
    let mut media_ports: Vec<u16> = Vec::new();
    let mut next_media_poll = 0u64;
    let mut media_failed = false;
    let mut children: Vec<std::process::Child> = Vec::new();
    let mut next_publish = 0u64;
    let mut plan = plan;
    // What the remote control and the keys last set (version 0: the
    // options').
    let mut steered = 0;
    let mut paused = false;
    let mut users_owned = plan.users.unwrap_or(0);
    let mut reconnect = plan.reconnect;
    let mut watchdog = crate::watchdog::Watchdog::new(
        plan.watchdog,
        u64::try_from(ctl.epoch.elapsed().as_millis()).unwrap_or(u64::MAX),
    );
    // `dump tasks`: the open calls, published now and then (not a shared
    // store every round).
    let mut next_open_publish = 0u64;
    let mut twin = if plan.index == 0 {
        ctl.twin.lock().ok().and_then(|mut t| t.take())
    } else {
        None
    };
    // A grouped datagram must fit the path MTU on its own: loopback's is
    // 64 KiB, elsewhere assume Ethernet's.
    let gso_datagram = match plan.remote.map(|r| r.ip()) {
        Some(ip) if !ip.is_loopback() => 1400,
        _ if !plan.bind.ip().is_loopback() => 1400,
        _ => SEND_BUF / 2,
    };
    loop {
        let now_i = Instant::now();
        let now = ctl.micros(now_i);

        // Completions.
        let mut rearm = false;
        {
            let mut cq = io.ring.completion();
            cq.sync();
            cqes.clear();
            cqes.extend(cq.by_ref());
            drop(cq);
            for cqe in cqes.drain(..) {
                let ud = cqe.user_data();
                if ud & TWIN != 0 {
                    if let Some(t) = twin.as_mut() {
                        t.polled(ud & !TWIN);
                    }
                    continue;
                }
                if let Some(t) = tcp.as_mut() {
                    if ud == LISTEN {
                        t.accept();
                        continue;
                    }
                    if ud & STREAM != 0 {
                        let (slot, generation) = ((ud & 0xff_ffff) as usize, (ud >> 24) as u8);
                        if ud & STREAM_OUT != 0 {
                            t.writable(slot, generation);
                            continue;
                        }
                        t.ready(slot, generation, |peer, bytes| {
                            if ctl.trace.traces_messages() {
                                ctl.trace
                                    .message(ctl.wall_epoch_us + now, false, peer, bytes);
                            }
                            ep.handle_datagram(now_i, peer, bytes);
                        });
                        connections_lost(&mut ep, now_i, &mut t.lost, &mut reconnect, caller);
                        continue;
                    }
                }
                if ud & SEND != 0 {
                    if !io.sent((ud & 0xffff) as u16, cqe.result(), &mut pending) {
                        ep.stats.send_errors += 1;
                    }
                    continue;
                }
                if ud & UN_CANCEL != 0 {
                    continue;
                }
                let flags = cqe.flags();
                if ud & UN_RECV != 0 {
                    // A call socket's datagram (-t un), or an address's
                    // (-t ui: the calls it starts answer from there).
                    let slot = (ud & !UN_RECV) as usize;
                    take_datagram(&mut io, &mut ep, &ctl, now_i, cqe.result(), flags);
                    if let Some(pc) = per_call.as_mut() {
                        for serial in ep.started.drain(..) {
                            pc.bind_call(serial, slot);
                        }
                    }
                    if !cqueue::more(flags)
                        && let Some(pc) = per_call.as_mut()
                        && pc.recv_ended(slot)
                        && let Some(fd) = pc.fd(slot)
                    {
                        io.arm_recv_on(Fd(fd), ud)?;
                    }
                    continue;
                }
                if ud != RECV {
                    continue;
                }
                if !cqueue::more(flags) {
                    rearm = true;
                }
                take_datagram(&mut io, &mut ep, &ctl, now_i, cqe.result(), flags);
                // -t ui: calls reached on the main socket answer from it.
                ep.started.clear();
            }
        }
        io.bufs.publish();
        if rearm {
            io.arm_recv()?;
        }

        // The twin's messages, each up to its delimiter; a twin's end
        // closes this side too (no new calls), as SIPp.
        if let Some(t) = twin.as_mut()
            && let crate::twin::Pumped::Ended(why) =
                t.pump(&ctl.stop, |cmd| ep.handle_command(now_i, cmd))
        {
            ep.errors.push(why);
            twin = None;
            ep.twin_closed(now_i);
        }
        // Media ports the calls read (RTP checks, echoes), every
        // MEDIA_POLL_US.
        if ep.listening() && now >= next_media_poll {
            next_media_poll = now + MEDIA_POLL_US;
            media_ports.clear();
            media_ports.extend(ep.media_ports());
            for &port in &media_ports {
                let r = media.receive(port, &mut media_in, MEDIA_READS, |from, data| {
                    ep.handle_media(port, from, data);
                });
                if let Err(e) = r
                    && !media_failed
                {
                    // Once: the same error would come every round.
                    media_failed = true;
                    ep.errors.push(format!("media port {port}: {e}"));
                    eprintln!("sbc-load: warning: media port {port}: {e}");
                }
            }
        }
        ep.handle_timeout(now_i);
        if caller && ctl.steer.version() != steered {
            steered = ctl.steer.version();
            if let Some(s) = ctl.steer.current() {
                follow(&s, &mut plan, &mut ep, &ctl.steer, &mut users_owned);
                paused = s.paused_at.is_some();
            }
        }
        if now >= next_open_publish {
            next_open_publish = now + OPEN_PUBLISH_US;
            ctl.steer.set_open(plan.index, ep.open_calls());
        }
        if let Some(w) = watchdog.as_mut()
            && now / 1000 >= w.due()
        {
            for event in w.fire(now / 1000) {
                watched(&mut ep, event);
            }
        }
        if ctl.soft_stop.is_some_and(|t| now_i >= t) || ctl.graceful.load(Ordering::Relaxed) {
            ep.close();
        }

        // New calls: as many as -users keeps open, or at the thread's
        // share of the rate.
        if paused {
            // Call generation paused: nothing starts.
        } else if let (true, Some(users)) = (caller, plan.users) {
            let mut n = START_BURST;
            while n > 0
                && ep.open_calls() < users
                && start_one(&mut ep, &mut io, per_call.as_mut(), now_i, ui)?
            {
                n -= 1;
            }
        } else if caller && (plan.rate.base > 0.0 || plan.rate.increase > 0.0) {
            if plan.quit_at_max && plan.rate.at_max(now) {
                ep.close();
            }
            let due = (plan.rate.due(now) as u64).saturating_sub(started);
            let mut n = due.min(START_BURST);
            while n > 0 {
                if plan.limit.is_some_and(|l| ep.open_calls() >= l) {
                    // At the -l limit: the calls due now are not placed
                    // (no burst to catch up later).
                    started += n;
                    break;
                }
                if !start_one(&mut ep, &mut io, per_call.as_mut(), now_i, ui)? {
                    break;
                }
                started += 1;
                n -= 1;
            }
        }

        // Output: what waited for a slot first, then the new messages.
        let mut blocked = false;
        let mut i = 0;
        while i < pending.len() {
            let (dst, bytes) = &pending[i];
            match io.send(*dst, bytes) {
                Ok(true) => i += 1,
                Ok(false) => {
                    blocked = true;
                    break;
                }
                Err(_) => {
                    ep.stats.send_errors += 1;
                    i += 1;
                }
            }
        }
        pending.drain(..i);
        if let Some(pc) = per_call.as_ref() {
            let mut i = 0;
            while !blocked && i < pending_un.len() {
                let (call, dst, bytes) = &pending_un[i];
                match io.send_via(pc.fd_of(*call).map(Fd), *dst, bytes) {
                    Ok(true) => i += 1,
                    Ok(false) => blocked = true,
                    Err(_) => {
                        ep.stats.send_errors += 1;
                        i += 1;
                    }
                }
            }
            pending_un.drain(..i);
        }
        let (mut send_errors, mut gso_sends, mut gso_datagrams) = (0, 0, 0);
        if let Some(t) = tcp.as_mut() {
            // TCP: each message on its connection, in order.
            let (out, buf) = ep.outgoing();
            for o in out {
                let bytes = buf.get(o.start..o.start + o.len).unwrap_or(b"");
                if ctl.trace.traces_messages() {
                    ctl.trace
                        .message(ctl.wall_epoch_us + now, true, o.dst, bytes);
                }
                t.send(o.dst, o.call, bytes);
            }
            // Written before an ended call's connection closes.
            t.flush_queued();
            for serial in ep.ended.drain(..) {
                t.call_ended(serial);
            }
            for (serial, peer) in ep.close_connections.drain(..) {
                t.close_call(serial, peer);
            }
            connections_lost(&mut ep, now_i, &mut t.lost, &mut reconnect, caller);
            send_errors += std::mem::take(&mut t.errors);
            if !t.listener_armed {
                let e = opcode::PollAdd::new(Fd(t.listener().as_raw_fd()), libc::POLLIN as u32)
                    .build()
                    .user_data(LISTEN);
                io.push(&e)?;
                t.listener_armed = true;
            }
            let mut polls = Vec::new();
            for (slot, generation, stream, writing) in t.unarmed() {
                let (mask, out) = if writing {
                    (libc::POLLOUT, STREAM_OUT)
                } else {
                    (libc::POLLIN, 0)
                };
                let ud = STREAM | out | (u64::from(generation) << 24) | slot as u64;
                polls.push(
                    opcode::PollAdd::new(Fd(stream.as_raw_fd()), mask as u32)
                        .build()
                        .user_data(ud),
                );
            }
            for e in &polls {
                io.push(e)?;
            }
        } else if let Some(pc) = per_call.as_mut() {
            // -t un: each message from its call's socket, one by one.
            let (out, buf) = ep.outgoing();
            for o in out {
                let bytes = buf.get(o.start..o.start + o.len).unwrap_or(b"");
                if ctl.trace.traces_messages() {
                    ctl.trace
                        .message(ctl.wall_epoch_us + now, true, o.dst, bytes);
                }
                if blocked {
                    pending_un.push((o.call, o.dst, bytes.to_vec()));
                    continue;
                }
                match io.send_via(pc.fd_of(o.call).map(Fd), o.dst, bytes) {
                    Ok(true) => {}
                    Ok(false) => {
                        blocked = true;
                        pending_un.push((o.call, o.dst, bytes.to_vec()));
                    }
                    Err(_) => send_errors += 1,
                }
            }
            // Sent before an ended call's socket closes: while messages
            // wait for a send slot, ended calls keep their sockets.
            if pending_un.is_empty() {
                for serial in ep.ended.drain(..) {
                    if let Some(slot) = pc.call_ended(serial) {
                        cancel_call_socket(&mut io, slot)?;
                    }
                }
            }
        } else {
            // `<closecon>`: UDP has no connection to close.
            ep.close_connections.clear();
            let (out, buf) = ep.outgoing();
            if ctl.trace.traces_messages() {
                for o in out {
                    let bytes = buf.get(o.start..o.start + o.len).unwrap_or(b"");
                    ctl.trace
                        .message(ctl.wall_epoch_us + now, true, o.dst, bytes);
                }
            }
            let limits = Limits {
                segments: GSO_SEGMENTS,
                bytes: SEND_BUF,
                datagram: if io.gso { gso_datagram } else { 0 },
            };
            grouper.plan(out, limits);
            let bytes_of = |i: usize| {
                out.get(i)
                    .and_then(|o| buf.get(o.start..o.start + o.len))
                    .unwrap_or(b"")
            };
            for g in grouper.groups() {
                if !blocked {
                    let r = if g.count == 1 {
                        io.send(g.dst, bytes_of(g.first as usize))
                    } else {
                        io.send_gso(g.dst, g.len, grouper.members(g).map(bytes_of))
                    };
                    match r {
                        Ok(true) => {
                            if g.count > 1 {
                                gso_sends += 1;
                                gso_datagrams += u64::from(g.count);
                            }
                            continue;
                        }
                        Ok(false) => blocked = true,
                        Err(_) => {
                            send_errors += u64::from(g.count);
                            continue;
                        }
                    }
                }
                for i in grouper.members(g) {
                    pending.push((g.dst, bytes_of(i).to_vec()));
                }
            }
        }
        ep.stats.send_errors += send_errors;
        ep.stats.gso_sends += gso_sends;
        ep.stats.gso_datagrams += gso_datagrams;
        ep.clear_out();

        // Media from captures; the shell commands of `<exec command>`,
        // started and not waited for (finished ones reaped here), as SIPp.
        let (out, buf) = ep.media_outgoing();
        let media_errors = if out.is_empty() {
            0
        } else {
            media.send_all(out, buf)
        };
        ep.stats.send_errors += media_errors;
        ep.clear_media();
        for (dest, m) in ep.twin_out.drain(..) {
            // Nowhere to go once the twin is gone.
            if !twin.as_mut().is_some_and(|t| t.send(dest.as_deref(), &m)) {
                ep.stats.send_errors += 1;
            }
        }
        if let Some(t) = twin.as_mut() {
            t.flush();
            for (fd, token) in t.unarmed() {
                let e = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                    .build()
                    .user_data(TWIN | token);
                io.push(&e)?;
            }
        }
        if !ep.rtt_samples.is_empty() {
            ctl.trace.rtts(ctl.wall_epoch_us, ep.rtt_samples.drain(..));
        }
        if !ep.logs.is_empty() {
            ctl.trace.logs(ep.logs.drain(..));
        }
        if !ep.call_debug.is_empty() {
            ctl.trace.calldebug(ep.call_debug.drain(..));
        }
        if !ep.error_codes.is_empty()
            && let Some(codes) = &ctl.error_codes
            && let Ok(mut codes) = codes.lock()
        {
            codes.append(&mut ep.error_codes);
        }
        if !ep.errors.is_empty() {
            ctl.trace
                .errors(ctl.wall_epoch_us + now, ep.errors.drain(..));
        }
        for c in ep.commands.drain(..) {
            if let Some(child) = spawn_shell(&c) {
                children.push(child);
            }
        }
        if !children.is_empty() {
            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        }
        if let Some(snapshots) = &ctl.snapshots
            && now >= next_publish
        {
            next_publish = now + PUBLISH_US;
            ep.count_sessions();
            let mut s = ep.stats.clone();
            s.fatal.clone_from(&ep.fatal);
            if let Ok(mut v) = snapshots.lock()
                && let Some(slot) = v.get_mut(plan.index)
            {
                *slot = Some((s, ep.open_calls() as u64));
            }
        }
        match ep.run_stop.take() {
            Some(IntCmd::StopGracefully) => ctl.graceful.store(true, Ordering::Relaxed),
            Some(IntCmd::StopNow) => {
                ctl.stopped_now.store(true, Ordering::Relaxed);
                ctl.stop.store(true, Ordering::Relaxed);
            }
            _ => {}
        }

        // The end? An <error> action stops every thread (SIPp exits).
        if ep.fatal.is_some() {
            ctl.stop.store(true, Ordering::Relaxed);
        }
        let over = ctl.stop.load(Ordering::Relaxed) || ctl.deadline.is_some_and(|d| now_i >= d);
        if over {
            ep.abort_all(now_i);
            break;
        }
        if !ep.may_create()
            && ep.open_calls() == 0
            && pending.is_empty()
            && pending_un.is_empty()
            && !ep.lingering()
        {
            break;
        }

        // Sleep until a completion, the next timer, the next call or the
        // watchdog.
        let mut wake = ep.poll_timeout().map(|t| ctl.micros(t));
        if ep.listening() {
            wake = Some(wake.map_or(next_media_poll, |w| w.min(next_media_poll)));
        }
        if let Some(w) = &watchdog {
            let due = w.due().saturating_mul(1000);
            wake = Some(wake.map_or(due, |t| t.min(due)));
        }
        let rate = plan.rate.rate_at(now);
        if caller && plan.users.is_none() && rate > 0.0 && ep.may_create() {
            let ahead = ((started + 1) as f64 - plan.rate.due(now)).max(0.0);
            let next_call = now + (ahead / rate * 1e6) as u64;
            wake = Some(wake.map_or(next_call, |w| w.min(next_call)));
        }
        let wait = if blocked {
            Duration::ZERO
        } else {
            wake.map_or(MAX_WAIT, |w| Duration::from_micros(w.saturating_sub(now)))
                .min(MAX_WAIT)
        };
        let ts = Timespec::from(wait);
        let mut args = SubmitArgs::new().timespec(&ts);
        let mut want = usize::from(!wait.is_zero() || blocked);
        if want > 0 && !blocked && io.min_timeout && !plan.batch_wait.is_zero() {
            want = BATCH_WANT;
            args =
                args.min_wait_usec(u32::try_from(plan.batch_wait.as_micros()).unwrap_or(u32::MAX));
        }
        match io.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    // The call sockets' receives end before the buffer ring goes.
    if let Some(pc) = per_call.as_ref() {
        for slot in pc.slots() {
            cancel_call_socket(&mut io, slot)?;
        }
    }
    // Flush what is still queued so the peer sees the last messages.
    let _ = io.ring.submit();
    if let Some(t) = tcp.as_mut() {
        t.finish(Duration::from_secs(2));
    }
    if let Some(t) = twin.as_mut() {
        t.finish(Duration::from_secs(2));
    }
    ctl.trace.errors(
        ctl.wall_epoch_us + u64::try_from(ctl.epoch.elapsed().as_micros()).unwrap_or(u64::MAX),
        ep.errors.drain(..),
    );
    ctl.trace.calldebug(ep.call_debug.drain(..));
    ctl.trace.flush();
    ep.count_sessions();
    let mut stats = ep.stats.clone();
    stats.fatal = ep.fatal.clone();
    if let Some(o) = ep.out_of_call_stats() {
        stats.ooc_calls = o.created;
        stats.ooc_succeeded = o.succeeded;
        stats.ooc_failed = o.failed_total();
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Reaps send completions until `n` arrived (bounded).
    fn reap(io: &mut Io, n: usize) -> Vec<(u16, i32)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < n && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(50));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = io.ring.submitter().submit_with_args(1, &args);
            for c in io.ring.completion() {
                if c.user_data() & SEND != 0 {
                    got.push(((c.user_data() & 0xffff) as u16, c.result()));
                }
            }
        }
        got
    }

    #[test]
    fn a_gso_send_arrives_as_separate_datagrams_in_order() {
        let rx = UdpSocket::bind("127.176.0.2:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.176.0.1:0").unwrap();
        let mut io = Io::new(Some(&tx), None).unwrap();
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 300]).collect();
        let dst = rx.local_addr().unwrap();
        assert!(
            io.send_gso(dst, 300, parts.iter().map(Vec::as_slice))
                .unwrap()
        );
        let done = reap(&mut io, 1);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1, 1500, "one send of five segments");
        let mut resend = Vec::new();
        assert!(io.sent(done[0].0, done[0].1, &mut resend));
        assert!(resend.is_empty() && io.gso);
        let mut buf = [0u8; 2048];
        for p in &parts {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &p[..], "one datagram per segment, in order");
            assert_eq!(from, tx.local_addr().unwrap());
        }
    }

    #[test]
    fn a_refused_gso_send_is_resent_datagram_by_datagram() {
        let tx = UdpSocket::bind("127.176.0.3:0").unwrap();
        let mut io = Io::new(Some(&tx), None).unwrap();
        let dst: SocketAddr = "127.176.0.4:9".parse().unwrap();
        let parts = [vec![1u8; 200], vec![2u8; 200], vec![3u8; 200]];
        assert!(
            io.send_gso(dst, 200, parts.iter().map(Vec::as_slice))
                .unwrap()
        );
        let done = reap(&mut io, 1);
        // As if the kernel had refused it (a device without GSO support).
        let mut resend = Vec::new();
        assert!(io.sent(done[0].0, -libc::EIO, &mut resend));
        assert!(!io.gso, "GSO is off from now on");
        let want: Vec<(SocketAddr, Vec<u8>)> = parts.iter().map(|p| (dst, p.clone())).collect();
        assert_eq!(resend, want);
        assert_eq!(io.in_flight, 0);
        // A failed plain send is reported as failed.
        assert!(io.send(dst, b"x").unwrap());
        let done = reap(&mut io, 1);
        assert!(!io.sent(done[0].0, -libc::EPERM, &mut resend));
    }
}
