//! SIP over TCP, TLS, WebSocket and secure WebSocket on the shard's own
//! ring: multishot accept on each TCP
//! listener (SO_REUSEPORT, so the kernel spreads connections over the
//! shards), multishot receive into a provided-buffer ring shared by the
//! shard's connections (an idle connection holds no receive buffer), one
//! send in flight per connection (so its bytes stay in order), and
//! connections the SBC opens to trunks with `IORING_OP_CONNECT`.
//!
//! A connection belongs to the shard that accepted or opened it; its
//! [`ConnId`] names that shard, so another shard's message for it is
//! handed over (`Handoff::Send`). Framing is the core's
//! [`StreamDecoder`]; this module only moves bytes.
//!
//! TLS (rustls) sits between the ring and the framer: records received
//! are decrypted into the decoder, output is encrypted into the
//! connection's queue. The handshake runs on the same ring; a connection
//! must finish it and deliver a whole message within the first-message
//! timeout. Settings come from [`TlsSetup`], taken when the connection
//! starts. WebSocket ([`WsConn`], RFC 7118) sits above TLS for `wss:`
//! and directly on TCP for `ws:`, and takes the framer's place: each
//! WebSocket message is one SIP message.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use io_uring::types::{CancelBuilder, Fd};
use io_uring::{IoUring, cqueue, opcode, squeue};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::boundary::RecordCursor;
use super::bufring::BufRing;
use super::uring::push;
use super::ws::{WsConn, WsEnd};
use crate::tls::TlsSetup;
use sbc_core::net::{ConnClose, ConnId, Flow, LocalId, Transport};
use sbc_core::policy::Policy;
use sbc_core::sip::stream::{Frame, StreamDecoder, StreamLimits};
use sbc_core::stats::ShardStats;

pub(crate) const BGID_STREAM: u16 = 9;
const STREAM_BUFS: u16 = 128;
const STREAM_BUF: usize = 16 * 1024;
/// Connections one shard holds at most.
const MAX_CONNS: usize = 16_384;
/// Connections from one source address, per shard.
const MAX_PER_SOURCE: u16 = 64;
/// An accepted connection must deliver a whole message within this long.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);
/// A connection the SBC opens must connect within this long (the
/// kernel's own SYN retries last about two minutes): then what waits on
/// it is reported unsent, and the next message opens a new one.
const CONNECT: Duration = Duration::from_secs(10);
/// A SIP message begun on a connection must arrive whole within this
/// long (a Content-Length larger than what comes, a head that never ends,
/// a TLS record or WebSocket frame cut short), counted from its first
/// bytes after the last whole message.
const WHOLE_MESSAGE: Duration = Duration::from_secs(10);
/// A connection that carried nothing either way for this long is closed.
const IDLE: Duration = Duration::from_secs(900);
/// Output queued on a connection whose peer does not read, at most.
const MAX_QUEUED: usize = 1 << 20;
/// A connection ending after its last words gets this long to send them.
const FINISH: Duration = Duration::from_secs(2);
/// Timeouts are checked this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

const KIND_SHIFT: u32 = 56;
pub(crate) const ACCEPT: u64 = 7 << KIND_SHIFT;
pub(crate) const CONN_RECV: u64 = 8 << KIND_SHIFT;
pub(crate) const CONN_SEND: u64 = 9 << KIND_SHIFT;
pub(crate) const CONN_CONNECT: u64 = 10 << KIND_SHIFT;
pub(crate) const CONN_CANCEL: u64 = 11 << KIND_SHIFT;

/// The connection id of slot `slot` (generation `generation`) on shard
/// `shard`: the shard in bits 48-55, the generation in 16-47, the slot in
/// 0-15. A 32-bit generation never wraps in practice, so an id that
/// outlived its connection (kept by a dialog, a binding) can never name
/// the next connection in that slot.
fn conn_id(shard: u8, generation: u32, slot: u16) -> Option<ConnId> {
    NonZeroU64::new(u64::from(shard) << 48 | u64::from(generation) << 16 | u64::from(slot))
        .map(ConnId)
}

/// The shard that owns a connection.
pub(crate) fn conn_shard(id: ConnId) -> usize {
    ((id.0.get() >> 48) & 0xff) as usize
}

fn conn_parts(id: ConnId) -> (u32, u16) {
    let v = id.0.get();
    (((v >> 16) & 0xffff_ffff) as u32, (v & 0xffff) as u16)
}

