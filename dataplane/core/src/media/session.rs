//! The media of one call: its streams (one per m= line), the SBC's port
//! pair facing each side, and the offer/answer exchange that sets them up
//! (RFC 3264). Packets are checked (latching) and counted here; the shard's
//! I/O layer only moves them.

use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::ports::PortPool;
use super::rtp::SeqStats;
use super::sdp::{Anchor, Media, Sdp, SdpError, fields, in_address, rewrite};
use crate::b2bua::CallRef;

/// A side of the call, as the media layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    A = 0,
    B = 1,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
}

/// What an SDP body is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Offer,
    Answer,
}

/// Why an SDP body could not be anchored; each maps to the SIP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("malformed SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error("no stream has a codec allowed on both trunks")]
    NoCodec,
    #[error("no media port left")]
    PoolExhausted,
    /// The callee's trunk's `media_share` is taken (another trunk may
    /// take the call).
    #[error("the callee trunk's share of the media ports is taken")]
    ShareExhausted,
    #[error("more than {MAX_STREAMS} media streams")]
    TooManyStreams,
    #[error("more than {MAX_FORMATS} payload types on one m= line")]
    TooManyFormats,
    #[error("media address refused (multicast, broadcast, another IP family, or the SBC itself)")]
    BadAddress,
    #[error("the call is over")]
    CallEnded,
}

/// Most m= lines a call may have: each costs two port pairs, and a
/// stranger's SDP must not be able to take a shard's whole port slice.
pub const MAX_STREAMS: usize = 16;

/// Most payload types one m= line may list (every real offer has far
/// fewer; each costs work on every rewrite).
pub const MAX_FORMATS: usize = 32;

impl MediaError {
    /// RFC 3261 §21.4.26 (488) for SDP we cannot accept, §21.5.4 (503) when
    /// out of ports.
    pub fn status(self) -> (u16, &'static [u8]) {
        match self {
            MediaError::PoolExhausted | MediaError::ShareExhausted => (503, b"Service Unavailable"),
            _ => (488, b"Not Acceptable Here"),
        }
    }
}

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDrop {
    /// No call uses the port.
    UnknownPort,
    /// Not from the address the stream latched (or may latch) to.
    NotLatched,
    /// The other side's address is not known yet.
    NoDestination,
    /// No send buffer free at the moment.
    PoolExhausted,
    /// Larger than the relay's send buffers.
    Oversized,
    /// A frame on the AF_XDP path that is not a whole IPv4/UDP datagram.
    Malformed,
}

impl MediaDrop {
    pub const ALL: [MediaDrop; 6] = [
        MediaDrop::UnknownPort,
        MediaDrop::NotLatched,
        MediaDrop::NoDestination,
        MediaDrop::PoolExhausted,
        MediaDrop::Oversized,
        MediaDrop::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MediaDrop::UnknownPort => "unknown_port",
            MediaDrop::NotLatched => "not_latched",
            MediaDrop::NoDestination => "no_destination",
            MediaDrop::PoolExhausted => "pool_exhausted",
            MediaDrop::Oversized => "oversized",
            MediaDrop::Malformed => "malformed",
        }
    }
}

/// Who may send to a port of ours and where we send back (symmetric RTP).
#[derive(Debug, Clone, Copy, Default)]
pub struct Latch {
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    /// Latching allowed (at the start, and after SDP changed the address).
    pub open: bool,
    /// A new SDP from this side: the next packet from a new source that
    /// passes the address check may replace the latched RTP / RTCP source
    /// once (a NAT rebinding); a packet from the latched source cancels it.
    pub renew: [bool; 2],
    /// The RTP source latched for a device this side no longer is (another
    /// fork answered, [`MediaSession::another_peer`]): neither it nor its
    /// RTCP port may latch again.
    pub stale: Option<SocketAddr>,
}

impl Latch {
    fn is_stale(&self, src: SocketAddr) -> bool {
        self.stale.is_some_and(|s| {
            s.ip() == src.ip() && (s.port() == src.port() || s.port().wrapping_add(1) == src.port())
        })
    }
}

/// Packets received from one side of one stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
    pub seq: SeqStats,
}

