//! The media relay settings: the `[media]` section and the media keys of a
//! trunk (`media`, `codecs`).
//!
//! Anchoring is the default (BRIEF: "anchoring is the default; bypass must
//! be asked for"): without `[media]`, the relay binds the IP of the first
//! `sip.listen` address and uses ports 30000-39999, so every configuration
//! resolves to a [`MediaPolicy`]. [`resolve`] fills in those defaults and
//! checks what depends on other sections (wildcard addresses, the port
//! range against the shard count).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sbc_core::media::PortPlan;
use sbc_core::net::is_multicast_or_broadcast;
use sbc_core::policy::{MediaMode, MediaPolicy, XdpMode, XdpSettings};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::error::Problem;
use super::file::ConfigFile;
use super::path::FieldPath;

/// The port range used without `[media]`.
pub const DEFAULT_PORTS: PortRange = PortRange {
    first: 30_000,
    last: 39_999,
};

/// Default of `media.timeout_s`.
pub const DEFAULT_TIMEOUT_S: u32 = 60;

/// Largest `media.timeout_s` accepted: one day.
pub const MAX_TIMEOUT_S: u32 = 86_400;

/// Lowest media port accepted: ports below are privileged.
pub const MIN_MEDIA_PORT: u16 = 1024;

/// An inclusive port range `FIRST-LAST`, with
/// `1024 <= FIRST < LAST <= 65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// The RTP/RTCP pairs the range holds: an even RTP port and the odd
    /// RTCP port above it (as [`PortPlan`] cuts it).
    pub fn pairs(self) -> u32 {
        let base = u32::from(self.first) + u32::from(self.first % 2);
        (u32::from(self.last) + 1).saturating_sub(base) / 2
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bounds = s.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
        });
        let Some((first, last)) = bounds.filter(|(first, last)| first < last) else {
            return Err(format!(
                "{s:?} is not a range FIRST-LAST with FIRST < LAST (like \"30000-39999\")"
            ));
        };
        match (u16::try_from(first), u16::try_from(last)) {
            (Ok(first), Ok(last)) if first >= MIN_MEDIA_PORT => Ok(PortRange { first, last }),
            _ => Err(format!(
                "{s:?} is outside {MIN_MEDIA_PORT}-65535: media ports must be unprivileged UDP ports"
            )),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `media.timeout_s`: 1 to [`MAX_TIMEOUT_S`] seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSecs(pub Duration);

impl TryFrom<i64> for TimeoutSecs {
    type Error = String;
    fn try_from(s: i64) -> Result<Self, String> {
        match u64::try_from(s) {
            Ok(v) if (1..=u64::from(MAX_TIMEOUT_S)).contains(&v) => {
                Ok(TimeoutSecs(Duration::from_secs(v)))
            }
            _ => Err(format!(
                "{s} is out of range: must be between 1 and {MAX_TIMEOUT_S} seconds"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TimeoutSecs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeoutSecs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of seconds")
            }
            fn visit_i64<E: de::Error>(self, s: i64) -> Result<TimeoutSecs, E> {
                TimeoutSecs::try_from(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, s: u64) -> Result<TimeoutSecs, E> {
                self.visit_i64(i64::try_from(s).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_i64(V)
    }
}

/// A trunk's `media`: `"anchor"` (the default) or `"bypass"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode(pub MediaMode);

const MODE_EXPECTED: &str = "\"anchor\" or \"bypass\"";

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(MODE_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Mode, E> {
                match s {
                    "anchor" => Ok(Mode(MediaMode::Anchor)),
                    "bypass" => Ok(Mode(MediaMode::Bypass)),
                    _ => Err(E::custom(format!("expected {MODE_EXPECTED}, found {s:?}"))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// A network interface name: 1 to 15 bytes (the kernel's limit), without
/// '/', ':' or whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct InterfaceName(pub String);

impl TryFrom<String> for InterfaceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = (1..=15).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':'));
        if ok {
            Ok(InterfaceName(s))
        } else {
            Err(format!(
                "{s:?} is not a network interface name: 1 to 15 characters, no '/', ':' or spaces (like \"eth0\")"
            ))
        }
    }
}

/// `media.xdp.mode`: `"auto"`, `"native"` or `"generic"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpModeValue(pub XdpMode);

const XDP_MODE_EXPECTED: &str = "\"auto\", \"native\" or \"generic\"";

impl<'de> Deserialize<'de> for XdpModeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = XdpModeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(XDP_MODE_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<XdpModeValue, E> {
                XdpMode::ALL
                    .into_iter()
                    .find(|m| m.label() == s)
                    .map(XdpModeValue)
                    .ok_or_else(|| E::custom(format!("expected {XDP_MODE_EXPECTED}, found {s:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// An SDP encoding name (`PCMA`, `telephone-event`, `G722`), stored
/// lowercase: the data plane compares lowercase names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Codec(pub String);

impl TryFrom<String> for Codec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Codec(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{s:?} is not a codec name: write the SDP encoding name, letters, digits, '.', '_' or '-' (like \"PCMA\" or \"telephone-event\")"
            ))
        }
    }
}

/// Checks a trunk's `codecs` list: not empty, each codec once.
pub fn check_codecs(codecs: &[Codec], path: &FieldPath) -> Result<(), Problem> {
    if codecs.is_empty() {
        return Err(Problem::new(
            path.clone(),
            "at least one codec is required; remove the key to allow every codec",
        ));
    }
    for (j, codec) in codecs.iter().enumerate() {
        if let Some(first) = codecs.iter().position(|c| c == codec).filter(|f| *f < j) {
            return Err(Problem::new(
                path.index(j),
                format!("{:?} is listed twice (first at codecs[{first}])", codec.0),
            ));
        }
    }
    Ok(())
}

/// The media settings with every default filled in. `shards` is the
/// resolved shard count: each shard needs at least one RTP/RTCP pair.
pub fn resolve(file: &ConfigFile, shards: usize) -> Result<MediaPolicy, Problem> {
    let path = FieldPath::root().key("media");
    let Some(media) = &file.media else {
        return defaults(file, &path);
    };
    let (bind, bind_other) = match media.listen.0.as_slice() {
        [one] => (*one, None),
        [first, second] if first.is_ipv4() != second.is_ipv4() => (*first, Some(*second)),
        [first, second] => {
            return Err(Problem::new(
                path.key("listen"),
                format!(
                    "{first} and {second} are of one family: give one address, or one IPv4 and one IPv6 address"
                ),
            ));
        }
        list => {
            return Err(Problem::new(
                path.key("listen"),
                format!(
                    "{} addresses given: give one, or one IPv4 and one IPv6 address",
                    list.len()
                ),
            ));
        }
    };
    for ip in [Some(bind), bind_other].into_iter().flatten() {
        if is_multicast_or_broadcast(ip) {
            return Err(Problem::new(
                path.key("listen"),
                format!(
                    "{ip} cannot be bound: give a local unicast address or a wildcard (0.0.0.0, ::)"
                ),
            ));
        }
    }
    let given = media.advertise.as_ref().map(|a| a.0.as_slice());
    let (advertise, advertise_other) = match (given, bind_other) {
        (Some([one]), None) => (*one, None),
        (Some([_]), Some(_)) => {
            return Err(Problem::new(
                path.key("advertise"),
                "media.listen has an IPv4 and an IPv6 address: give one advertised address for each",
            ));
        }
        (Some([first, second]), Some(_)) => {
            if first.is_ipv4() == second.is_ipv4() {
                return Err(Problem::new(
                    path.key("advertise"),
                    format!(
                        "{first} and {second} are of one family: give one IPv4 and one IPv6 address"
                    ),
                ));
            }
            // Each advertised address goes with the listen address of
            // its family.
            let (mine, theirs) = if first.is_ipv4() == bind.is_ipv4() {
                (*first, *second)
            } else {
                (*second, *first)
            };
            if theirs.is_unspecified() || is_multicast_or_broadcast(theirs) {
                return Err(Problem::new(
                    path.key("advertise"),
                    format!(
                        "{theirs} is not a unicast address: peers must be able to send media to it"
                    ),
                ));
            }
            (mine, Some(theirs))
        }
        (Some([_, _]), None) => {
            return Err(Problem::new(
                path.key("advertise"),
                "two addresses (one per family) need two media.listen addresses, an IPv4 and an IPv6 one",
            ));
        }
        (Some(list), _) => {
            return Err(Problem::new(
                path.key("advertise"),
                format!(
                    "{} addresses given: give one per media.listen address",
                    list.len()
                ),
            ));
        }
        (None, _) => {
            if let Some(wild) = [Some(bind), bind_other]
                .into_iter()
                .flatten()
                .find(IpAddr::is_unspecified)
            {
                return Err(Problem::new(
                    path.key("advertise"),
                    format!(
                        "required when media.listen is a wildcard address ({wild}): give the IP address peers send media to"
                    ),
                ));
            }
            (bind, bind_other)
        }
    };
    if advertise.is_unspecified() || is_multicast_or_broadcast(advertise) {
        return Err(Problem::new(
            path.key("advertise"),
            format!("{advertise} is not a unicast address: peers must be able to send media to it"),
        ));
    }
    let plan = u16::try_from(shards)
        .ok()
        .and_then(|n| PortPlan::new(media.ports.first, media.ports.last, n));
    if plan.is_none() {
        let pairs = media.ports.pairs();
        let need = match shards {
            1 => "1 shard needs at least 1".to_owned(),
            n => format!("{n} shards need at least {n}"),
        };
        let auto = if file.shards.count == 0 {
            " (shards.count = 0: one shard per CPU core)"
        } else {
            ""
        };
        return Err(Problem::new(
            path.key("ports"),
            format!(
                "{} holds {pairs} RTP/RTCP pair{}; {need}{auto}",
                media.ports,
                if pairs == 1 { "" } else { "s" }
            ),
        ));
    }
    let xdp = match &media.xdp {
        None => None,
        Some(x) => match bind {
            IpAddr::V4(v4) if !v4.is_unspecified() => Some(XdpSettings {
                interface: x.interface.0.clone(),
                mode: x.mode.0,
            }),
            _ => {
                return Err(Problem::new(
                    path.key("xdp"),
                    format!(
                        "the AF_XDP path needs media.listen to be a specific IPv4 address (it sends from it); found {bind}"
                    ),
                ));
            }
        },
    };
    Ok(MediaPolicy {
        bind,
        advertise,
        bind_other,
        advertise_other,
        first_port: media.ports.first,
        last_port: media.ports.last,
        timeout: media
            .timeout_s
            .map_or(Duration::from_secs(u64::from(DEFAULT_TIMEOUT_S)), |t| t.0),
        forbidden: media.forbidden_destinations.iter().map(|n| n.0).collect(),
        xdp,
    })
}

/// Without `[media]`: the IP of the first SIP listen address, advertised
/// as the first SIP advertise host when that is an IP address.
fn defaults(file: &ConfigFile, path: &FieldPath) -> Result<MediaPolicy, Problem> {
    let first = file.sip.listen.first().map(|a| a.0);
    let advertised = file.sip.advertise.as_ref().and_then(|a| a.first());
    // Validation requires at least one listen address; the fallback is
    // never used.
    let bind = first.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let advertise = advertised.and_then(|a| a.ip()).unwrap_or(bind);
    if advertise.is_unspecified() {
        let host = advertised.map_or(String::new(), |a| format!(" ({:?})", a.0));
        return Err(Problem::new(
            path.clone(),
            format!(
                "required here: media is anchored by default, and sip.listen[0] is a wildcard address while sip.advertise[0]{host} is not an IP address, so no address can be derived for SDP; add a [media] section with listen and advertise"
            ),
        ));
    }
    Ok(MediaPolicy {
        bind,
        advertise,
        bind_other: None,
        advertise_other: None,
        first_port: DEFAULT_PORTS.first,
        last_port: DEFAULT_PORTS.last,
        timeout: Duration::from_secs(u64::from(DEFAULT_TIMEOUT_S)),
        forbidden: Vec::new(),
        xdp: None,
    })
}

/// `listen 127.0.0.1, advertise 203.0.113.5, ports 30000-39999, timeout_s 60`
/// (and `, xdp eth0 auto` with the AF_XDP path).
pub fn media_summary(media: &MediaPolicy) -> String {
    let xdp = media.xdp.as_ref().map_or(String::new(), |x| {
        format!(", xdp {} {}", x.interface, x.mode.label())
    });
    let and = |other: Option<IpAddr>| other.map_or(String::new(), |a| format!(" and {a}"));
    format!(
        "listen {}{}, advertise {}{}, ports {}-{}, timeout_s {}{xdp}",
        media.bind,
        and(media.bind_other),
        media.advertise,
        and(media.advertise_other),
        media.first_port,
        media.last_port,
        media.timeout.as_secs()
    )
}