fn transport_index(t: Transport) -> usize {
    Transport::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

/// A listening socket of a stream transport: the socket, its listener's
/// id, its transport and the address it is bound to.
pub(crate) type StreamListener = (TcpListener, LocalId, Transport, SocketAddr);

/// One connection.
struct Conn {
    sock: Socket,
    /// Its flow, with its own id: what inputs say they came from.
    flow: Flow,
    decoder: StreamDecoder,
    /// Output waiting for the send in flight to finish.
    queued: BytesMut,
    /// The bytes of the send in flight (empty when none is).
    sending: Bytes,
    /// The peer's address while a connect is in flight (the kernel reads
    /// it until the connect completes).
    connecting: Option<Box<SockAddr>>,
    /// TLS, for `tls:` listeners and trunks (boxed: it is large and TCP
    /// connections do without).
    tls: Option<Box<rustls::Connection>>,
    /// The TLS handshake completed (counted once).
    handshaken: bool,
    /// WebSocket, for `ws:` and `wss:` listeners (then `decoder` is
    /// unused: each WebSocket message is a SIP message).
    ws: Option<Box<WsConn>>,
    /// Ending: input is ignored, and it closes for this reason once its
    /// output (a TLS alert, a WebSocket refusal or close) has been sent.
    finishing: Option<ConnClose>,
    /// Requests in flight on it (receive, send, connect).
    ops: u32,
    /// A send is in flight (its bytes are `sending`): at most one at a
    /// time, so bytes leave in order and none twice.
    in_flight: bool,
    closing: bool,
    /// Accepted (counted in `per_source`) rather than opened by us.
    accepted: bool,
    got_message: bool,
    /// Since when the connection has held part of a message (the bytes
    /// after the last whole one, in the decoder, in a TLS record or in a
    /// WebSocket frame): it must be whole within [`WHOLE_MESSAGE`].
    partial_since: Option<Instant>,
    /// TLS record boundaries of what was received (rustls holds a record
    /// in part out of sight).
    records: RecordCursor,
    opened: Instant,
    active: Instant,
}

/// A message (or an error) out of a connection, for the engine.
pub(crate) struct Inbound {
    pub flow: Flow,
    pub data: Bytes,
}

/// Longest a connection's wait on its own completion keeps the shard's
/// rounds prompt (see `Streams::awaiting`).
const AWAIT_PROMPT: Duration = Duration::from_millis(100);

/// The shard's stream listeners and connections.
pub(crate) struct Streams {
    me: u8,
    listeners: Vec<StreamListener>,
    slots: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<u16>,
    /// Usable connections by (transport, peer), for reuse (RFC 3261
    /// §18.1.1): the newest one to each peer.
    by_remote: HashMap<(Transport, SocketAddr), u16>,
    /// Peers that what was queued for never reached: connections of ours
    /// to them that could not be opened, or whose TLS handshake failed
    /// (for the engine, [`Streams::take_unsent`]).
    unsent: Vec<(Transport, SocketAddr)>,
    per_source: HashMap<IpAddr, u16>,
    bufs: BufRing,
    limits: StreamLimits,
    next_sweep: Instant,
    tls: Arc<ArcSwap<TlsSetup>>,
    /// Where decrypted bytes land on their way to a decoder.
    plain: Box<[u8]>,
    /// Listeners whose accept ended on an error, re-armed by the sweep.
    rearm: Vec<usize>,
    /// The SBC is stopping: connections accepted now are closed at once.
    stopping: bool,
    /// This round left a connection mid-exchange (accepted, connected or
    /// cancelling, one that has carried no SIP message yet, a TLS
    /// handshake or a WebSocket upgrade under way, last words to send,
    /// output waiting behind a send or a connect in flight): the loop
    /// should not linger before its next round.
    urgent: bool,
    /// Connections waiting on a completion of their own ([`awaiting_own`]),
    /// with when that was first seen: every round stays prompt until it
    /// comes, whatever else woke it, for [`AWAIT_PROMPT`] at most (a trunk
    /// that drops our SYNs must not keep coalescing off for minutes).
    awaiting: Vec<(u16, Option<Instant>)>,
}

impl Streams {
    /// `listeners`: (listener, its local id, transport, bound address).
    pub(crate) fn new(
        me: usize,
        listeners: Vec<StreamListener>,
        tls: Arc<ArcSwap<TlsSetup>>,
        ring: &IoUring,
    ) -> io::Result<Self> {
        let register = |entries: u32| {
            let entries = u16::try_from(entries).unwrap_or(STREAM_BUFS);
            let bufs = BufRing::new(entries, STREAM_BUF, BGID_STREAM)?;
            // SAFETY: the ring memory is page aligned, holds `entries`
            // entries and lives as long as the Streams, which the ShardIo
            // drops after unregistering it (ShardIo::drop); a ring whose
            // registration failed is dropped unregistered.
            unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    bufs.ring_addr(),
                    bufs.entries(),
                    BGID_STREAM,
                    0,
                )
            }?;
            Ok(bufs)
        };
        let bufs = super::uring::retry_short_of_memory(
            "stream buffers",
            u32::from(STREAM_BUFS),
            register,
            std::thread::sleep,
        )?;
        Ok(Streams {
            me: u8::try_from(me).unwrap_or(u8::MAX),
            listeners,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_remote: HashMap::new(),
            unsent: Vec::new(),
            per_source: HashMap::new(),
            bufs,
            limits: StreamLimits::default(),
            next_sweep: Instant::now() + SWEEP_EVERY,
            tls,
            plain: vec![0; STREAM_BUF].into_boxed_slice(),
            rearm: Vec::new(),
            stopping: false,
            urgent: false,
            awaiting: Vec::new(),
        })
    }

    /// Arms the multishot accept of every listener.
    pub(crate) fn arm(&mut self, ring: &mut IoUring) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.arm_accept(ring, i)?;
        }
        Ok(())
    }

    fn arm_accept(&mut self, ring: &mut IoUring, i: usize) -> io::Result<()> {
        let Some((l, ..)) = self.listeners.get(i) else {
            return Ok(());
        };
        let entry = opcode::AcceptMulti::new(Fd(l.as_raw_fd()))
            .build()
            .user_data(ACCEPT | i as u64);
        push(ring, &entry)
    }

    fn conn_mut(&mut self, slot: u16) -> Option<&mut Conn> {
        self.slots
            .get_mut(usize::from(slot))
            .and_then(Option::as_mut)
    }

    /// A new connection's slot; `flow` gets its id.
    fn insert(
        &mut self,
        sock: Socket,
        flow: Flow,
        accepted: bool,
        tls: Option<rustls::Connection>,
        now: Instant,
    ) -> Option<u16> {
        let ws = matches!(flow.transport, Transport::Ws | Transport::Wss)
            .then(|| Box::new(WsConn::new(self.limits.max_message)));
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.slots.len() < MAX_CONNS => {
                self.slots.push(None);
                self.generations.push(0);
                u16::try_from(self.slots.len() - 1).ok()?
            }
            None => return None,
        };
        let g = self.generations.get_mut(usize::from(slot))?;
        *g = g.wrapping_add(1).max(1);
        let id = conn_id(self.me, *g, slot)?;
        let conn = Conn {
            sock,
            flow: Flow {
                conn: Some(id),
                ..flow
            },
            decoder: StreamDecoder::new(self.limits),
            queued: BytesMut::new(),
            sending: Bytes::new(),
            connecting: None,
            tls: tls.map(|mut t| {
                // rustls holds output (plaintext before the handshake
                // completes, records not yet taken) up to the same bound
                // as the connection's own queue.
                t.set_buffer_limit(Some(MAX_QUEUED));
                Box::new(t)
            }),
            handshaken: false,
            in_flight: false,
            ws,
            finishing: None,
            ops: 0,
            closing: false,
            accepted,
            got_message: !accepted,
            partial_since: None,
            records: RecordCursor::default(),
            opened: now,
            active: now,
        };
        *self.slots.get_mut(usize::from(slot))? = Some(conn);
        Some(slot)
    }

    /// A multishot accept completed: a new connection (or the accept ended).
    pub(crate) fn on_accept(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        idx: usize,
        res: i32,
        flags: u32,
        stats: &ShardStats,
    ) -> io::Result<()> {
        // A new connection's set-up is a chain of round trips.
        self.urgent = true;
        if !cqueue::more(flags) && !self.stopping {
            if res < 0 {
                // Out of descriptors or memory: accepting again at once
                // would spin. The sweep re-arms it within a second.
                tracing::warn!(error = %io::Error::from_raw_os_error(-res), "accept failed; retrying in a second");
                self.rearm.push(idx);
                return Ok(());
            }
            self.arm_accept(ring, idx)?;
        }
        if res < 0 {
            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "accept failed");
            return Ok(());
        }
        // SAFETY: a successful accept returns a new descriptor that nothing
        // else owns; the Socket closes it.
        let sock = unsafe { Socket::from_raw_fd(res) };
        if self.stopping {
            // Dropping it closes it.
            return Ok(());
        }
        let Some(&(_, local, transport, _)) = self.listeners.get(idx) else {
            return Ok(());
        };
        let Some(remote) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            return Ok(());
        };
        let remote = SocketAddr::new(sbc_core::net::canonical(remote.ip()), remote.port());
        ShardStats::inc(&stats.connections_accepted);
        let count = self.per_source.get(&remote.ip()).copied().unwrap_or(0);
        if count >= MAX_PER_SOURCE {
            count_close(stats, ConnClose::Limit);
            return Ok(());
        }
        let tls = if matches!(transport, Transport::Tls | Transport::Wss) {
            let Some(server) = self.tls.load().accept(remote.ip()) else {
                count_close(stats, ConnClose::Handshake);
                return Ok(());
            };
            Some(rustls::Connection::Server(server))
        } else {
            None
        };
        let _ = sock.set_tcp_nodelay(true);
        let Some(slot) = self.insert(
            sock,
            Flow {
                transport,
                remote,
                local,
                conn: None,
            },
            true,
            tls,
            now,
        ) else {
            count_close(stats, ConnClose::Limit);
            return Ok(());
        };
        *self.per_source.entry(remote.ip()).or_insert(0) += 1;
        open_gauge(stats, transport, 1);
        self.by_remote.insert((transport, remote), slot);
        self.arm_recv(ring, slot)
    }

    fn arm_recv(&mut self, ring: &mut IoUring, slot: u16) -> io::Result<()> {
        let Some(c) = self.conn_mut(slot) else {
            return Ok(());
        };
        if c.closing {
            return Ok(());
        }
        let entry = opcode::RecvMulti::new(Fd(c.sock.as_raw_fd()), BGID_STREAM)
            .build()
            .user_data(CONN_RECV | u64::from(slot));
        c.ops += 1;
        push(ring, &entry)
    }

    /// Bytes (or the end) arrived on a connection: whole messages go to
    /// `out`, pings are answered, framing errors close it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_recv(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        slot: u16,
        res: i32,
        flags: u32,
        stats: &ShardStats,
        out: &mut Vec<Inbound>,
    ) -> io::Result<()> {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let len = usize::try_from(res).unwrap_or(0);
        let mut close = None;
        let mut pong = false;
        let mut drain = false;
        let sealed;
        if let Some(c) = self
            .slots
            .get_mut(usize::from(slot))
            .and_then(Option::as_mut)
        {
            if !more {
                c.ops = c.ops.saturating_sub(1);
            }
            let delivered_before = out.len();
            if let Some(bid) = bid {
                if !c.closing && c.finishing.is_none() {
                    if let Err(reason) =
                        take_in(c, self.bufs.buffer(bid, len), &mut self.plain, stats, out)
                    {
                        close = Some(reason);
                    }
                    add_bytes(
                        &stats.bytes_in,
                        &stats.stream_bytes_in,
                        c.flow.transport,
                        len,
                    );
                    c.active = now;
                }
                self.bufs.recycle(bid);
                self.bufs.publish();
            }
            // The handshake's own records (and output flushed when it
            // completed), WebSocket answers, or the last words before
            // closing (a TLS alert, an HTTP 400, a WebSocket close) go out
            // now.
            sealed = match seal(c) {
                Ok(added) => added,
                Err(reason) => {
                    close = Some(reason);
                    false
                }
            };
            if c.queued.len() > MAX_QUEUED {
                // The peer sends (pings, handshake records) but does not
                // read what they make us answer.
                close = Some(ConnClose::Overflow);
            } else if let Some(reason) = close
                && (sealed || c.in_flight)
                && res > 0
            {
                // Close once that has been sent.
                c.finishing = Some(reason);
                close = None;
            }
            // A WebSocket message delivered (by `take_in`) counts as framed.
            let mut framed = out.len() > delivered_before;
            while !c.closing && close.is_none() && c.finishing.is_none() {
                match c.decoder.next_frame() {
                    None => break,
                    Some(Ok(Frame::Message(data))) => {
                        c.got_message = true;
                        framed = true;
                        out.push(Inbound { flow: c.flow, data });
                    }
                    Some(Ok(Frame::Ping)) => pong = true,
                    Some(Err(e)) => {
                        tracing::debug!(peer = %c.flow.remote, error = e.label(), "stream framing failed");
                        close = Some(ConnClose::Framing);
                        break;
                    }
                }
            }
            // The clock of a message in part starts at its first bytes:
            // after the last whole message, or in an empty buffer.
            let mid = c.decoder.mid_message()
                || c.records.mid_record()
                || c.ws.as_deref().is_some_and(WsConn::mid_message);
            c.partial_since = match mid {
                false => None,
                true if framed => Some(now),
                true => c.partial_since.or(Some(now)),
            };
            self.urgent |= setting_up(c) || c.finishing.is_some();
            if close.is_none() && !c.closing {
                if res == 0 && c.finishing.is_none() && has_output(c) {
                    // The peer is done sending, not necessarily reading
                    // (a half-close): what is queued for it still goes,
                    // then the connection closes.
                    c.finishing = Some(ConnClose::Peer);
                    c.active = now;
                    drain = true;
                } else if res == 0 {
                    close = Some(ConnClose::Peer);
                } else if res < 0 && -res != libc::ENOBUFS {
                    close = Some(if -res == libc::ECONNRESET {
                        ConnClose::Peer
                    } else {
                        ConnClose::Error
                    });
                }
            }
        } else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
                self.bufs.publish();
            }
            return Ok(());
        }
        if sealed || drain {
            self.send_next(ring, slot)?;
        }
        if pong {
            // RFC 5626 §3.5.1: a double-CRLF ping is answered with one CRLF.
            self.queue(ring, slot, Bytes::from_static(b"\r\n"), stats)?;
        }
        if let Some(reason) = close {
            self.close(ring, slot, reason, stats)?;
        } else if !more && !drain {
            // Ended without error (out of buffers): receive again. (Not
            // after the peer's end of stream: nothing more comes.)
            self.arm_recv(ring, slot)?;
        }
        self.maybe_free(slot);
        Ok(())
    }

    /// A cancel of a connection's request completed: its close goes on.
    pub(crate) fn on_cancel(&mut self) {
        self.urgent = true;
    }

    /// Whether the next wait should not linger: this round left a
    /// connection mid-exchange (see `urgent`; asking clears it), or one
    /// still waits on a completion of its own.
    pub(crate) fn take_urgent(&mut self, now: Instant) -> bool {
        let slots = &self.slots;
        self.awaiting.retain_mut(|(slot, since)| {
            let since = *since.get_or_insert(now);
            now.saturating_duration_since(since) < AWAIT_PROMPT
                && slots
                    .get(usize::from(*slot))
                    .and_then(Option::as_ref)
                    .is_some_and(awaiting_own)
        });
        std::mem::take(&mut self.urgent) || !self.awaiting.is_empty()
    }

    /// Notes that `slot` may wait on a completion of its own.
    fn note_awaiting(&mut self, slot: u16) {
        if !self.awaiting.iter().any(|(s, _)| *s == slot) {
            self.awaiting.push((slot, None));
        }
    }

    /// The other shard that owns the connection `dest` names, if it is
    /// another's: the message goes there to be sent.
    pub(crate) fn owner_elsewhere(&self, dest: &Flow) -> Option<usize> {
        dest.conn
            .map(conn_shard)
            .filter(|s| *s != usize::from(self.me))
    }

    /// Sends `data` to `dest`: over its connection when it names one of
    /// this shard's that is still open, else over an open connection to
    /// the same peer, else over a new one. For a response to a configured
    /// trunk the peer is the request's source address at its Via port.
    pub(crate) fn send(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        (dest, data): (Flow, Bytes),
        policy: &Policy,
        stats: &ShardStats,
    ) -> io::Result<()> {
        if let Some(id) = dest.conn.filter(|_| self.owner_elsewhere(&dest).is_none()) {
            let (generation, slot) = conn_parts(id);
            let live = self.generations.get(usize::from(slot)) == Some(&generation)
                && self
                    .slots
                    .get(usize::from(slot))
                    .and_then(Option::as_ref)
                    .is_some_and(|c| !c.closing && c.flow.transport == dest.transport);
            if live {
                return self.queue(ring, slot, data, stats);
            }
        }
        // A response whose connection is gone: to the Via's sent-by port
        // at the request's source (RFC 3261 §18.2.2), not to the port the
        // request left from, where nothing listens.
        let dest = match sbc_core::b2bua::reconnect_for_response(&dest, &data, policy) {
            Some(remote) => Flow { remote, ..dest },
            None => dest,
        };
        let slot = match self.by_remote.get(&(dest.transport, dest.remote)) {
            Some(&slot) => slot,
            None => match self.connect(ring, now, dest, stats)? {
                Some(slot) => slot,
                None => return Ok(()),
            },
        };
        self.queue(ring, slot, data, stats)
    }

    /// Opens a connection to `dest.remote` from the address of listener
    /// `dest.local`.
    fn connect(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        dest: Flow,
        stats: &ShardStats,
    ) -> io::Result<Option<u16>> {
        let sock = match Socket::new(
            Domain::for_address(dest.remote),
            Type::STREAM,
            Some(Protocol::TCP),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, peer = %dest.remote, "cannot open a TCP socket");
                return Ok(self.not_opened(dest, ConnClose::ConnectFailed, stats));
            }
        };
        if matches!(dest.transport, Transport::Ws | Transport::Wss) {
            // WebSocket clients connect to the SBC; it never opens one.
            tracing::debug!(peer = %dest.remote, "no WebSocket connection to this peer");
            return Ok(self.not_opened(dest, ConnClose::ConnectFailed, stats));
        }
        let tls = if dest.transport == Transport::Tls {
            let Some(client) = self.tls.load().connect(dest.remote) else {
                tracing::warn!(peer = %dest.remote, "no TLS settings for this peer (only trunks with transport = \"tls\" are connected to over TLS)");
                return Ok(self.not_opened(dest, ConnClose::ConnectFailed, stats));
            };
            Some(rustls::Connection::Client(client))
        } else {
            None
        };
        let _ = sock.set_tcp_nodelay(true);
        // Leave from the listener's address (its port is the one in Via).
        if let Some((_, _, _, bound)) = self.listeners.iter().find(|l| l.1 == dest.local)
            && !bound.ip().is_unspecified()
            && bound.is_ipv4() == dest.remote.is_ipv4()
        {
            let _ = sock.bind(&SocketAddr::new(bound.ip(), 0).into());
        }
        let Some(slot) = self.insert(sock, Flow { conn: None, ..dest }, false, tls, now) else {
            return Ok(self.not_opened(dest, ConnClose::Limit, stats));
        };
        ShardStats::inc(&stats.connections_opened);
        open_gauge(stats, dest.transport, 1);
        self.by_remote.insert((dest.transport, dest.remote), slot);
        let Some(c) = self.conn_mut(slot) else {
            return Ok(None);
        };
        let addr = Box::new(SockAddr::from(dest.remote));
        let entry = opcode::Connect::new(
            Fd(c.sock.as_raw_fd()),
            addr.as_ptr().cast::<libc::sockaddr>(),
            addr.len(),
        )
        .build()
        .user_data(CONN_CONNECT | u64::from(slot));
        c.connecting = Some(addr);
        c.ops += 1;
        // The ClientHello waits in the queue for the connect.
        let _ = seal(c);
        push(ring, &entry)?;
        self.note_awaiting(slot);
        Ok(Some(slot))
    }

    /// A connect completed.
    pub(crate) fn on_connect(
        &mut self,
        ring: &mut IoUring,
        slot: u16,
        res: i32,
        stats: &ShardStats,
    ) -> io::Result<()> {
        self.urgent = true;
        let Some(c) = self.op_done(slot) else {
            return Ok(());
        };
        c.connecting = None;
        if res < 0 {
            tracing::info!(peer = %c.flow.remote, error = %io::Error::from_raw_os_error(-res), "TCP connect failed");
            return self.close(ring, slot, ConnClose::ConnectFailed, stats);
        }
        self.arm_recv(ring, slot)?;
        self.send_next(ring, slot)
    }

    /// One of a connection's requests completed: the connection, unless
    /// it is closing (then its slot is freed once no request holds it).
    fn op_done(&mut self, slot: u16) -> Option<&mut Conn> {
        let c = self.conn_mut(slot)?;
        c.ops = c.ops.saturating_sub(1);
        if c.closing {
            self.maybe_free(slot);
            return None;
        }
        self.conn_mut(slot)
    }

    /// Appends `data` to a connection's output.
    fn queue(
        &mut self,
        ring: &mut IoUring,
        slot: u16,
        data: Bytes,
        stats: &ShardStats,
    ) -> io::Result<()> {
        let Some(c) = self.conn_mut(slot) else {
            return Ok(());
        };
        if c.closing {
            return Ok(());
        }
        if c.queued.len() + data.len() > MAX_QUEUED {
            return self.close(ring, slot, ConnClose::Overflow, stats);
        }
        match (c.ws.as_deref_mut(), c.tls.as_deref_mut()) {
            (Some(ws), _) => {
                if !ws.send(data) {
                    // Not upgraded yet, or closed: nothing can carry it.
                    tracing::debug!(peer = %c.flow.remote, "no WebSocket to carry a message yet: dropped");
                    return Ok(());
                }
                if let Err(reason) = seal(c) {
                    return self.close(ring, slot, reason, stats);
                }
            }
            (None, Some(tls)) => {
                // Before the handshake completes rustls holds the
                // plaintext and encrypts it once it can.
                if tls.writer().write_all(&data).is_err() {
                    return self.close(ring, slot, ConnClose::Overflow, stats);
                }
                if let Err(reason) = seal(c) {
                    return self.close(ring, slot, reason, stats);
                }
            }
            (None, None) => c.queued.extend_from_slice(&data),
        }
        // With a send in flight, what queued goes when it completes.
        self.send_next(ring, slot)
    }

    /// Sends what is left of the last send, else what queued, when no send
    /// is in flight and the connection is up.
    fn send_next(&mut self, ring: &mut IoUring, slot: u16) -> io::Result<()> {
        let Some(c) = self.conn_mut(slot) else {
            return Ok(());
        };
        if c.closing {
            return Ok(());
        }
        if c.connecting.is_some() || c.in_flight {
            // What is queued leaves when that completes.
            if awaiting_own(c) {
                self.note_awaiting(slot);
            }
            return Ok(());
        }
        if c.sending.is_empty() {
            if c.queued.is_empty() {
                return Ok(());
            }
            c.sending = c.queued.split().freeze();
        }
        let len = u32::try_from(c.sending.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(Fd(c.sock.as_raw_fd()), c.sending.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(CONN_SEND | u64::from(slot));
        c.ops += 1;
        c.in_flight = true;
        push(ring, &entry)
    }

    /// A send completed: the rest of it, or what queued meanwhile, goes next.
    pub(crate) fn on_send(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        slot: u16,
        res: i32,
        stats: &ShardStats,
    ) -> io::Result<()> {
        let Some(c) = self.op_done(slot) else {
            return Ok(());
        };
        c.in_flight = false;
        if res < 0 {
            return self.close(ring, slot, ConnClose::Error, stats);
        }
        let next_flight = setting_up(c) || c.finishing.is_some();
        let sent = usize::try_from(res).unwrap_or(0).min(c.sending.len());
        add_bytes(
            &stats.bytes_out,
            &stats.stream_bytes_out,
            c.flow.transport,
            sent,
        );
        c.active = now;
        // After a short write the rest goes first, ahead of anything queued.
        c.sending.advance(sent);
        if let Some(reason) = c.finishing
            && c.sending.is_empty()
            && c.queued.is_empty()
        {
            return self.close(ring, slot, reason, stats);
        }
        self.urgent |= next_flight;
        self.send_next(ring, slot)
    }

    /// Closes a connection: no more input is taken, its requests are
    /// cancelled, and the slot is freed once the kernel has let go (now,
    /// when no request holds it).
    fn close(
        &mut self,
        ring: &mut IoUring,
        slot: u16,
        reason: ConnClose,
        stats: &ShardStats,
    ) -> io::Result<()> {
        let Some(c) = self
            .slots
            .get_mut(usize::from(slot))
            .and_then(Option::as_mut)
        else {
            return Ok(());
        };
        if c.closing {
            return Ok(());
        }
        c.closing = true;
        count_close(stats, reason);
        open_gauge(stats, c.flow.transport, -1);
        // A TLS connection that ends before its handshake completed (an
        // error, a reset, a timeout) is a failed handshake, counted once:
        // here.
        if reason != ConnClose::ConnectFailed
            && c.connecting.is_none()
            && !c.handshaken
            && c.tls.as_deref().is_some_and(|t| t.is_handshaking())
        {
            ShardStats::inc_at(&stats.handshake_failures, transport_index(c.flow.transport));
        }
        let key = (c.flow.transport, c.flow.remote);
        if self.by_remote.get(&key) == Some(&slot) {
            self.by_remote.remove(&key);
        }
        // A connection of ours that never connected (refused, or given up
        // on while the connect was in flight), or whose TLS handshake
        // never finished: nothing queued on it ever left. Nor did output
        // still queued or in flight on any connection lost before it went
        // (not last words, not our own stop).
        let never_open = reason == ConnClose::ConnectFailed
            || c.connecting.is_some()
            || (c.tls.is_some() && !c.handshaken);
        let lost_output = has_output(c) && c.finishing.is_none();
        if reason != ConnClose::Shutdown && ((never_open && !c.accepted) || lost_output) {
            mark_unsent(&mut self.unsent, key);
        }
        if c.accepted {
            let ip = c.flow.remote.ip();
            if let Some(n) = self.per_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&ip);
                }
            }
        }
        let _ = c.sock.shutdown(std::net::Shutdown::Both);
        if c.ops > 0 {
            let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(c.sock.as_raw_fd())).all())
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(CONN_CANCEL | u64::from(slot));
            push(ring, &entry)?;
        }
        self.maybe_free(slot);
        Ok(())
    }

    /// Ends a connection the SBC gives up on (idle, or no message in
    /// time) with its last words first: a WebSocket close frame (1001,
    /// RFC 6455 §7.1.2) and TLS close_notify (RFC 8446 §6.1); it closes
    /// once they are sent (or after `FINISH`). A plain TCP connection, or
    /// one still in its TLS handshake, closes at once.
    fn close_gracefully(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        slot: u16,
        reason: ConnClose,
        stats: &ShardStats,
    ) -> io::Result<()> {
        let Some(c) = self.conn_mut(slot) else {
            return Ok(());
        };
        let handshaking = c.tls.as_deref().is_some_and(|t| t.is_handshaking());
        let has_last_words = c.tls.is_some() || c.ws.is_some();
        if c.closing || c.connecting.is_some() || handshaking || !has_last_words {
            return self.close(ring, slot, reason, stats);
        }
        // The close frame goes into TLS before close_notify does (after
        // close_notify a peer reads nothing more).
        if let Some(ws) = c.ws.as_deref_mut() {
            ws.close();
            if seal(c).is_err() {
                return self.close(ring, slot, reason, stats);
            }
        }
        if let Some(tls) = c.tls.as_deref_mut() {
            tls.send_close_notify();
        }
        if seal(c).is_err() {
            return self.close(ring, slot, reason, stats);
        }
        if has_output(c) {
            c.finishing = Some(reason);
            // `FINISH` counts from here.
            c.active = now;
            return self.send_next(ring, slot);
        }
        self.close(ring, slot, reason, stats)
    }

    /// The SBC stops: every connection says its last words (as
    /// [`Self::close_gracefully`]) with [`ConnClose::Shutdown`], and no new
    /// one is taken. [`Self::finishing`] tells when they are all said.
    pub(crate) fn close_all(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        stats: &ShardStats,
    ) -> io::Result<()> {
        self.stopping = true;
        for slot in 0..self.slots.len() {
            let Ok(slot) = u16::try_from(slot) else {
                break;
            };
            self.close_gracefully(ring, now, slot, ConnClose::Shutdown, stats)?;
        }
        Ok(())
    }

    /// Whether a connection is still sending its last words.
    pub(crate) fn finishing(&self) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|c| !c.closing && c.finishing.is_some())
    }

    /// Frees a closed connection's slot once no request holds it.
    fn maybe_free(&mut self, slot: u16) {
        let done = self
            .slots
            .get(usize::from(slot))
            .and_then(Option::as_ref)
            .is_some_and(|c| c.closing && c.ops == 0);
        if done {
            if let Some(s) = self.slots.get_mut(usize::from(slot)) {
                *s = None;
            }
            self.free.push(slot);
        }
    }

    /// A connection to `dest` could not even start (`reason`): counted,
    /// and what was for it never leaves. No slot.
    fn not_opened(&mut self, dest: Flow, reason: ConnClose, stats: &ShardStats) -> Option<u16> {
        count_close(stats, reason);
        mark_unsent(&mut self.unsent, (dest.transport, dest.remote));
        None
    }

    /// The peers that messages queued for never reached since the last
    /// call (a connection to them could not be opened): for
    /// `Engine::handle_unsent`.
    pub(crate) fn take_unsent(&mut self) -> Vec<(Transport, SocketAddr)> {
        std::mem::take(&mut self.unsent)
    }

    /// Closes connections that never sent a message in time (or, of
    /// ours, never connected), left one unfinished too long, or went idle.
    pub(crate) fn sweep(
        &mut self,
        ring: &mut IoUring,
        now: Instant,
        stats: &ShardStats,
    ) -> io::Result<()> {
        if now < self.next_sweep {
            return Ok(());
        }
        self.next_sweep = now + SWEEP_EVERY;
        for idx in std::mem::take(&mut self.rearm) {
            self.arm_accept(ring, idx)?;
        }
        let expired: Vec<(u16, bool)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let slot = u16::try_from(i).ok()?;
                let clocks = Clocks {
                    opened: c.opened,
                    active: c.active,
                    partial_since: c.partial_since,
                    got_message: c.got_message,
                    handshaking: c.tls.as_deref().is_some_and(|t| t.is_handshaking()),
                    connecting: c.connecting.is_some(),
                    finishing: c.finishing.is_some(),
                };
                let overdue = clocks.overdue(now)?;
                (!c.closing).then_some((slot, overdue == Overdue::LastWords))
            })
            .collect();
        for (slot, stuck) in expired {
            if stuck {
                // Its last words did not go out in time.
                self.close(ring, slot, ConnClose::Timeout, stats)?;
            } else {
                self.close_gracefully(ring, now, slot, ConnClose::Timeout, stats)?;
            }
        }
        Ok(())
    }
}

