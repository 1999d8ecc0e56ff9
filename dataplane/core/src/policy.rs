//! The immutable configuration snapshot the shards read.
//!
//! The control plane compiles its configuration into a [`Policy`] and
//! publishes it (`arc_swap`); each call keeps the `Arc<Policy>` it started
//! with, so a reconfiguration never changes a call in progress.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::stats::TrunkStats;
use crate::transaction::TimerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrunkId(pub u16);

/// The "trunk" of a leg that faces a registered phone rather than a
/// configured trunk: it names no entry of [`Policy::trunks`] (validation
/// keeps their number below it). Such a leg's peer is the address the
/// phone registered from (its [`crate::net::Flow`]), not a trunk's
/// networks.
pub const PHONES: TrunkId = TrunkId(u16::MAX);

/// How a trunk's media is handled (BRIEF §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaMode {
    /// Relayed through the SBC's ports; SDP rewritten.
    #[default]
    Anchor,
    /// "Peer to peer": SDP passes unchanged, media flows between the
    /// endpoints. A call is bypassed only when both of its trunks say so.
    Bypass,
}

/// A SIP peer identified by its source addresses.
#[derive(Debug)]
pub struct Trunk {
    pub name: Arc<str>,
    /// Requests from these networks belong to this trunk.
    pub sources: Vec<IpNet>,
    /// Over UDP, requests from the sources start calls as this trunk's
    /// only from this port (several trunks may share one address, told
    /// apart by port); over TCP and TLS, whose source ports are
    /// ephemeral, the address alone counts.
    pub source_port: Option<u16>,
    /// Where requests to this trunk are sent.
    pub address: SocketAddr,
    /// The transport requests to this trunk use (validation makes sure a
    /// listener of that transport exists).
    pub transport: crate::net::Transport,
    pub media: MediaMode,
    /// Encoding names (lowercase, e.g. "pcma", "telephone-event", "t38")
    /// this trunk may use; `None` allows every codec.
    pub codecs: Option<Vec<String>>,
    /// Media from this trunk is accepted only from the address and port
    /// its SDP gives: no symmetric-RTP learning of another port or (NAT)
    /// address.
    pub strict_latch: bool,
    /// OPTIONS health probes to `address` (BRIEF §2, §3); `None`: never
    /// probed, always taken as up.
    pub probe: Option<Probe>,
    /// Admission control (BRIEF §2): calls open with the trunk at once, in
    /// each direction; calls a second it may start (a token bucket).
    pub max_calls: Option<u32>,
    pub max_cps: Option<u32>,
    /// A trunk on the public internet: its SDP may not point media at
    /// private ranges outside its own `sources`.
    pub public: bool,
    /// In a dialog with this trunk, a Contact or Record-Route naming an IP
    /// address outside its sources moves the SBC's requests there (and
    /// the peer is heard from there too); by default they go only to the
    /// trunk's own addresses.
    pub follow_contact: bool,
    /// The most of each shard's media port pairs this trunk's calls may
    /// hold (both sides), in percent (1..=100); `None`: no limit but the
    /// pool.
    pub media_share: Option<u8>,
    /// Its requests are taken only over TLS, where its connections had to
    /// present a certificate its CA signed (`verify_client`): from its
    /// addresses over UDP, TCP or WebSocket it is a stranger.
    pub tls_only: bool,
    /// The SBC registers itself to this trunk (BRIEF §2); its credentials
    /// also answer the trunk's challenges to our INVITEs.
    pub registration: Option<Arc<Registration>>,
    /// The trunk registers to the SBC (`host = "dynamic"`, a gateway
    /// without a fixed address): it is reached at the binding of its
    /// account (see [`crate::registrar::Account::trunk`]), its requests are
    /// authenticated by digest, `sources` is empty and `address` unused.
    pub dynamic: bool,
    pub stats: Arc<TrunkStats>,
}

