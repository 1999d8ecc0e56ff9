//! Single configuration values, parsed while the file is read: once a
//! value of one of these types exists, it is valid on its own. Checks that
//! involve several fields live in `validate.rs`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use sbc_core::policy::NumberPattern;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// An IP address and port: `192.0.2.1:5060`, `[2001:db8::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SocketAddress(pub SocketAddr);

impl TryFrom<String> for SocketAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.trim().parse().map(SocketAddress).map_err(|_| {
            format!("{s:?} is not an IP address and port (like \"192.0.2.1:5060\" or \"[2001:db8::1]:5060\")")
        })
    }
}

/// A SIP listen address: `192.0.2.1:5060` (UDP), or with the transport
/// in front, `udp:192.0.2.1:5060`, `tcp:[2001:db8::1]:5060`,
/// `tls:192.0.2.1:5061`, `ws:192.0.2.1:8080`, `wss:192.0.2.1:8443`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddress(pub SocketAddr, pub sbc_core::net::Transport);

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            sbc_core::net::Transport::Udp => write!(f, "{}", self.0),
            t => write!(f, "{}:{}", t.name(), self.0),
        }
    }
}

impl TryFrom<String> for ListenAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use sbc_core::net::Transport;
        let text = s.trim();
        let (transport, addr) = match text.split_once(':') {
            Some((scheme, rest)) if scheme.chars().all(|c| c.is_ascii_alphabetic()) => {
                match Transport::from_token(scheme.as_bytes()) {
                    Some(t) => (t, rest),
                    None => {
                        return Err(format!(
                            "{s:?}: unknown transport {scheme:?}; use udp, tcp, tls, ws or wss (like \"tcp:192.0.2.1:5060\")"
                        ));
                    }
                }
            }
            _ => (Transport::Udp, text),
        };
        addr.parse().map(|a| ListenAddress(a, transport)).map_err(|_| {
            format!("{s:?} is not an IP address and port, optionally after a transport (like \"192.0.2.1:5060\", \"tcp:192.0.2.1:5060\" or \"[2001:db8::1]:5060\")")
        })
    }
}

/// A trunk's transport: `"udp"` (the default), `"tcp"` or `"tls"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct TransportName(pub sbc_core::net::Transport);

impl TryFrom<String> for TransportName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use sbc_core::net::Transport;
        match Transport::from_token(s.trim().as_bytes()) {
            Some(t @ (Transport::Udp | Transport::Tcp | Transport::Tls)) => Ok(TransportName(t)),
            Some(t) => Err(format!(
                "{s:?}: trunks are not reached over {} (phones connect with it); use \"udp\", \"tcp\" or \"tls\"",
                t.token()
            )),
            None => Err(format!(
                "{s:?} is not a transport; use \"udp\", \"tcp\" or \"tls\""
            )),
        }
    }
}

/// Any SIP transport by name: `"udp"`, `"tcp"`, `"tls"`, `"ws"`, `"wss"`
/// (an account's `transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AnyTransport(pub sbc_core::net::Transport);

impl TryFrom<String> for AnyTransport {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        sbc_core::net::Transport::from_token(s.trim().as_bytes())
            .map(AnyTransport)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a transport; use \"udp\", \"tcp\", \"tls\", \"ws\" or \"wss\""
                )
            })
    }
}

/// An IP address without a port: `192.0.2.1`, `2001:db8::1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IpAddress(pub IpAddr);

impl TryFrom<String> for IpAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.trim().parse().map(IpAddress).map_err(|_| {
            format!("{s:?} is not an IP address (like \"192.0.2.1\" or \"2001:db8::1\"; no port)")
        })
    }
}

/// A host address or a CIDR network: `192.0.2.1`, `10.0.0.0/8`, `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network(pub IpNet);

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let text = s.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => text
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("{s:?} is not an IP address or CIDR network (like \"192.0.2.1\" or \"10.0.0.0/8\")"))?,
        };
        if let IpNet::V6(v6) = net
            && let Some(v4) = v6.addr().to_ipv4_mapped()
        {
            return Err(format!(
                "{s:?} is an IPv4-mapped IPv6 address: write it as IPv4 ({v4})"
            ));
        }
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set: the network is {}",
                net.trunc()
            ));
        }
        Ok(Network(net))
    }
}