/// The direction a side gave a stream in its SDP (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn of(sdp: &Sdp<'_>, m: &Media<'_>) -> Self {
        let named = |name: &[u8]| {
            m.has_attr(name)
                || sdp
                    .session
                    .iter()
                    .any(|l| l.kind == b'a' && l.value.eq_ignore_ascii_case(name))
        };
        if named(b"inactive") {
            Direction::Inactive
        } else if named(b"sendonly") {
            Direction::SendOnly
        } else if named(b"recvonly") {
            Direction::RecvOnly
        } else {
            Direction::SendRecv
        }
    }
}

/// One side of one stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoint {
    /// Our pair facing this side (it sends to it, we send to it from it).
    pub pair: Option<u32>,
    pub sdp_rtp: Option<SocketAddr>,
    pub sdp_rtcp: Option<SocketAddr>,
    /// This side multiplexes RTCP on the RTP port (RFC 5761).
    pub mux: bool,
    /// Its last SDP made the stream other than sendrecv, or gave
    /// c=0.0.0.0.
    pub hold: bool,
    pub latch: Latch,
    pub flow: Flow,
}

impl Endpoint {
    /// Whether a packet from `src` may be this side's: strict, exactly
    /// where its SDP says (RTCP: its RTCP address, or the RTP one with
    /// rtcp-mux); else from its SDP's IP or its signalling peer's.
    fn plausible(&self, strict: bool, rtcp: bool, src: SocketAddr, peer: IpAddr) -> bool {
        if strict {
            Some(src) == if rtcp { self.sdp_rtcp } else { self.sdp_rtp }
        } else {
            Some(src.ip()) == self.sdp_rtp.map(|a| a.ip()) || src.ip() == peer
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub ends: [Endpoint; 2],
}

/// Where a packet goes: out of our port `from_port`, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub from_port: u16,
    pub to: SocketAddr,
}

/// A port pair's owner: used by the shard to find the call of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub call: CallRef,
    pub stream: u16,
    pub leg: Leg,
}

/// The shard's port pool, who owns each pair of its slice, and the pairs
/// each trunk with a media share holds.
#[derive(Debug)]
pub struct MediaPorts {
    pub pool: PortPool,
    bindings: Vec<Option<(Binding, ShareKey)>>,
    /// Pairs held facing each trunk that has a `media_share`.
    held: std::collections::HashMap<ShareKey, u32>,
}

/// Names a trunk whose media share is counted (a hash of its name, so
/// counts carry across reloads); 0: not counted.
pub type ShareKey = u64;

/// The share key of a trunk called `name`.
pub fn share_key(name: &str) -> ShareKey {
    // FNV-1a: trunk names come from the configuration, not from peers.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h.max(1)
}

impl MediaPorts {
    pub fn new(pool: PortPool) -> Self {
        let n = usize::from(pool.plan().per_shard);
        MediaPorts {
            pool,
            bindings: vec![None; n],
            held: std::collections::HashMap::new(),
        }
    }

    fn allocate(&mut self, binding: Binding, share: ShareKey) -> Option<u32> {
        let pair = self.pool.allocate()?;
        if let Some(slot) = self
            .pool
            .local_index(pair)
            .and_then(|i| self.bindings.get_mut(i))
        {
            *slot = Some((binding, share));
            if share != 0 {
                *self.held.entry(share).or_default() += 1;
            }
        }
        Some(pair)
    }

    fn release(&mut self, pair: u32) {
        if let Some(slot) = self
            .pool
            .local_index(pair)
            .and_then(|i| self.bindings.get_mut(i))
            && let Some((_, share)) = slot.take()
            && let Some(n) = self.held.get_mut(&share)
        {
            *n = n.saturating_sub(1);
        }
        self.pool.release(pair);
    }

    /// Pairs held facing the trunk with share key `share`.
    pub fn held_by(&self, share: ShareKey) -> u32 {
        self.held.get(&share).copied().unwrap_or(0)
    }

    /// The owner of a port, and whether it is the RTCP port of its pair.
    pub fn lookup(&self, port: u16) -> Option<(Binding, bool)> {
        let (pair, rtcp) = self.pool.pair_of_port(port)?;
        let (b, _) = (*self.bindings.get(self.pool.local_index(pair)?)?)?;
        Some((b, rtcp))
    }

    pub fn rtp_port(&self, pair: u32) -> u16 {
        self.pool.plan().rtp_port(pair)
    }
}

