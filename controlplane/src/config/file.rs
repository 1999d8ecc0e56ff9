//! The TOML schema, as written in the file. `config/sbc.toml` documents
//! every key; keep the two in step.

use serde::Deserialize;

use super::media::{Codec, InterfaceName, Mode, PortRange, TimeoutSecs, XdpModeValue};
use super::values::{
    Advertise, FailoverEntry, IpList, ListenAddress, Millis, Name, Network, Pattern, SocketAddress,
    TransportName,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub sip: Sip,
    #[serde(default)]
    pub shards: Shards,
    pub metrics: Option<Metrics>,
    /// Absent: media is still anchored, with defaults (`media.rs`).
    pub media: Option<Media>,
    #[serde(default)]
    pub acl: Acl,
    #[serde(default)]
    pub trunks: Vec<Trunk>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dids: Vec<Did>,
    /// The registrar's settings (`registrar.rs`).
    pub registrar: Option<super::registrar::Registrar>,
    #[serde(default)]
    pub extensions: Vec<super::registrar::Extension>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sip {
    /// Addresses the shards bind, each with its transport (UDP unless
    /// written `tcp:address`).
    pub listen: Vec<ListenAddress>,
    /// What goes into Via/Contact/From, one per listen address.
    pub advertise: Option<Vec<Advertise>>,
    /// The SBC's certificate for its `tls:` listeners (`[sip.tls]`).
    pub tls: Option<SipTls>,
    #[serde(default)]
    pub timers: Timers,
    /// The most calls open at once across all shards; absent: no limit
    /// beyond each shard's call table.
    pub max_calls: Option<u32>,
}

/// `[sip.tls]`: PEM files, relative to the configuration file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTls {
    /// The certificate chain, leaf first.
    pub certificate: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// A trunk's `tls = { ... }`: PEM files, relative to the configuration
/// file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkTls {
    /// The authority the trunk's certificate must chain to.
    pub ca: String,
    /// The name its certificate must carry when the SBC connects; absent:
    /// the IP address of `address`.
    pub server_name: Option<String>,
    /// The certificate (and `key`) the SBC presents to it: mutual TLS.
    pub certificate: Option<String>,
    pub key: Option<String>,
    /// The trunk's own TLS connections must present a certificate that
    /// chains to `ca` (default false).
    #[serde(default)]
    pub verify_client: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timers {
    pub t1_ms: Option<Millis>,
    pub t2_ms: Option<Millis>,
    pub t4_ms: Option<Millis>,
    pub no_response_ms: Option<Millis>,
    pub max_ringing_ms: Option<Millis>,
    /// Answered calls are ended after this many seconds; absent: no limit.
    pub max_call_duration_s: Option<u32>,
    /// RFC 4028 session interval the SBC asks for (and caps callers at);
    /// absent: the ends' own choice.
    pub session_expires_s: Option<u32>,
    /// RFC 4028 Min-SE: the shortest session interval accepted (>= 90).
    pub min_se_s: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shards {
    /// 0 = one per CPU core.
    #[serde(default)]
    pub count: usize,
    /// Pin each shard thread to a core (default true).
    #[serde(default)]
    pub pin_threads: Option<bool>,
    /// Wake-up coalescing in microseconds while a shard relays no media
    /// (0 = off; at most 10000).
    #[serde(default)]
    pub batch_wait_us: Option<u32>,
    /// Wake-up coalescing in microseconds while a shard relays media
    /// (0 = off; at most 10000; never more than `batch_wait_us`).
    #[serde(default)]
    pub media_batch_wait_us: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: SocketAddress,
}

/// Where media is relayed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// The IP the relay sockets bind; or two, an IPv4 and an IPv6
    /// address: a relay for both families (one socket per port each).
    pub listen: IpList,
    /// The IP written into SDP, one per `listen` address (the same
    /// family); default `listen`, required when `listen` is a wildcard.
    /// Each peer is sent the address of its own family.
    pub advertise: Option<IpList>,
    pub ports: PortRange,
    /// Absent: 60 s.
    pub timeout_s: Option<TimeoutSecs>,
    /// Networks SDP may not point media at (answered 488), e.g. the
    /// provider's management network or 169.254.0.0/16.
    #[serde(default)]
    pub forbidden_destinations: Vec<Network>,
    /// The AF_XDP fast path (`[media.xdp]`); absent: sockets only.
    pub xdp: Option<Xdp>,
}

/// `[media.xdp]`: where the AF_XDP media path attaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xdp {
    /// The interface media arrives on (e.g. "eth0").
    pub interface: InterfaceName,
    /// "auto" (default), "native" or "generic".
    #[serde(default)]
    pub mode: XdpModeValue,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    #[serde(default)]
    pub allow: Vec<Network>,
    #[serde(default)]
    pub deny: Vec<Network>,
    /// Answers a second to one source that matches no trunk (default 2;
    /// 0: never answered).
    pub stranger_answers_per_s: Option<u32>,
    /// Answers a second to all such sources together, per shard
    /// (default 100; 0: never answered).
    pub stranger_answers_total_per_s: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub name: Name,
    /// Requests from these networks are the trunk's (not with `host =
    /// "dynamic"`).
    #[serde(default)]
    pub sources: Vec<Network>,
    /// Over UDP, only requests from this source port start calls as the
    /// trunk's (trunks sharing an address are told apart by port).
    pub source_port: Option<u16>,
    /// Where its calls go (not with `host = "dynamic"`).
    pub address: Option<SocketAddress>,
    /// How requests reach it: UDP (the default), TCP or TLS.
    #[serde(default)]
    pub transport: TransportName,
    /// TLS settings: needed with `transport = "tls"` and for mutual TLS.
    pub tls: Option<TrunkTls>,
    /// `"dynamic"`: the trunk registers to the SBC with `username` and
    /// `secret`, and is reached where it registered from.
    pub host: Option<Dynamic>,
    pub username: Option<super::registrar::Username>,
    #[serde(alias = "password")]
    pub secret: Option<super::registrar::SecretText>,
    /// Anchor (the default) or bypass.
    #[serde(default)]
    pub media: Mode,
    /// Absent: every codec is allowed.
    pub codecs: Option<Vec<Codec>>,
    /// Accept this trunk's media only from the address and port its SDP
    /// gives (default false: learn where it really sends from, for NAT).
    #[serde(default)]
    pub strict_latch: bool,
    /// OPTIONS health probes; absent: not probed (always up).
    pub probe: Option<Probe>,
    /// Calls open with the trunk at once, per direction; absent: no limit.
    pub max_calls: Option<u32>,
    /// New calls a second from the trunk; absent: no limit.
    pub max_cps: Option<u32>,
    /// On the public internet: its SDP may not point media at private
    /// ranges outside its sources (default false).
    #[serde(default)]
    pub public: bool,
    /// A Contact or Record-Route outside the sources may move in-dialog
    /// requests there (default false).
    #[serde(default)]
    pub follow_contact: bool,
    /// The most of each shard's media ports calls may hold facing this
    /// trunk, in percent (absent: no limit but the pool).
    pub media_share: Option<u8>,
    /// The SBC registers itself to the trunk; absent: it does not.
    pub register: Option<super::upstream::Register>,
}

/// `host = "dynamic"` (the only value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dynamic {
    Dynamic,
}

/// A trunk's `probe = { interval_s = 30, down_after = 3, up_after = 2 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default = "probe_interval_s")]
    pub interval_s: u32,
    #[serde(default = "probe_down_after")]
    pub down_after: u32,
    #[serde(default = "probe_up_after")]
    pub up_after: u32,
}

fn probe_interval_s() -> u32 {
    30
}

fn probe_down_after() -> u32 {
    3
}

fn probe_up_after() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Name,
    #[serde(default)]
    pub from: Vec<Name>,
    pub numbers: Vec<Pattern>,
    pub targets: Vec<Target>,
    /// Absent: the standard set (timeout, 408, 5xx).
    pub failover: Option<Vec<FailoverEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub trunk: Name,
    #[serde(default = "one")]
    pub priority: u32,
    #[serde(default = "one")]
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Did {
    pub numbers: Vec<Pattern>,
    #[serde(default)]
    pub from: Vec<Name>,
    /// The destination: a trunk, or (`extension`) a registered extension.
    pub trunk: Option<Name>,
    pub extension: Option<super::registrar::ExtensionNumber>,
}

fn one() -> u32 {
    1
}
