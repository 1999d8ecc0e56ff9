//! Counters the shards write and the control plane reads for `/metrics`.
//!
//! Every counter is a relaxed atomic written by exactly one shard (or, for
//! per-trunk counters, by the shards handling that trunk's calls), so the
//! hot path never takes a lock; the metrics endpoint reads them at scrape
//! time.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU16, AtomicU64, Ordering};

use crate::refusal::Refusal;

/// Call direction as seen from a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Calls the trunk sent to the SBC.
    Inbound = 0,
    /// Calls the SBC sent to the trunk.
    Outbound = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Per-trunk call counters, per direction, and the trunk's health.
#[derive(Debug, Default)]
pub struct TrunkStats {
    pub attempted: [AtomicU64; 2],
    pub answered: [AtomicU64; 2],
    pub failed: [AtomicU64; 2],
    pub active: [AtomicI64; 2],
    /// Health probes: the probing shard sets it, every shard's routing
    /// skips the trunk while it is set.
    pub down: AtomicBool,
    /// Health probes answered (index 0) and failed (index 1).
    pub probes: [AtomicU64; 2],
    /// Calls held open with the trunk, by direction: from the trunk, from
    /// admission to the call's end; to it, while an attempt or the answered
    /// call holds it. Counted across shards (admission control).
    pub open: [AtomicI64; 2],
    /// The SBC's registration with the trunk (written by the shard that
    /// owns it): a [`Registered`] state, the last final status it got (0:
    /// none yet, or no answer), and REGISTER exchanges that ended
    /// registered (index 0) and failed (index 1).
    pub registration: AtomicU8,
    pub registration_status: AtomicU16,
    pub registrations: [AtomicU64; 2],
}

/// Where the SBC's registration with a trunk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Registered {
    /// Not configured (or not started yet).
    No = 0,
    /// The first REGISTER is on its way.
    Trying = 1,
    Yes = 2,
    /// The last attempt failed; retrying after a backoff.
    Failed = 3,
}

impl Registered {
    pub fn label(self) -> &'static str {
        match self {
            Registered::No => "none",
            Registered::Trying => "trying",
            Registered::Yes => "registered",
            Registered::Failed => "failed",
        }
    }
}

/// Calls open across all shards, for the SBC's `max_calls`.
#[derive(Debug, Default)]
pub struct OpenCalls(AtomicI64);