/// The longest name accepted for a trunk or a route.
pub const MAX_NAME_LEN: usize = 64;

/// A trunk or route name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(pub String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Name(s))
        } else {
            Err(format!(
                "{s:?} is not a valid name: use 1 to {MAX_NAME_LEN} letters, digits, '_', '.' or '-'"
            ))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the SBC writes into Via, Contact and From for a listen address:
/// `host` or `host:port`, where host is a DNS name, an IPv4 address or a
/// bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Advertise(pub String);

impl TryFrom<String> for Advertise {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if is_host_port(&s) {
            Ok(Advertise(s))
        } else {
            Err(format!(
                "{s:?} is not a host or host:port (like \"sbc.example.com:5060\" or \"[2001:db8::1]:5060\")"
            ))
        }
    }
}

impl Advertise {
    /// The host, when it is an IP address: `192.0.2.1` for
    /// `192.0.2.1:5060`, `2001:db8::1` for `[2001:db8::1]:5060`; `None`
    /// for a DNS name.
    pub fn ip(&self) -> Option<IpAddr> {
        let host = match self.0.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(v6, _)| v6),
            None => self.0.rsplit_once(':').map_or(self.0.as_str(), |(h, _)| h),
        };
        host.parse().ok()
    }
}

fn is_host_port(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port_ok =
        port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0) && !p.starts_with('+'));
    let host_ok = s.starts_with('[') || is_dns_name(host);
    port_ok && host_ok
}

/// A DNS name or IPv4 address: dot-separated labels of letters, digits and
/// inner hyphens.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A dialled-number pattern: `*` (any), `PREFIX*`, or an exact number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern(pub NumberPattern);

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{s:?} is not a number pattern: write \"*\" (any), \"PREFIX*\" or an exact number, without spaces"
            ));
        }
        Ok(Pattern(match s.strip_suffix('*') {
            Some(prefix) => NumberPattern::Prefix(prefix.to_owned()),
            None => NumberPattern::Exact(s),
        }))
    }
}

/// One outcome that moves a call to the next target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverEntry {
    /// No response at all from the trunk.
    Timeout,
    /// One final status code, 300..=699.
    Code(u16),
    /// Every code of a class: 3 = `3xx` .. 6 = `6xx`.
    Class(u8),
}