/// The SBC's own registration with a trunk: REGISTER to `registrar` for
/// `sip:user@domain`, binding `sip:contact_user@<our address>`, answering
/// digest challenges as `auth_user` (RFC 3261 §10.2, §22).
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    pub registrar: SocketAddr,
    /// The host of the address of record and of the Request-URI.
    pub domain: Arc<str>,
    pub user: Arc<str>,
    pub auth_user: Arc<str>,
    pub secret: Arc<str>,
    /// Only challenges of this realm are answered; `None`: any realm.
    pub realm: Option<Arc<str>>,
    /// The user part of our Contact: the ITSP's calls arrive for it.
    pub contact_user: Arc<str>,
    /// The expiry asked for.
    pub expires: Duration,
    /// Wait after a failure, doubled after each failure in a row up to
    /// `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("registrar", &self.registrar)
            .field("domain", &self.domain)
            .field("user", &self.user)
            .field("auth_user", &self.auth_user)
            .field("secret", &"<redacted>")
            .field("realm", &self.realm)
            .field("contact_user", &self.contact_user)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Whether a Request-URI's user part is this registration's Contact
    /// user: a call the provider delivers to the registration.
    pub fn names(&self, user: &[u8]) -> bool {
        self.contact_user.as_bytes() == user
    }

    /// The wait before retrying after `failures` failures in a row
    /// (at least one): `retry_min` doubled for each, capped at `retry_max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.retry_min
            .saturating_mul(1 << doublings)
            .min(self.retry_max)
    }
}

/// How a trunk is probed: an OPTIONS every `interval`; down after
/// `down_after` failures in a row (no answer within the interval, 408,
/// 5xx, 6xx), up again after `up_after` answers in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub interval: Duration,
    pub down_after: u32,
    pub up_after: u32,
}

impl Trunk {
    /// Whether an encoding (lowercase name) is allowed on this trunk.
    pub fn allows(&self, encoding: &str) -> bool {
        self.codecs
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == encoding))
    }
}

/// Where media is relayed (BRIEF §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    /// Address the relay sockets bind.
    pub bind: IpAddr,
    /// Address written into SDP (the public one behind 1:1 NAT).
    pub advertise: IpAddr,
    /// A relay on both families: the address of the other family than
    /// `bind` its sockets also bind (one more socket per port), and the
    /// address written into SDP for peers of that family.
    pub bind_other: Option<IpAddr>,
    pub advertise_other: Option<IpAddr>,
    /// RTP/RTCP port range (inclusive), split between the shards.
    pub first_port: u16,
    pub last_port: u16,
    /// A call with no media in either direction this long is ended.
    pub timeout: Duration,
    /// SDP may not point media here (besides multicast, broadcast and the
    /// relay's own ports, always refused): 488.
    pub forbidden: Vec<IpNet>,
    /// The AF_XDP fast path (read at start; `None`: sockets only).
    pub xdp: Option<XdpSettings>,
}

impl MediaPolicy {
    /// The address written into SDP sent to a peer at `peer` (its
    /// signalling address): of the peer's family when the relay has one,
    /// else `advertise`.
    pub fn advertise_for(&self, peer: IpAddr) -> IpAddr {
        let v4 = canonical(peer).is_ipv4();
        match self.advertise_other {
            Some(other) if other.is_ipv4() == v4 => other,
            _ => self.advertise,
        }
    }

    /// The relay reaches both families.
    pub fn dual_stack(&self) -> bool {
        self.bind_other.is_some() && self.advertise_other.is_some()
    }
}

/// Where and how the AF_XDP media path attaches (BRIEF §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpSettings {
    /// The network interface media arrives on.
    pub interface: String,
    pub mode: XdpMode,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver when it supports XDP, else generic.
    #[default]
    Auto,
    /// In the driver only (fails, and falls back to sockets, without
    /// driver support).
    Native,
    /// Generic (SKB) mode: any interface, less gain.
    Generic,
}

impl XdpMode {
    pub const ALL: [XdpMode; 3] = [XdpMode::Auto, XdpMode::Native, XdpMode::Generic];