/// What a connection's timeouts are judged on.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    opened: Instant,
    active: Instant,
    partial_since: Option<Instant>,
    got_message: bool,
    handshaking: bool,
    connecting: bool,
    finishing: bool,
}

/// Why a connection's time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overdue {
    /// No whole first message (or TLS handshake) within
    /// [`FIRST_MESSAGE`], a connect of ours not done within [`CONNECT`],
    /// a message in part for [`WHOLE_MESSAGE`], or nothing either way for
    /// [`IDLE`]: closed with last words.
    Expired,
    /// Its last words were not sent within [`FINISH`]: closed at once.
    LastWords,
}

impl Clocks {
    fn overdue(&self, now: Instant) -> Option<Overdue> {
        let since = |at: Instant| now.saturating_duration_since(at);
        if self.finishing {
            // One already saying its last words only waits for them.
            return (since(self.active) > FINISH).then_some(Overdue::LastWords);
        }
        // No whole message yet from a peer that connected, or a TLS
        // handshake (either way) not done: both in the first message time.
        let late = ((!self.got_message || self.handshaking) && since(self.opened) > FIRST_MESSAGE)
            || (self.connecting && since(self.opened) > CONNECT);
        let idle = since(self.active) > IDLE;
        let stalled = self
            .partial_since
            .is_some_and(|at| since(at) > WHOLE_MESSAGE);
        (late || idle || stalled).then_some(Overdue::Expired)
    }
}