impl FailoverEntry {
    /// The status codes this entry covers; `None` for [`FailoverEntry::Timeout`].
    pub fn codes(self) -> Option<std::ops::RangeInclusive<u16>> {
        match self {
            FailoverEntry::Timeout => None,
            FailoverEntry::Code(c) => Some(c..=c),
            FailoverEntry::Class(k) => Some(u16::from(k) * 100..=u16::from(k) * 100 + 99),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s == "timeout" {
            return Some(FailoverEntry::Timeout);
        }
        if let Some(class) = s.strip_suffix("xx").filter(|c| c.len() == 1) {
            return class
                .parse::<u8>()
                .ok()
                .filter(|k| (3..=6).contains(k))
                .map(FailoverEntry::Class);
        }
        if s.len() != 3 {
            return None;
        }
        s.parse::<u16>()
            .ok()
            .filter(|c| (300..=699).contains(c))
            .map(FailoverEntry::Code)
    }
}

const FAILOVER_EXPECTED: &str = "\"timeout\", a status code 300-699 or a class \"3xx\" to \"6xx\"";

impl<'de> Deserialize<'de> for FailoverEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FailoverEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(FAILOVER_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FailoverEntry, E> {
                FailoverEntry::parse(s)
                    .ok_or_else(|| E::custom(format!("{s:?} is not {FAILOVER_EXPECTED}")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FailoverEntry, E> {
                u16::try_from(n)
                    .ok()
                    .filter(|c| (300..=699).contains(c))
                    .map(FailoverEntry::Code)
                    .ok_or_else(|| E::custom(format!("{n} is not {FAILOVER_EXPECTED}")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FailoverEntry, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// The longest timer accepted: one day.
pub const MAX_MILLIS: i64 = 86_400_000;

/// A positive duration in milliseconds, at most [`MAX_MILLIS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub Duration);

impl TryFrom<i64> for Millis {
    type Error = String;
    fn try_from(ms: i64) -> Result<Self, String> {
        match u64::try_from(ms) {
            Ok(v) if (1..=MAX_MILLIS).contains(&ms) => Ok(Millis(Duration::from_millis(v))),
            _ => Err(format!(
                "{ms} is out of range: must be between 1 and {MAX_MILLIS} milliseconds"
            )),
        }
    }
}

/// One IP address (`"203.0.113.5"`) or a list of them
/// (`["203.0.113.5", "2001:db8::5"]`): `media.listen`, `media.advertise`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList(pub Vec<IpAddr>);

impl<'de> Deserialize<'de> for IpList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IpList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address, or a list of an IPv4 and an IPv6 address")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IpList, E> {
                IpAddress::try_from(s.to_owned())
                    .map(|a| IpList(vec![a.0]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<IpList, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<IpAddress>()? {
                    all.push(a.0);
                }
                Ok(IpList(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of milliseconds")
            }
            fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Millis, E> {
                Millis::try_from(ms).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Millis, E> {
                self.visit_i64(i64::try_from(ms).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_i64(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_accept_hosts_and_cidrs_and_refuse_host_bits() {
        assert_eq!(
            Network::try_from("10.0.0.1".to_owned())
                .unwrap()
                .0
                .to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            Network::try_from("2001:db8::/32".to_owned())
                .unwrap()
                .0
                .to_string(),
            "2001:db8::/32"
        );
        let err = Network::try_from("10.0.0.1/8".to_owned()).unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
        assert!(
            Network::try_from("::ffff:10.0.0.1".to_owned())
                .unwrap_err()
                .contains("10.0.0.1")
        );
    }

    #[test]
    fn advertise_accepts_names_and_addresses_only() {
        for ok in [
            "sbc.example.com",
            "sbc.example.com:5060",
            "192.0.2.1:5080",
            "[2001:db8::1]:5060",
            "[::1]",
        ] {
            assert!(Advertise::try_from(ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sbc example",
            "sbc.example.com:0",
            "host:99999",
            "a;b",
            "[::1",
            "[nope]:5060",
            "-a.com",
        ] {
            assert!(Advertise::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn advertise_host_is_an_ip_only_when_written_as_one() {
        let ip = |s: &str| Advertise::try_from(s.to_owned()).unwrap().ip();
        assert_eq!(ip("192.0.2.1"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(ip("192.0.2.1:5080"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            ip("[2001:db8::1]:5060"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip("sbc.example.com:5060"), None);
        assert_eq!(ip("sbc.example.com"), None);
    }

    #[test]
    fn ip_addresses_refuse_ports_and_names() {
        assert_eq!(
            IpAddress::try_from(" 2001:db8::1 ".to_owned()).unwrap().0,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        for bad in ["127.0.0.1:5060", "localhost", "", "10.0.0.0/8"] {
            let err = IpAddress::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains("is not an IP address"), "{err}");
        }
    }

    #[test]
    fn patterns_and_failover_entries() {
        assert_eq!(
            Pattern::try_from("*".to_owned()).unwrap().0,
            NumberPattern::Prefix(String::new())
        );
        assert_eq!(
            Pattern::try_from("+39*".to_owned()).unwrap().0,
            NumberPattern::Prefix("+39".into())
        );
        assert_eq!(
            Pattern::try_from("112".to_owned()).unwrap().0,
            NumberPattern::Exact("112".into())
        );
        assert!(Pattern::try_from("1 2".to_owned()).is_err());
        assert_eq!(FailoverEntry::parse("5xx"), Some(FailoverEntry::Class(5)));
        assert_eq!(FailoverEntry::parse("408"), Some(FailoverEntry::Code(408)));
        for bad in ["2xx", "7xx", "200", "700", "0408", "Timeout", "xx"] {
            assert_eq!(FailoverEntry::parse(bad), None, "{bad}");
        }
        assert_eq!(FailoverEntry::Class(6).codes(), Some(600..=699));
        assert_eq!(FailoverEntry::Code(408).codes(), Some(408..=408));
        assert_eq!(FailoverEntry::Timeout.codes(), None);
    }
}