    /// The name in the configuration file.
    pub fn label(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// How a dialled number is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberPattern {
    Exact(String),
    /// Written `PREFIX*`; `*` alone matches every number.
    Prefix(String),
}

impl NumberPattern {
    /// Specificity of a match: exact beats any prefix, longer prefix beats
    /// shorter. `None` when it does not match.
    fn score(&self, number: &str) -> Option<(u8, usize)> {
        match self {
            NumberPattern::Exact(n) => (n == number).then_some((2, n.len())),
            NumberPattern::Prefix(p) => number.starts_with(p.as_str()).then_some((1, p.len())),
        }
    }
}

/// One trunk a route may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub trunk: TrunkId,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among targets of equal priority.
    pub weight: u32,
}

/// Which outcomes of an attempt move the call to the next target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub on_timeout: bool,
    /// One bit per status code 0..=703.
    codes: [u64; 11],
}

impl Failover {
    pub fn none() -> Self {
        Failover {
            on_timeout: false,
            codes: [0; 11],
        }
    }

    /// The default of BRIEF §3: timeout, 408 and every 5xx.
    pub fn standard() -> Self {
        let mut f = Failover::none();
        f.on_timeout = true;
        f.add(408);
        for c in 500..=599 {
            f.add(c);
        }
        f
    }

    pub fn add(&mut self, code: u16) {
        let i = usize::from(code);
        if let Some(word) = self.codes.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    pub fn on_code(&self, code: u16) -> bool {
        let i = usize::from(code);
        self.codes
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// A routing entry: calls from `from` trunks (any, when empty) to a number
/// matching `numbers` go to `targets`.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub from: Vec<TrunkId>,
    pub numbers: Vec<NumberPattern>,
    /// Sorted by priority.
    pub targets: Vec<Target>,
    pub failover: Failover,
    /// A route to an extension (an inbound number): its registered
    /// accounts ring in parallel, and `targets` is empty.
    pub extension: Option<Arc<str>>,
}

/// Global source filter. A source on `deny` is dropped; when `allow` is
/// not empty, a source must be on it.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// How often sources that match no trunk are answered.
    pub strangers: StrangerAnswers,
}

/// Answers a second to sources that match no trunk (403, 400), per source
/// and for all of them together on one shard; the rest is dropped
/// silently. 0: never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrangerAnswers {
    pub per_source: u32,
    pub total: u32,
}

impl Default for StrangerAnswers {
    fn default() -> Self {
        StrangerAnswers {
            per_source: 2,
            total: 100,
        }
    }
}

impl Acl {
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// SBC-level call timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimers {
    /// No response at all from a trunk within this: try the next one.
    pub no_response: Duration,
    /// Ringing longer than this without an answer: give up (408).
    pub max_ringing: Duration,
    /// An answered call lasting this long is ended (BYE on both legs);
    /// `None`: no limit.
    pub max_duration: Option<Duration>,
    /// RFC 4028: the session interval (seconds) the SBC asks for on calls
    /// whose caller asked for none, and the most it lets a caller ask for;
    /// `None`: the ends' own choice.
    pub session_expires: Option<u32>,
    /// RFC 4028 §5: the shortest session interval (seconds) the SBC
    /// accepts (at least 90).
    pub min_se: u32,
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            no_response: Duration::from_secs(4),
            max_ringing: Duration::from_secs(180),
            max_duration: None,
            session_expires: None,
            min_se: 90,
        }
    }
}

/// One local SIP address: where it is bound and what goes into headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub transport: crate::net::Transport,
    pub bind: SocketAddr,
    /// Host (and port) written into Via, Contact and From.
    pub advertise: String,
}

impl Listener {
    /// Requests to `remote` over `transport` may leave from here: the same
    /// transport and address family.
    pub fn fits(&self, transport: crate::net::Transport, remote: SocketAddr) -> bool {
        self.transport == transport && self.bind.is_ipv4() == canonical(remote.ip()).is_ipv4()
    }
}