/// What [`MediaSession::process`] needs from its call.
pub struct Context<'c> {
    pub ports: &'c mut MediaPorts,
    pub call: CallRef,
    /// Per side: the address written into SDP sent to it (of its family
    /// when the relay is dual-stack).
    pub advertise: [IpAddr; 2],
    /// The relay reaches IPv4 and IPv6 peers alike; else only those of
    /// the advertised family.
    pub dual_stack: bool,
    /// Signalling addresses of the two sides: media from them may latch.
    pub peers: [IpAddr; 2],
    /// Networks SDP may not send media to (`media.forbidden_destinations`).
    pub forbidden: &'c [ipnet::IpNet],
    /// The SBC's own addresses (SIP and media): never a media destination.
    pub own: &'c [IpAddr],
    /// Per side: the networks of its trunk, where its SDP may point even
    /// at loopback or link-local addresses (one host, lab setups).
    pub home: [&'c [ipnet::IpNet]; 2],
    /// Per side: the trunk is public, so its SDP may not point at private
    /// ranges (RFC 1918, RFC 6598, RFC 4193) outside its own networks.
    pub public: [bool; 2],
    /// Per side: latch only onto the exact address its SDP gives.
    pub strict: [bool; 2],
    /// Per side: the share key of its trunk and the most pairs the shard
    /// may hold facing it (`media_share`); key 0 and `u32::MAX`: no share.
    pub share: [(ShareKey, u32); 2],
    /// Codec policy for offers: does this format of this section survive?
    pub allow: &'c dyn Fn(&Media<'_>, &[u8]) -> bool,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("call", &self.call).finish()
    }
}

/// Whether the relay may send `from`'s media (or RTCP) to `ip`:`port`:
/// not multicast or broadcast, not an IPv4-mapped IPv6 address (say the
/// IPv4 one), not one of the relay's own ports, of a family the relay
/// reaches, not in a forbidden network, not a refused destination.
fn may_send_to(ip: IpAddr, port: u16, from: Leg, ctx: &Context<'_>) -> bool {
    let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    let canonical = crate::net::canonical(ip);
    let own = (ctx.own.contains(&canonical) || ctx.advertise.contains(&ip))
        && ctx.ports.pool.plan().owner(port).is_some();
    // Unless dual-stack, the relay sends from sockets of the advertised
    // family only.
    let other_family = !ctx.dual_stack
        && !ip.is_unspecified()
        && ip.is_ipv4() != ctx.advertise[from as usize].is_ipv4();
    let forbidden =
        ctx.forbidden.iter().any(|n| n.contains(&canonical)) || refused_destination(ip, from, ctx);
    !(crate::net::is_multicast_or_broadcast(ip) || mapped || own || other_family || forbidden)
}