impl OpenCalls {
    /// Takes a slot for a new call unless `max` are open.
    /// Two shards racing for the last slot never both lose it.
    pub fn try_open(&self, max: Option<u32>) -> bool {
        let Some(max) = max else {
            self.0.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < i64::from(max)).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot [`OpenCalls::try_open`] took.
    pub fn close(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls open now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TrunkStats {
    /// Takes a slot for a call in direction `d` unless `max` are open.
    pub fn try_open(&self, d: Direction, max: Option<u32>) -> bool {
        let n = self.open[d as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if max.is_some_and(|m| n > i64::from(m)) {
            self.open[d as usize].fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back a slot [`TrunkStats::try_open`] took.
    pub fn close(&self, d: Direction) {
        self.open[d as usize].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn registered(&self) -> Registered {
        match self.registration.load(Ordering::Relaxed) {
            1 => Registered::Trying,
            2 => Registered::Yes,
            3 => Registered::Failed,
            _ => Registered::No,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn attempt(&self, d: Direction) {
        self.attempted[d as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn answer(&self, d: Direction) {
        self.answered[d as usize].fetch_add(1, Ordering::Relaxed);
        self.active[d as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn fail(&self, d: Direction) {
        self.failed[d as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn hang_up(&self, d: Direction) {
        self.active[d as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a received message was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// A response that failed to parse.
    MalformedResponse,
    /// A request so broken no answer can be addressed.
    Unanswerable,
    /// A response matching no transaction.
    StrayResponse,
    /// A datagram larger than the receive buffer.
    Oversized,
    /// An ACK matching nothing.
    StrayAck,
    /// A stranger over its answer rate: dropped without the answer.
    StrangerLimited,
}

impl Discard {
    pub const ALL: [Discard; 6] = [
        Discard::MalformedResponse,
        Discard::Unanswerable,
        Discard::StrayResponse,
        Discard::Oversized,
        Discard::StrayAck,
        Discard::StrangerLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Discard::MalformedResponse => "malformed_response",
            Discard::Unanswerable => "unanswerable_request",
            Discard::StrayResponse => "stray_response",
            Discard::Oversized => "oversized",
            Discard::StrayAck => "stray_ack",
            Discard::StrangerLimited => "stranger_rate_limited",
        }
    }
}

/// Status codes 100..=699 indexed from 0.
pub const STATUS_SLOTS: usize = 600;

/// One shard's counters.
#[derive(Debug)]
pub struct ShardStats {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub retransmissions_in: AtomicU64,
    pub handed_off: AtomicU64,
    pub calls_created: AtomicU64,
    pub calls_active: AtomicI64,
    pub failovers: AtomicU64,
    pub parse_errors: AtomicU64,
    pub rejected: [AtomicU64; Refusal::LABELS.len()],
    pub dropped: [AtomicU64; Discard::ALL.len()],
    /// Final responses sent to callers, by status code.
    pub finals_sent: [AtomicU64; STATUS_SLOTS],
    /// Final responses received from trunks, by status code.
    pub finals_received: [AtomicU64; STATUS_SLOTS],
    /// Loop iterations, and iterations that found work (load indicator).
    pub loop_iterations: AtomicU64,
    /// Nanoseconds the loop's rounds spent working, from each wake-up to
    /// the next wait (the sends that wait submits not included).
    pub busy_nanos: AtomicU64,
    /// Media packets and bytes relayed, by direction (index: 0 = from the
    /// caller's side, 1 = from the callee's side).
    pub media_packets: [AtomicU64; 2],
    pub media_bytes: [AtomicU64; 2],
    /// RTP packets lost (sequence gaps), by direction, added when calls end.
    pub media_lost: [AtomicU64; 2],
    /// Media packets dropped, by [`crate::media::MediaDrop`] reason.
    pub media_dropped: [AtomicU64; crate::media::MediaDrop::ALL.len()],
    /// Calls with anchored media now, and ports they hold.
    pub media_sessions: AtomicI64,
    pub media_ports_in_use: AtomicI64,
    /// Calls ended because their media stopped.
    pub media_timeouts: AtomicU64,
    /// The AF_XDP path: 1 while this shard has an AF_XDP socket.
    pub xdp_socket: AtomicI64,
    /// Frames the AF_XDP socket received, frames relayed by rewriting
    /// them in place, and frames whose payload went out through a UDP
    /// socket instead (next hop not learned yet, or the TX ring full).
    pub xdp_received: AtomicU64,
    pub xdp_sent: AtomicU64,
    pub xdp_fallback: AtomicU64,
    /// The kernel's drops on the AF_XDP socket, by [`XDP_KERNEL_DROPS`]
    /// reason (its own totals, read about once a second).
    pub xdp_kernel_dropped: [AtomicU64; XDP_KERNEL_DROPS.len()],
    /// Where the shard's loop is: [`LoopState`] as a number.
    pub loop_state: AtomicU8,
    /// Share of new calls admitted, per mille (overload control).
    pub admission: AtomicI64,
    /// REGISTERs the registrar answered (or dropped), by
    /// [`crate::registrar::RegisterResult`].
    pub registrar: [AtomicU64; crate::registrar::RegisterResult::ALL.len()],
    /// Requests from phones other than REGISTER (INVITE, OPTIONS,
    /// MESSAGE...) that were challenged, refused or dropped before their
    /// credentials checked out, by [`crate::registrar::RegisterResult`].
    pub phone_auth: [AtomicU64; crate::registrar::RegisterResult::ALL.len()],
    /// Refused credentials, by [`crate::registrar::AuthFailure`].
    pub auth_failures: [AtomicU64; crate::registrar::AuthFailure::ALL.len()],
    /// Stream connections open now, by transport (index in
    /// [`crate::net::Transport::ALL`]).
    pub connections_open: [AtomicI64; crate::net::Transport::ALL.len()],
    /// Connections accepted from peers and opened by the SBC.
    pub connections_accepted: AtomicU64,
    pub connections_opened: AtomicU64,
    /// Connections closed, by [`crate::net::ConnClose`].
    pub connections_closed: [AtomicU64; crate::net::ConnClose::ALL.len()],
    /// TLS handshakes completed and failed, by transport (index in
    /// [`crate::net::Transport::ALL`]: TLS, later WSS).
    pub handshakes: [AtomicU64; crate::net::Transport::ALL.len()],
    /// Bytes received and sent on stream connections, by transport, as on
    /// the wire (TLS records and WebSocket frames included).
    pub stream_bytes_in: [AtomicU64; crate::net::Transport::ALL.len()],
    pub stream_bytes_out: [AtomicU64; crate::net::Transport::ALL.len()],
    pub handshake_failures: [AtomicU64; crate::net::Transport::ALL.len()],
}

/// Where a shard's event loop is, as [`ShardStats::loop_state`] holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LoopState {
    /// Not running yet.
    Starting = 0,
    Running = 1,
    /// Ended: stopped, or on an error or a panic.
    Stopped = 2,
}

/// Reasons the kernel drops frames on an AF_XDP socket (metric labels).
pub const XDP_KERNEL_DROPS: [&str; 4] = [
    "rx_dropped",
    "rx_ring_full",
    "fill_ring_empty",
    "tx_invalid",
];

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            retransmissions_in: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            calls_created: AtomicU64::new(0),
            calls_active: AtomicI64::new(0),
            failovers: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            finals_sent: std::array::from_fn(|_| AtomicU64::new(0)),
            finals_received: std::array::from_fn(|_| AtomicU64::new(0)),
            loop_iterations: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            media_packets: std::array::from_fn(|_| AtomicU64::new(0)),
            media_bytes: std::array::from_fn(|_| AtomicU64::new(0)),
            media_lost: std::array::from_fn(|_| AtomicU64::new(0)),
            media_dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            media_sessions: AtomicI64::new(0),
            media_ports_in_use: AtomicI64::new(0),
            media_timeouts: AtomicU64::new(0),
            xdp_socket: AtomicI64::new(0),
            xdp_received: AtomicU64::new(0),
            xdp_sent: AtomicU64::new(0),
            xdp_fallback: AtomicU64::new(0),
            xdp_kernel_dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            loop_state: AtomicU8::new(LoopState::Starting as u8),
            admission: AtomicI64::new(1000),
            registrar: std::array::from_fn(|_| AtomicU64::new(0)),
            phone_auth: std::array::from_fn(|_| AtomicU64::new(0)),
            auth_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            connections_open: std::array::from_fn(|_| AtomicI64::new(0)),
            connections_accepted: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_closed: std::array::from_fn(|_| AtomicU64::new(0)),
            handshakes: std::array::from_fn(|_| AtomicU64::new(0)),
            stream_bytes_in: std::array::from_fn(|_| AtomicU64::new(0)),
            stream_bytes_out: std::array::from_fn(|_| AtomicU64::new(0)),
            handshake_failures: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl ShardStats {
    /// Where the shard's loop is.
    pub fn loop_state(&self) -> LoopState {
        match self.loop_state.load(Ordering::Relaxed) {
            0 => LoopState::Starting,
            1 => LoopState::Running,
            _ => LoopState::Stopped,
        }
    }

    pub fn set_loop_state(&self, state: LoopState) {
        self.loop_state.store(state as u8, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one in `counters[index]` (nothing when out of range).
    pub fn inc_at(counters: &[AtomicU64], index: usize) {
        if let Some(c) = counters.get(index) {
            Self::inc(c);
        }
    }

    /// Counts a request the SBC refused, under its label.
    pub fn refused(&self, r: Refusal) {
        if let Some(c) = self.rejected.get(r.counter()) {
            Self::inc(c);
        }
    }

    pub fn auth_failure(&self, why: crate::registrar::AuthFailure) {
        if let Some(c) = self.auth_failures.get(why as usize) {
            Self::inc(c);
        }
    }

    pub fn register(&self, r: crate::registrar::RegisterResult) {
        if let Some(c) = self.registrar.get(r as usize) {
            Self::inc(c);
        }
    }

    /// `r` for a request of `method`: a REGISTER's in the registrar's
    /// counts, any other (a phone calling) in the phones' own.
    pub fn authenticated(&self, method: crate::sip::Method, r: crate::registrar::RegisterResult) {
        let counts = if method == crate::sip::Method::Register {
            &self.registrar
        } else {
            &self.phone_auth
        };
        if let Some(c) = counts.get(r as usize) {
            Self::inc(c);
        }
    }

    pub fn discard(&self, d: Discard) {
        if let Some(c) = Discard::ALL
            .iter()
            .position(|x| *x == d)
            .and_then(|i| self.dropped.get(i))
        {
            Self::inc(c);
        }
    }

    pub fn final_sent(&self, code: u16) {
        if let Some(c) = code
            .checked_sub(100)
            .and_then(|i| self.finals_sent.get(usize::from(i)))
        {
            Self::inc(c);
        }
    }

    pub fn final_received(&self, code: u16) {
        if let Some(c) = code
            .checked_sub(100)
            .and_then(|i| self.finals_received.get(usize::from(i)))
        {
            Self::inc(c);
        }
    }

    pub fn media_drop(&self, d: crate::media::MediaDrop) {
        if let Some(c) = crate::media::MediaDrop::ALL
            .iter()
            .position(|x| *x == d)
            .and_then(|i| self.media_dropped.get(i))
        {
            Self::inc(c);
        }
    }

    pub fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