#[derive(Debug)]
pub struct Policy {
    /// Increases with every published snapshot.
    pub version: u64,
    /// Indexed by [`crate::net::LocalId`].
    pub listeners: Vec<Listener>,
    pub timers: TimerConfig,
    pub call_timers: CallTimers,
    pub acl: Acl,
    /// Indexed by [`TrunkId`].
    pub trunks: Vec<Trunk>,
    pub routes: Vec<Route>,
    /// Media relay; `None` passes SDP through unchanged for every call.
    pub media: Option<MediaPolicy>,
    /// Extensions, their accounts, and the registrar's settings.
    pub accounts: crate::registrar::Accounts,
    /// Limits across all shards.
    pub limits: Limits,
}

/// Limits that hold for the whole SBC, across shards and reloads.
#[derive(Debug, Default)]
pub struct Limits {
    /// The most calls open at once (admitted and not yet ended); `None`:
    /// only each shard's call table bounds them.
    pub max_calls: Option<u32>,
    /// Calls open now, shared by every shard and kept across reloads.
    pub open: Arc<crate::stats::OpenCalls>,
}

impl Policy {
    pub fn trunk(&self, id: TrunkId) -> Option<&Trunk> {
        self.trunks.get(usize::from(id.0))
    }

    /// The trunk a request from `ip` for Request-URI user `user` belongs
    /// to: among the trunks whose networks hold `ip`, the one the SBC
    /// registered to with `user` as its Contact user (two registrations
    /// with one provider share its addresses), else the most specific.
    pub fn trunk_for_request(
        &self,
        origin: &crate::net::Flow,
        user: Option<&[u8]>,
    ) -> Option<TrunkId> {
        if let Some(user) = user {
            let ip = canonical(origin.remote.ip());
            let by_contact = self.trunks.iter().position(|t| {
                t.registration.as_ref().is_some_and(|r| r.names(user))
                    && t.sources.iter().any(|n| n.contains(&ip))
            });
            if let Some(i) = by_contact {
                return Some(TrunkId(u16::try_from(i).unwrap_or(u16::MAX)));
            }
        }
        self.trunk_for_origin(origin)
    }

    /// The trunk whose sources hold `origin`'s address and that may send
    /// over its transport: who is trusted (exempt from the stranger and
    /// lockout limits) on that flow.
    pub fn trunk_on(&self, origin: &crate::net::Flow) -> Option<TrunkId> {
        self.trunk_for_origin(origin)
            .filter(|t| self.accepts_over(*t, origin.transport))
    }

    /// Whether `trunk` may send requests over `transport`: a trunk held to
    /// verified TLS (`tls_only`) only over TLS.
    pub fn accepts_over(&self, trunk: TrunkId, transport: crate::net::Transport) -> bool {
        self.trunk(trunk)
            .is_none_or(|t| !t.tls_only || transport == crate::net::Transport::Tls)
    }

    /// Where a trunk's requests go: its configured address (`None` for
    /// phones and trunks that register: where they registered from).
    pub fn fixed_address(&self, trunk: TrunkId) -> Option<SocketAddr> {
        self.trunk(trunk).filter(|t| !t.dynamic).map(|t| t.address)
    }

    /// Whether the peer of a leg on `trunk` is wherever it registered from
    /// (registered phones, trunks that register to the SBC) rather than a
    /// trunk's configured networks.
    pub fn reached_by_binding(&self, trunk: TrunkId) -> bool {
        trunk == PHONES || self.trunk(trunk).is_some_and(|t| t.dynamic)
    }

    /// Whether `ip` speaks for `trunk`: the trunk its address belongs to,
    /// or, for a trunk the SBC registers to, one of its networks (shared
    /// with another registration with the same provider).
    ///
    /// The port does not count here: within a dialog a peer may send from
    /// another port than its first request's, and trunks that share an
    /// address (told apart by `source_port`) each speak for it.
    pub fn is_source_of(&self, trunk: TrunkId, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let Some(t) = self.trunk(trunk) else {
            return false;
        };
        let own = t
            .sources
            .iter()
            .filter(|n| n.contains(&ip))
            .map(IpNet::prefix_len)
            .max();
        // A more specific network of another trunk takes the address, but
        // not one held to a source port: that trunk has only its port.
        let unported = self
            .trunks
            .iter()
            .filter(|t| t.source_port.is_none())
            .flat_map(|t| &t.sources)
            .filter(|n| n.contains(&ip))
            .map(IpNet::prefix_len)
            .max();
        match own {
            None => false,
            Some(_) if t.registration.is_some() => true,
            Some(len) => unported.is_none_or(|best| len >= best),
        }
    }