/// Addresses media may not be relayed to unless they lie within the
/// sending side's own trunk networks: loopback, link-local and the SBC's
/// own addresses always; private ranges when the trunk is public. The
/// unspecified address is old-style hold (RFC 3264 §8.4), not refused.
fn refused_destination(ip: IpAddr, from: Leg, ctx: &Context<'_>) -> bool {
    let ip = crate::net::canonical(ip);
    let side = from as usize;
    if ip.is_unspecified() || ctx.home[side].iter().any(|n| n.contains(&ip)) {
        return false;
    }
    let special = ip.is_loopback() || is_link_local(ip) || ctx.own.contains(&ip);
    special || (ctx.public[side] && is_private(ip))
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// RFC 1918, RFC 6598 (carrier-grade NAT) and RFC 4193 ranges.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// A section that gets a relay: a port, one port (no `m=audio 49170/2`),
/// and in an offer at least one format the codec policy allows.
fn usable(m: &Media<'_>, role: Role, ctx: &Context<'_>) -> bool {
    m.port != 0
        && m.port_count.is_none_or(|c| c == b"1")
        && (role == Role::Answer || m.fmts.iter().any(|f| (ctx.allow)(m, f)))
}

/// The SBC's `o=` towards one side: its version and a digest of what the
/// last SDP sent there said.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin {
    pub version: u64,
    digest: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct MediaSession {
    pub streams: Vec<Stream>,
    pub peers: [IpAddr; 2],
    /// Per side: latch only onto the exact address its SDP gives.
    pub strict: [bool; 2],
    pub last_activity: Instant,
    /// Per side the SDP goes to.
    pub origin: [Origin; 2],
    /// A re-offer in progress: the session as it was, to go back to if the
    /// offer is refused (RFC 3264 §8, RFC 3261 §14.1), and the pairs it
    /// gave up, freed only once the answer accepts it.
    staged: Option<Box<MediaSession>>,
    deferred: Vec<u32>,
}

impl MediaSession {
    pub fn new(now: Instant, peers: [IpAddr; 2]) -> Self {
        MediaSession {
            streams: Vec::new(),
            peers,
            strict: [false; 2],
            last_activity: now,
            origin: [Origin::default(); 2],
            staged: None,
            deferred: Vec::new(),
        }
    }

    /// An SDP body from `from`, about to cross to the other leg: allocates
    /// ports for new streams, records `from`'s addresses, and returns the
    /// body rewritten to point at the SBC.
    pub fn process(
        &mut self,
        from: Leg,
        role: Role,
        body: &[u8],
        ctx: &mut Context<'_>,
    ) -> Result<Vec<u8>, MediaError> {
        let sdp = Sdp::parse(body)?;
        // Decide every stream before changing anything, so a refused offer
        // leaves the session as it was (RFC 3264 §8).
        self.check(&sdp, from, role, ctx)?;
        self.peers = ctx.peers;
        self.strict = ctx.strict;
        let mut anchors: SmallVec<[Anchor; 2]> = SmallVec::new();
        for (i, m) in sdp.media.iter().enumerate() {
            if i >= self.streams.len() {
                if role == Role::Answer {
                    // An answer cannot add streams (RFC 3264 §6).
                    anchors.push(Anchor::default());
                    continue;
                }
                self.streams.push(Stream::default());
            }
            if !usable(m, role, ctx) {
                self.release_stream(i, ctx.ports);
                anchors.push(Anchor::default());
                continue;
            }
            anchors.push(self.anchor_stream(i, &sdp, from, role, ctx)?);
        }
        let keep = |m: &Media<'_>, f: &[u8]| role == Role::Answer || (ctx.allow)(m, f);
        let origin = self.origin_towards(from.other(), &sdp, &anchors, ctx.call);
        let towards = ctx.advertise[from.other() as usize];
        Ok(rewrite(&sdp, towards, &anchors, &keep, origin))
    }

    /// Refuses what cannot be anchored before anything changes: too many
    /// streams, addresses media may not go to, no codec, no ports.
    fn check(
        &self,
        sdp: &Sdp<'_>,
        from: Leg,
        role: Role,
        ctx: &Context<'_>,
    ) -> Result<(), MediaError> {
        if sdp.media.len() > MAX_STREAMS {
            return Err(MediaError::TooManyStreams);
        }
        if sdp.media.iter().any(|m| m.fmts.len() > MAX_FORMATS) {
            return Err(MediaError::TooManyFormats);
        }
        let mut needed = [0usize; 2];
        for (i, m) in sdp.media.iter().enumerate() {
            if !usable(m, role, ctx) || (role == Role::Answer && i >= self.streams.len()) {
                continue;
            }
            let ip = sdp.connection(i).ok_or(SdpError::Connection)?;
            // The RTCP address (RFC 3605) is a destination too, until the
            // peer's own packets latch it.
            let rtcp = rtcp_address(m, ip);
            if !may_send_to(ip, m.port, from, ctx)
                || rtcp.is_some_and(|r| !may_send_to(r.ip(), r.port(), from, ctx))
            {
                return Err(MediaError::BadAddress);
            }
            let have = self.streams.get(i).map_or([false, false], |s| {
                [s.ends[0].pair.is_some(), s.ends[1].pair.is_some()]
            });
            for (leg, have) in have.iter().enumerate() {
                if !have && let Some(n) = needed.get_mut(leg) {
                    *n += 1;
                }
            }
        }
        if role == Role::Offer
            && sdp.media.iter().any(|m| m.port != 0)
            && !sdp.media.iter().any(|m| usable(m, role, ctx))
        {
            return Err(MediaError::NoCodec);
        }
        if needed[0] + needed[1] > ctx.ports.pool.available() {
            return Err(MediaError::PoolExhausted);
        }
        // A trunk's media share: the new pairs facing it (both legs' when
        // the call goes out the way it came in) stay within its cap. An
        // SDP that takes no new pairs is never refused for it.
        for (leg, (key, max)) in ctx.share.into_iter().enumerate() {
            let want: usize = ctx
                .share
                .iter()
                .zip(needed)
                .filter(|((k, _), _)| *k == key)
                .map(|(_, n)| n)
                .sum();
            let want = u32::try_from(want).unwrap_or(u32::MAX);
            if key != 0 && want > 0 && ctx.ports.held_by(key).saturating_add(want) > max {
                // The callee's trunk's share: another trunk may take the
                // call. The caller's: no trunk can.
                return Err(if leg == Leg::B as usize && ctx.share[0].0 != key {
                    MediaError::ShareExhausted
                } else {
                    MediaError::PoolExhausted
                });
            }
        }
        Ok(())
    }

    /// Stream `i` of `sdp` from `from`: its port pairs (allocated when
    /// new), `from`'s addresses and hold state recorded; what the other
    /// side is told.
    fn anchor_stream(
        &mut self,
        i: usize,
        sdp: &Sdp<'_>,
        from: Leg,
        role: Role,
        ctx: &mut Context<'_>,
    ) -> Result<Anchor, MediaError> {
        let m = sdp.media.get(i).ok_or(SdpError::MediaLine)?;
        let stream_index = u16::try_from(i).unwrap_or(u16::MAX);
        let stream = self.streams.get_mut(i).ok_or(MediaError::TooManyStreams)?;
        for leg in [Leg::A, Leg::B] {
            let end = &mut stream.ends[leg as usize];
            if end.pair.is_none() {
                let binding = Binding {
                    call: ctx.call,
                    stream: stream_index,
                    leg,
                };
                let share = ctx.share.get(leg as usize).map_or(0, |s| s.0);
                end.pair = Some(
                    ctx.ports
                        .allocate(binding, share)
                        .ok_or(MediaError::PoolExhausted)?,
                );
            }
        }
        let ip = sdp.connection(i).ok_or(SdpError::Connection)?;
        // c=0.0.0.0 is the old way to put a stream on hold (RFC 3264
        // §8.4): never send there.
        let held = ip.is_unspecified();
        let rtp = (!held).then(|| SocketAddr::new(ip, m.port));
        let rtcp = (!held).then(|| {
            rtcp_address(m, ip).unwrap_or_else(|| SocketAddr::new(ip, m.port.wrapping_add(1)))
        });
        let end = &mut stream.ends[from as usize];
        if end.sdp_rtp != rtp {
            // New address: send there, and let the peer latch anew.
            end.latch.rtp = None;
            end.latch.rtcp = None;
        }
        // Every SDP from a side lets it latch again (a NAT may have moved
        // it while the stream was on hold, RFC 7362 §4); until a packet
        // comes from the new place, the old latch still holds.
        end.latch.open = true;
        end.latch.renew = [true, true];
        end.sdp_rtp = rtp;
        end.sdp_rtcp = rtcp;
        end.mux = m.has_attr(b"rtcp-mux");
        end.hold = held || Direction::of(sdp, m) != Direction::SendRecv;
        let from_mux = end.mux;
        let toward = stream.ends[from.other() as usize];
        let port = toward.pair.map_or(0, |p| ctx.ports.rtp_port(p));
        // Towards the other side we offer rtcp-mux as the offerer did, and
        // in an answer we accept it when that side offered it.
        let rtcp_mux = match role {
            Role::Offer => from_mux,
            Role::Answer => toward.mux,
        };
        Ok(Anchor { port, rtcp_mux })
    }

    /// Our own o= towards `to` (session id and version): the other side's
    /// user name and session id never cross, and the version moves only
    /// when what we say changes (the input without its o= line, and our
    /// ports; RFC 4566 §5.2, RFC 3264 §8).
    fn origin_towards(
        &mut self,
        to: Leg,
        sdp: &Sdp<'_>,
        anchors: &[Anchor],
        call: CallRef,
    ) -> (u64, u64) {
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = ChangeHash::default();
            for l in sdp.session.iter().filter(|l| l.kind != b'o') {
                (l.kind, l.value).hash(&mut h);
            }
            for m in &sdp.media {
                (m.media, m.port, m.proto, &m.fmts).hash(&mut h);
                for l in &m.lines {
                    (l.kind, l.value).hash(&mut h);
                }
            }
            for a in anchors {
                (a.port, a.rtcp_mux).hash(&mut h);
            }
            h.finish()
        };
        let origin = &mut self.origin[to as usize];
        if origin.digest != Some(digest) {
            origin.version += 1;
            origin.digest = Some(digest);
        }
        let id = (u64::from(call.index) << 16 | u64::from(call.generation)) * 2 + to as u64 + 1;
        (id, origin.version)
    }

    /// Starts a re-offer that may still be refused: until
    /// [`MediaSession::commit`] or [`MediaSession::rollback`], ports it
    /// gives up stay reserved.
    pub fn stage(&mut self) {
        if self.staged.is_none() {
            let mut before = self.clone();
            before.deferred.clear();
            self.staged = Some(Box::new(before));
            self.deferred.clear();
        }
    }

    /// The re-offer was accepted: free what it gave up.
    pub fn commit(&mut self, ports: &mut MediaPorts) {
        if self.staged.take().is_some() {
            for p in self.deferred.drain(..) {
                ports.release(p);
            }
        }
    }

    /// The re-offer was refused: back to the session as it was (addresses,
    /// latches, ports), freeing only the pairs the offer took. What was
    /// relayed meanwhile stays counted: a side still on its old pair keeps
    /// its counters as they are now, one whose pair the offer had replaced
    /// adds what the new pair received.
    pub fn rollback(&mut self, ports: &mut MediaPorts) {
        let Some(before) = self.staged.take() else {
            return;
        };
        let kept: Vec<u32> = before
            .streams
            .iter()
            .flat_map(|s| s.ends.iter().filter_map(|e| e.pair))
            .collect();
        for s in &self.streams {
            for p in s.ends.iter().filter_map(|e| e.pair) {
                if !kept.contains(&p) {
                    ports.release(p);
                }
            }
        }
        let activity = self.last_activity;
        let current = std::mem::take(&mut self.streams);
        *self = *before;
        self.last_activity = self.last_activity.max(activity);
        for (stream, now) in self.streams.iter_mut().zip(&current) {
            for (end, now) in stream.ends.iter_mut().zip(&now.ends) {
                if end.pair == now.pair {
                    end.flow = now.flow;
                } else {
                    end.flow.packets += now.flow.packets;
                    end.flow.bytes += now.flow.bytes;
                }
            }
        }
    }

    fn release_stream(&mut self, i: usize, ports: &mut MediaPorts) {
        let staged = self.staged.is_some();
        if let Some(s) = self.streams.get_mut(i) {
            for end in &mut s.ends {
                if let Some(p) = end.pair.take() {
                    if staged {
                        self.deferred.push(p);
                    } else {
                        ports.release(p);
                    }
                }
                end.sdp_rtp = None;
                end.sdp_rtcp = None;
            }
        }
    }

    /// The SDP of `leg` now comes from another device than the one it
    /// latched (a fork other than the one whose early media it relayed):
    /// its latched sources are dropped and the RTP one is refused from now
    /// on, so packets it still has in flight cannot take the latch from the
    /// device that answered (they may share a NAT's address).
    pub fn another_peer(&mut self, leg: Leg) {
        for s in &mut self.streams {
            let latch = &mut s.ends[leg as usize].latch;
            if let Some(rtp) = latch.rtp.take() {
                latch.stale = Some(rtp);
            }
            latch.rtcp = None;
            latch.open = true;
        }
    }

    /// A new callee (failover): forget everything the previous one said
    /// and take fresh ports towards it, so it can neither receive nor
    /// inject media any more.
    pub fn reset_leg(&mut self, leg: Leg, ports: &mut MediaPorts) {
        for s in &mut self.streams {
            let end = &mut s.ends[leg as usize];
            if let Some(p) = end.pair.take() {
                ports.release(p);
            }
            *end = Endpoint::default();
        }
    }

    /// Every live stream is on hold (inactive, one-way or c=0.0.0.0) on
    /// some side: silence is expected, not a dead call.
    pub fn on_hold(&self) -> bool {
        let mut live = self
            .streams
            .iter()
            .filter(|s| s.ends.iter().all(|e| e.pair.is_some()))
            .peekable();
        live.peek().is_some() && live.all(|s| s.ends.iter().any(|e| e.hold))
    }

    /// Frees every port of the call (a staged re-offer's too).
    pub fn release(&mut self, ports: &mut MediaPorts) {
        self.rollback(ports);
        for i in 0..self.streams.len() {
            self.release_stream(i, ports);
        }
    }

    /// A packet arrived on our port facing `leg` of stream `stream`:
    /// latch, count, and say where it goes.
    pub fn on_packet(
        &mut self,
        now: Instant,
        binding: Binding,
        rtcp_port: bool,
        src: SocketAddr,
        data: &[u8],
        ports: &MediaPorts,
    ) -> Result<Forward, MediaDrop> {
        let peers = self.peers;
        let stream = self
            .streams
            .get_mut(usize::from(binding.stream))
            .ok_or(MediaDrop::UnknownPort)?;
        let from = binding.leg;
        let end = &mut stream.ends[from as usize];
        // RFC 5761 §4: with rtcp-mux, RTCP (packet types 192-223) shares
        // the RTP port.
        let rtcp = rtcp_port || (end.mux && data.get(1).is_some_and(|pt| (192..=223).contains(pt)));
        // With rtcp-mux, RTCP comes from the RTP address.
        let which = usize::from(rtcp && !end.mux);
        let stale = end.latch.is_stale(src);
        let plausible = end.plausible(
            self.strict[from as usize],
            which == 1,
            src,
            peers[from as usize],
        );
        let latched = if which == 1 {
            &mut end.latch.rtcp
        } else {
            &mut end.latch.rtp
        };
        let renew = &mut end.latch.renew[which];
        match latched {
            Some(a) if *a == src => *renew = false,
            // A device this side no longer is (see `another_peer`).
            _ if stale => return Err(MediaDrop::NotLatched),
            None if end.latch.open && plausible => {
                // Symmetric RTP: from now on, this is where the peer is.
                *latched = Some(src);
                *renew = false;
            }
            Some(_) if end.latch.open && *renew && plausible => {
                // Moved since its last SDP (NAT rebinding): follow it, once.
                *latched = Some(src);
                *renew = false;
            }
            _ => return Err(MediaDrop::NotLatched),
        }
        if end.latch.rtp.is_some() && (end.latch.rtcp.is_some() || end.mux) {
            end.latch.open = false;
        }
        end.flow.packets += 1;
        end.flow.bytes += data.len() as u64;
        if !rtcp {
            end.flow.seq.record(data);
        }
        self.last_activity = now;
        let other = &stream.ends[from.other() as usize];
        let pair = other.pair.ok_or(MediaDrop::NoDestination)?;
        let rtp_port = ports.rtp_port(pair);
        let (from_port, to) = if rtcp && !other.mux {
            (
                rtp_port.wrapping_add(1),
                other.latch.rtcp.or(other.sdp_rtcp),
            )
        } else {
            (rtp_port, other.latch.rtp.or(other.sdp_rtp))
        };
        Ok(Forward {
            from_port,
            to: to.ok_or(MediaDrop::NoDestination)?,
        })
    }

    /// Totals received from one side, over all streams.
    pub fn totals(&self, leg: Leg) -> (u64, u64, u64) {
        self.streams.iter().fold((0, 0, 0), |(p, b, l), s| {
            let f = &s.ends[leg as usize].flow;
            (p + f.packets, b + f.bytes, l + f.seq.lost())
        })
    }
}

/// RFC 3605 `a=rtcp:<port> [IN IP4 <addr>]`.
fn rtcp_address(m: &Media<'_>, default_ip: IpAddr) -> Option<SocketAddr> {
    let mut parts = fields(m.attr(b"rtcp")?)?;
    let port: u16 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let ip = match in_address(&mut parts) {
        Some(addr) => crate::net::parse_ip(addr)?,
        None => default_ip,
    };
    Some(SocketAddr::new(ip, port))
}

/// A 64-bit hash over eight bytes at a time (rotate, xor, multiply, as
/// FxHash does): what `origin_towards` detects changes with; cheaper than
/// SipHash on the many small writes a description makes. Not a map key: a
/// crafted collision could only keep the version of the sender's own
/// call's description from moving.
#[derive(Default)]
struct ChangeHash(u64);

impl ChangeHash {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for ChangeHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

#[cfg(test)]
mod tests;
