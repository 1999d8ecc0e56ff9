//! The Via header (RFC 3261 §8.1.1.7, §18.2.2, §20.42; RFC 3581 rport).

use super::scan::{CommaList, Params, is_lws, is_token, trim_start};
use super::uri::parse_hostport;

/// RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this cookie.
pub const BRANCH_COOKIE: &[u8] = b"z9hG4bK";

/// One Via value (a header line may hold several, comma-separated).
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    /// Transport token, e.g. `UDP` (case preserved).
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// Parameters starting at the first `;` (or empty).
    pub params: &'a [u8],
    /// `branch`, `rport` and `received` as found when parsed (the first
    /// of each; transaction matching and response routing ask for them
    /// several times per message).
    branch: Option<Option<&'a [u8]>>,
    rport: Option<Option<&'a [u8]>>,
    received: Option<Option<&'a [u8]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Via")]
pub struct ViaError;

impl<'a> Via<'a> {
    /// Parses `SIP / 2.0 / transport sent-by *(; via-params)`, with LWS
    /// allowed around the slashes (RFC 3261 §25.1 SLASH = SWS "/" SWS).
    pub fn parse(value: &'a [u8]) -> Result<Self, ViaError> {
        // Nearly every Via is written `SIP/2.0/` with no white space: one
        // comparison; otherwise each part is read on its own.
        let rest = match value {
            [a, b, c, b'/', b'2', b'.', b'0', b'/', rest @ ..]
                if [*a, *b, *c].eq_ignore_ascii_case(b"SIP") =>
            {
                rest
            }
            _ => {
                let (name, rest) = token(value)?;
                if !name.eq_ignore_ascii_case(b"SIP") {
                    return Err(ViaError);
                }
                let rest = slash(rest)?;
                let (version, rest) = token(rest)?;
                if version != b"2.0" {
                    return Err(ViaError);
                }
                slash(rest)?
            }
        };
        let (transport, rest) = token(rest)?;
        let rest = trim_start(rest);
        let end = rest
            .iter()
            .position(|b| *b == b';' || is_lws(*b))
            .unwrap_or(rest.len());
        let (host, port) = parse_hostport(&rest[..end]).map_err(|_| ViaError)?;
        let params = trim_start(&rest[end..]);
        if !params.is_empty() && params[0] != b';' {
            return Err(ViaError);
        }
        // Every parameter must be well formed: a token name and a token,
        // host or quoted value.
        let (mut branch, mut rport, mut received) = (None, None, None);
        for (name, value) in Params::new(params) {
            let mut other = None;
            let slot = if name.eq_ignore_ascii_case(b"branch") {
                &mut branch
            } else if name.eq_ignore_ascii_case(b"rport") {
                &mut rport
            } else if name.eq_ignore_ascii_case(b"received") {
                &mut received
            } else {
                &mut other
            };
            if slot.is_none() {
                *slot = Some(value);
            }
            if !name.iter().all(|b| is_token(*b)) {
                return Err(ViaError);
            }
            if let Some(v) = value {
                let ok = v.first() == Some(&b'"') || v.iter().all(|b| PARAM_VALUE[usize::from(*b)]);
                if !ok || v.is_empty() {
                    return Err(ViaError);
                }
            }
        }
        Ok(Via {
            transport,
            host,
            port,
            params,
            branch,
            rport,
            received,
        })
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        Params::new(self.params).get(name)
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch.flatten()
    }

    /// True when the branch carries the RFC 3261 magic cookie and something
    /// after it (RFC 4475 §3.2.1: a bare cookie is not a valid transaction id).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > BRANCH_COOKIE.len() && b.starts_with(BRANCH_COOKIE))
    }

    /// RFC 3581: `Some(None)` for a bare `rport`, `Some(Some(p))` when filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport
            .map(|v| v.and_then(|p| std::str::from_utf8(p).ok()?.parse().ok()))
    }

    pub fn received(&self) -> Option<&'a [u8]> {
        self.received.flatten()
    }
}

/// Iterates every Via value of a message, across header lines and commas.
pub fn split_values(value: &[u8]) -> CommaList<'_> {
    CommaList::new(value)
}

/// Bytes of an unquoted Via parameter value: a token, a host (with the
/// `:` and brackets of an IPv6 reference).
static PARAM_VALUE: [bool; 256] = {
    let mut t = super::scan::token_table();
    t[b':' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t
};

fn token(s: &[u8]) -> Result<(&[u8], &[u8]), ViaError> {
    let s = trim_start(s);
    let end = s.iter().position(|b| !is_token(*b)).unwrap_or(s.len());
    if end == 0 {
        return Err(ViaError);
    }
    Ok((&s[..end], &s[end..]))
}

fn slash(s: &[u8]) -> Result<&[u8], ViaError> {
    match trim_start(s).split_first() {
        Some((b'/', rest)) => Ok(rest),
        _ => Err(ViaError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_read_alike_written_tight_or_spaced() {
        for ok in [
            &b"SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1"[..],
            b"sip/2.0/udp 192.0.2.2;branch=z9hG4bK1",
            b"SiP /2.0/ TCP 192.0.2.2;branch=z9hG4bK1",
        ] {
            let v = Via::parse(ok).unwrap();
            assert_eq!(v.host, b"192.0.2.2");
            assert_eq!(v.branch(), Some(&b"z9hG4bK1"[..]));
        }
        for bad in [
            &b"SIP/2.1/UDP 192.0.2.2"[..],
            b"SIPS/2.0/UDP 192.0.2.2",
            b"SIX/2.0/UDP 192.0.2.2",
            b"SIP/2.0/ 192.0.2.2",
            b"SIP/2.0/UDP",
            b"SIP/2.0/UDP 192.0.2.2;branch=a\"b",
            b"SIP/2.0/UDP 192.0.2.2;received=[2001:db8::1];branch=a{b",
        ] {
            assert!(Via::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::2]:5060;received=[2001:db8::1];rport=5062")
            .unwrap();
        assert_eq!(v.rport(), Some(Some(5062)));
    }

    #[test]
    fn via_with_lws_around_slashes() {
        // RFC 4475 §3.1.1.1 (wsinv): LWS is allowed around the slashes.
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        assert!(!v.has_rfc3261_branch());
    }

    #[test]
    fn via_with_ipv6_rport_and_received() {
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;rport;received=[2001:db8::9:255]",
        )
        .unwrap();
        assert_eq!(v.host, b"[2001:db8::9:1]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some(&b"[2001:db8::9:255]"[..]));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn bare_cookie_is_not_a_transaction_id() {
        let v = Via::parse(b"SIP/2.0/UDP host1.example.com;branch=z9hG4bK").unwrap();
        assert!(!v.has_rfc3261_branch());
    }

    #[test]
    fn malformed_vias() {
        assert!(Via::parse(b";").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
        assert!(Via::parse(b"SIP/3.0/UDP host").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP host junk").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP host;branch=").is_err());
    }
}