    /// The trunk a source address belongs to (most specific network wins;
    /// among trunks sharing it, the first).
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<TrunkId> {
        self.best_match(canonical(ip), None).map(|(_, id)| id)
    }

    /// The trunk a request that came on `origin` belongs to: the most
    /// specific network holding its address, and over UDP a trunk whose
    /// `source_port` is the request's source port before one without.
    ///
    /// Over TCP and TLS the source port says nothing: an address shared by
    /// trunks held to source ports is then no trunk's (which one it is
    /// cannot be told), rather than the first one's.
    pub fn trunk_for_origin(&self, origin: &crate::net::Flow) -> Option<TrunkId> {
        let ip = canonical(origin.remote.ip());
        if origin.transport == crate::net::Transport::Udp {
            return self
                .best_match(ip, Some(origin.remote.port()))
                .map(|(_, id)| id);
        }
        let ((len, _), id) = self.best_match(ip, None)?;
        let ported = |t: &&Trunk| {
            t.source_port.is_some()
                && t.sources
                    .iter()
                    .any(|n| n.contains(&ip) && n.prefix_len() == len)
        };
        let ambiguous = self.trunks.iter().filter(ported).nth(1).is_some();
        (!ambiguous).then_some(id)
    }

    /// The best trunk for `ip` and its rank (prefix length, port matched).
    /// With `port`, trunks held to another source port are left out.
    fn best_match(&self, ip: IpAddr, port: Option<u16>) -> Option<((u8, bool), TrunkId)> {
        let mut best: Option<((u8, bool), TrunkId)> = None;
        for (i, trunk) in self.trunks.iter().enumerate() {
            let by_port = match (port, trunk.source_port) {
                (Some(p), Some(own)) if p != own => continue,
                (Some(_), Some(_)) => true,
                _ => false,
            };
            for net in &trunk.sources {
                let rank = (net.prefix_len(), by_port);
                if net.contains(&ip) && best.is_none_or(|(r, _)| rank > r) {
                    best = Some((rank, TrunkId(u16::try_from(i).unwrap_or(u16::MAX))));
                }
            }
        }
        best
    }

    /// The most specific route for a call from `from` to `number`; ties go
    /// to the entry written first.
    pub fn route(&self, from: TrunkId, number: &str) -> Option<&Route> {
        let mut best: Option<((u8, usize), &Route)> = None;
        for route in &self.routes {
            if !route.from.is_empty() && !route.from.contains(&from) {
                continue;
            }
            let Some(score) = route.numbers.iter().filter_map(|p| p.score(number)).max() else {
                continue;
            };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, route));
            }
        }
        best.map(|(_, r)| r)
    }

    pub fn listener(&self, id: crate::net::LocalId) -> Option<&Listener> {
        self.listeners.get(usize::from(id.0))
    }

    /// The listener requests to `remote` over `transport` leave from: the
    /// first of that transport in `remote`'s address family, else the
    /// first of that transport, else the first listener.
    pub fn local_for(
        &self,
        transport: crate::net::Transport,
        remote: SocketAddr,
    ) -> crate::net::LocalId {
        let i = (self.listeners.iter())
            .position(|l| l.fits(transport, remote))
            .or_else(|| self.listeners.iter().position(|l| l.transport == transport))
            .unwrap_or(0);
        crate::net::LocalId(u16::try_from(i).unwrap_or(0))
    }

    /// The flow requests to `remote` over `transport` take: from the
    /// listener [`Policy::local_for`] picks, over whatever connection the
    /// I/O layer has (or opens) to it.
    pub fn flow_to(
        &self,
        transport: crate::net::Transport,
        remote: SocketAddr,
    ) -> crate::net::Flow {
        crate::net::Flow {
            transport,
            remote,
            local: self.local_for(transport, remote),
            conn: None,
        }
    }

    /// `flow` towards another target of the same peer (a Contact, a
    /// route): over a stream the connection is kept; over UDP, a target
    /// of the other address family leaves from a listener of its family.
    pub fn retarget(&self, flow: crate::net::Flow, remote: SocketAddr) -> crate::net::Flow {
        let next = flow.towards(remote);
        let fits = self
            .listener(next.local)
            .is_some_and(|l| l.fits(next.transport, remote));
        if next.conn.is_some() || fits {
            next
        } else {
            crate::net::Flow {
                local: self.local_for(next.transport, remote),
                ..next
            }
        }
    }

    /// The flow requests to `trunk` take: its transport and address.
    pub fn trunk_flow(&self, trunk: &Trunk) -> crate::net::Flow {
        self.flow_to(trunk.transport, trunk.address)
    }

    /// [`Policy::trunk_flow`], leaving from listener `prefer` (the one the
    /// call came in on) when it fits the trunk's transport and address
    /// family.
    pub fn trunk_flow_from(&self, trunk: &Trunk, prefer: crate::net::LocalId) -> crate::net::Flow {
        let mut flow = self.trunk_flow(trunk);
        if self
            .listener(prefer)
            .is_some_and(|l| l.fits(trunk.transport, trunk.address))
        {
            flow.local = prefer;
        }
        flow
    }
}