/// Bytes received on a connection, into its decoder: as they are over TCP,
/// decrypted over TLS (which may also complete the handshake, counted
/// here). An error names why the connection must close.
fn take_in(
    c: &mut Conn,
    mut data: &[u8],
    plain: &mut [u8],
    stats: &ShardStats,
    out: &mut Vec<Inbound>,
) -> Result<(), ConnClose> {
    let Conn {
        tls,
        ws,
        decoder,
        flow,
        got_message,
        handshaken,
        records,
        ..
    } = c;
    // Plaintext to the framer: the SIP stream decoder, or WebSocket
    // (whose messages are SIP messages).
    let mut deliver = |bytes: &[u8]| -> Result<(), ConnClose> {
        match ws.as_deref_mut() {
            None => {
                decoder.push(bytes);
                Ok(())
            }
            Some(ws) => ws
                .push(bytes, &mut |data| {
                    *got_message = true;
                    out.push(Inbound { flow: *flow, data });
                })
                .map_err(|end| match end {
                    WsEnd::Closed => ConnClose::Peer,
                    WsEnd::Upgrade | WsEnd::Protocol => ConnClose::Framing,
                }),
        }
    };
    let Some(tls) = tls.as_deref_mut() else {
        return deliver(data);
    };
    records.push(data);
    let index = transport_index(flow.transport);
    let peer = flow.remote;
    // A failed handshake is counted when the connection closes (however
    // it ends: here, a reset, a timeout).
    let fail = |tls: &rustls::Connection, error: &dyn std::fmt::Display| {
        tracing::debug!(peer = %peer, error = %error, handshaking = tls.is_handshaking(), "TLS failed");
        if tls.is_handshaking() {
            ConnClose::Handshake
        } else {
            ConnClose::Error
        }
    };
    while !data.is_empty() {
        if let Err(e) = tls.read_tls(&mut data) {
            return Err(fail(tls, &e));
        }
        if let Err(e) = tls.process_new_packets() {
            return Err(fail(tls, &e));
        }
        if !*handshaken && !tls.is_handshaking() {
            *handshaken = true;
            ShardStats::inc_at(&stats.handshakes, index);
        }
        loop {
            match tls.reader().read(plain) {
                // The peer's close_notify: it is done.
                Ok(0) => return Err(ConnClose::Peer),
                Ok(n) => deliver(plain.get(..n).unwrap_or_default())?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(fail(tls, &e)),
            }
        }
    }
    Ok(())
}