use crate::net::canonical;

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(name: &str, nets: &[&str]) -> Trunk {
        Trunk {
            name: name.into(),
            sources: nets.iter().map(|n| n.parse().unwrap()).collect(),
            source_port: None,
            address: "192.0.2.1:5060".parse().unwrap(),
            transport: crate::net::Transport::Udp,
            media: MediaMode::Anchor,
            codecs: None,
            strict_latch: false,
            probe: None,
            max_calls: None,
            max_cps: None,
            public: false,
            follow_contact: false,
            media_share: None,
            tls_only: false,
            registration: None,
            dynamic: false,
            stats: Arc::default(),
        }
    }

    fn policy() -> Policy {
        Policy {
            version: 1,
            listeners: vec![],
            timers: TimerConfig::default(),
            limits: Limits::default(),
            call_timers: CallTimers::default(),
            acl: Acl {
                allow: vec![],
                deny: vec!["10.66.0.0/16".parse().unwrap()],
                ..Acl::default()
            },
            trunks: vec![trunk("pbx", &["10.0.0.0/8"]), trunk("gw", &["10.1.2.3/32"])],
            routes: vec![
                Route {
                    name: "all".into(),
                    from: vec![TrunkId(0)],
                    numbers: vec![NumberPattern::Prefix(String::new())],
                    targets: vec![],
                    failover: Failover::standard(),
                    extension: None,
                },
                Route {
                    name: "italy".into(),
                    from: vec![],
                    numbers: vec![
                        NumberPattern::Prefix("+39".into()),
                        NumberPattern::Exact("112".into()),
                    ],
                    targets: vec![],
                    failover: Failover::none(),
                    extension: None,
                },
            ],
            media: None,
            accounts: Default::default(),
        }
    }

    #[test]
    fn requests_to_a_trunk_leave_from_a_listener_of_its_transport_and_family() {
        use crate::net::{LocalId, Transport};
        let listener = |transport, bind: &str| Listener {
            transport,
            bind: bind.parse().unwrap(),
            advertise: bind.into(),
        };
        let mut p = policy();
        p.listeners = vec![
            listener(Transport::Udp, "10.0.0.1:5060"),
            listener(Transport::Udp, "[2001:db8::1]:5060"),
            listener(Transport::Tcp, "10.0.0.1:5060"),
            listener(Transport::Udp, "192.0.2.100:5060"),
        ];
        let mut t = trunk("x", &["10.9.0.0/16"]);
        assert_eq!(p.trunk_flow(&t).local, LocalId(0));
        assert_eq!(p.trunk_flow_from(&t, LocalId(3)).local, LocalId(3));
        assert_eq!(p.trunk_flow_from(&t, LocalId(2)).local, LocalId(0), "TCP");
        assert_eq!(p.trunk_flow_from(&t, LocalId(1)).local, LocalId(0), "IPv6");
        t.transport = Transport::Tcp;
        let f = p.trunk_flow_from(&t, LocalId(0));
        assert_eq!(
            (f.local, f.transport, f.remote, f.conn),
            (LocalId(2), Transport::Tcp, t.address, None)
        );
        t.transport = Transport::Udp;
        t.address = "[2001:db8::9]:5060".parse().unwrap();
        assert_eq!(p.trunk_flow(&t).local, LocalId(1));
    }

    #[test]
    fn most_specific_source_network_wins() {
        let p = policy();
        assert_eq!(
            p.trunk_for_source("10.1.2.3".parse().unwrap()),
            Some(TrunkId(1))
        );
        assert_eq!(
            p.trunk_for_source("10.9.9.9".parse().unwrap()),
            Some(TrunkId(0))
        );
        assert_eq!(
            p.trunk_for_source("::ffff:10.9.9.9".parse().unwrap()),
            Some(TrunkId(0))
        );
        assert_eq!(p.trunk_for_source("192.0.2.9".parse().unwrap()), None);
    }

    fn registration(contact_user: &str) -> Arc<Registration> {
        Arc::new(Registration {
            registrar: "192.0.2.1:5060".parse().unwrap(),
            domain: "itsp.example".into(),
            user: contact_user.into(),
            auth_user: contact_user.into(),
            secret: "s3cret".into(),
            realm: None,
            contact_user: contact_user.into(),
            expires: Duration::from_secs(600),
            retry_min: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
        })
    }

    #[test]
    fn a_registrations_contact_user_picks_among_trunks_sharing_addresses() {
        let mut p = policy();
        let mut a = trunk("itsp-a", &["192.0.2.0/24"]);
        a.registration = Some(registration("acct-a"));
        let mut b = trunk("itsp-b", &["192.0.2.0/24"]);
        b.registration = Some(registration("acct-b"));
        p.trunks.extend([a, b]);
        let flow = |a: &str| crate::net::Flow::udp(a.parse().unwrap(), crate::net::LocalId(0));
        let ip = flow("192.0.2.7:5060");
        assert_eq!(p.trunk_for_request(&ip, Some(b"acct-b")), Some(TrunkId(3)));
        assert_eq!(p.trunk_for_request(&ip, Some(b"acct-a")), Some(TrunkId(2)));
        // Another user: the addresses decide.
        assert_eq!(p.trunk_for_request(&ip, Some(b"other")), Some(TrunkId(2)));
        // The contact user from elsewhere is no trunk's.
        let stranger = flow("198.51.100.1:5060");
        assert_eq!(p.trunk_for_request(&stranger, Some(b"acct-b")), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let r = registration("x");
        let waits: Vec<u64> = (1..=7).map(|n| r.backoff(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(r.backoff(u32::MAX).as_secs(), 300);
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn longest_match_route() {
        let p = policy();
        assert_eq!(&*p.route(TrunkId(0), "+39061234").unwrap().name, "italy");
        assert_eq!(&*p.route(TrunkId(0), "+44123").unwrap().name, "all");
        assert_eq!(&*p.route(TrunkId(1), "112").unwrap().name, "italy");
        assert!(p.route(TrunkId(1), "+44123").is_none());
    }

    #[test]
    fn acl_deny_and_allow() {
        let mut p = policy();
        assert!(!p.acl.permits("10.66.1.1".parse().unwrap()));
        assert!(p.acl.permits("10.67.1.1".parse().unwrap()));
        p.acl.allow = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(!p.acl.permits("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn failover_codes() {
        let mut f = Failover::standard();
        assert!(
            f.on_timeout && f.on_code(503) && f.on_code(408) && !f.on_code(486) && !f.on_code(603)
        );
        f.add(699);
        assert!(f.on_code(699));
    }
}