/// A connection still being set up: no SIP message carried yet, or a TLS
/// handshake or a WebSocket upgrade under way (each step a round trip).
fn setting_up(c: &Conn) -> bool {
    !c.got_message
        || c.tls.as_deref().is_some_and(|t| t.is_handshaking())
        || c.ws.as_deref().is_some_and(WsConn::upgrading)
}

/// A connection the SBC opened waits on a completion of its own that
/// should be taken as soon as it comes: its connect, a send with more
/// output queued behind it, or the peer's next handshake flight. Accepted
/// connections are not waited on this way: a stranger could otherwise
/// keep coalescing off (by not reading, or stalling its handshake).
fn awaiting_own(c: &Conn) -> bool {
    !c.closing
        && !c.accepted
        && (c.connecting.is_some()
            || (c.in_flight && !c.queued.is_empty())
            || c.tls.as_deref().is_some_and(|t| t.is_handshaking()))
}

/// Output waiting on a connection: queued, or in a send in flight.
fn has_output(c: &Conn) -> bool {
    c.in_flight || !c.sending.is_empty() || !c.queued.is_empty()
}

/// Moves what WebSocket and TLS have to send (the upgrade answer, frames,
/// handshake records, encrypted output) into the connection's queue.
/// Whether anything was added; an error when TLS cannot take the
/// WebSocket's output (more than its buffer holds: the peer does not
/// read).
fn seal(c: &mut Conn) -> Result<bool, ConnClose> {
    let before = c.queued.len();
    if let Some(ws) = c.ws.as_deref_mut() {
        let bytes = ws.output();
        match c.tls.as_deref_mut() {
            None => c.queued.extend_from_slice(&bytes),
            Some(tls) => {
                if !bytes.is_empty() && tls.writer().write_all(&bytes).is_err() {
                    return Err(ConnClose::Overflow);
                }
            }
        }
    }
    let Some(tls) = c.tls.as_deref_mut() else {
        return Ok(c.queued.len() > before);
    };
    while tls.wants_write() {
        match tls.write_tls(&mut (&mut c.queued).writer()) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(c.queued.len() > before)
}

/// Counts `n` bytes on the wire (TLS and WebSocket framing included) in
/// the shard's SIP total and in its transport's.
fn add_bytes(
    total: &std::sync::atomic::AtomicU64,
    by_transport: &[std::sync::atomic::AtomicU64],
    transport: Transport,
    n: usize,
) {
    let n = n as u64;
    total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    if let Some(c) = by_transport.get(transport_index(transport)) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

fn count_close(stats: &ShardStats, reason: ConnClose) {
    if let Some(i) = ConnClose::ALL.iter().position(|r| *r == reason)
        && let Some(c) = stats.connections_closed.get(i)
    {
        ShardStats::inc(c);
    }
}

fn open_gauge(stats: &ShardStats, transport: Transport, delta: i64) {
    if let Some(g) = stats.connections_open.get(transport_index(transport)) {
        g.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What was queued for `peer` never left: listed in `unsent`, once.
fn mark_unsent(unsent: &mut Vec<(Transport, SocketAddr)>, peer: (Transport, SocketAddr)) {
    if !unsent.contains(&peer) {
        unsent.push(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_timeout_is_judged_on_its_own_clock() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let quiet = Clocks {
            opened: t0,
            active: t0,
            partial_since: None,
            got_message: true,
            handshaking: false,
            connecting: false,
            finishing: false,
        };
        // An established connection: idle for 15 minutes, not before.
        assert_eq!(quiet.overdue(t0 + s(899)), None);
        assert_eq!(quiet.overdue(t0 + s(901)), Some(Overdue::Expired));
        let used = Clocks {
            active: t0 + s(800),
            ..quiet
        };
        assert_eq!(used.overdue(t0 + s(1600)), None);
        // A first message, a handshake, a connect: 10 s from opening.
        for c in [
            Clocks {
                got_message: false,
                ..quiet
            },
            Clocks {
                handshaking: true,
                ..quiet
            },
            Clocks {
                connecting: true,
                ..quiet
            },
        ] {
            assert_eq!(c.overdue(t0 + s(9)), None, "{c:?}");
            assert_eq!(c.overdue(t0 + s(11)), Some(Overdue::Expired), "{c:?}");
        }
        // A message in part: 10 s from its first bytes, however busy.
        let partial = Clocks {
            partial_since: Some(t0 + s(100)),
            active: t0 + s(109),
            ..quiet
        };
        assert_eq!(partial.overdue(t0 + s(109)), None);
        assert_eq!(partial.overdue(t0 + s(111)), Some(Overdue::Expired));
        // Last words: 2 s from when they began, nothing else counts.
        let finishing = Clocks {
            finishing: true,
            got_message: false,
            partial_since: Some(t0),
            active: t0 + s(50),
            ..quiet
        };
        assert_eq!(finishing.overdue(t0 + s(51)), None);
        assert_eq!(finishing.overdue(t0 + s(53)), Some(Overdue::LastWords));
    }

    #[test]
    fn conn_ids_name_their_shard_generation_and_slot() {
        let id = conn_id(3, 7, 513).unwrap();
        assert_eq!(conn_shard(id), 3);
        assert_eq!(conn_parts(id), (7, 513));
        let id = conn_id(255, u32::MAX, u16::MAX).unwrap();
        assert_eq!(conn_shard(id), 255);
        assert_eq!(conn_parts(id), (u32::MAX, u16::MAX));
        assert!(conn_id(0, 0, 0).is_none(), "generations start at 1");
        assert_ne!(conn_id(0, 1, 5), conn_id(0, 2, 5));
    }
}
