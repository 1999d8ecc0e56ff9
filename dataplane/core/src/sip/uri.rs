//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed as slices.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::BufMut;

use super::scan::{Params, parse_decimal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// A syntactically valid scheme the SBC does not route (RFC 3261 §8.2.2.1: 416).
    Other,
}

/// A URI as slices of the message. For `tel:` the number is in `user` and
/// `host` is empty; for other schemes only `scheme_raw` is meaningful.
#[derive(Debug, Clone, Copy)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    pub scheme_raw: &'a [u8],
    pub user: Option<&'a [u8]>,
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// `;`-parameters, starting at the first `;` (or empty).
    pub params: &'a [u8],
    /// `?`-headers, without the `?` (or empty).
    pub headers: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("URI has no scheme")]
    NoScheme,
    #[error("URI contains white space, control or non-ASCII characters")]
    BadCharacter,
    #[error("URI has an invalid host")]
    BadHost,
    #[error("URI has an invalid port")]
    BadPort,
}

impl<'a> Uri<'a> {
    pub fn parse(s: &'a [u8]) -> Result<Self, UriError> {
        // RFC 3261 §25.1: a URI is ASCII; anything else is %-escaped. The
        // request line is held to the same rule, so a URI we accept (a
        // Contact that becomes a remote target) is one we can send.
        // Checked without an early exit, so the loop vectorises.
        if s.is_empty() || !s.iter().fold(true, |ok, b| ok & b.is_ascii_graphic()) {
            return Err(UriError::BadCharacter);
        }
        let (scheme, scheme_raw, rest) = scheme(s)?;
        match scheme {
            Scheme::Sip | Scheme::Sips => parse_sip(scheme, scheme_raw, rest),
            Scheme::Tel => {
                let end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
                if end == 0 {
                    return Err(UriError::BadHost);
                }
                Ok(Uri {
                    scheme,
                    scheme_raw,
                    user: Some(&rest[..end]),
                    host: b"",
                    port: None,
                    params: &rest[end..],
                    headers: b"",
                })
            }
            Scheme::Other => Ok(Uri {
                scheme,
                scheme_raw,
                user: None,
                host: b"",
                port: None,
                params: b"",
                headers: b"",
            }),
        }
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        Params::new(self.params).get(name)
    }

    /// The host as an IP address, if it is a literal (IPv6 in brackets).
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_ip(self.host)
    }

    /// Host and port as a socket address when the host is an IP literal.
    pub fn socket_addr(&self, default_port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            self.host_ip()?,
            self.port.unwrap_or(default_port),
        ))
    }
}

/// Parses an IP literal as it appears in a host (IPv6 in brackets).
pub fn host_ip(host: &[u8]) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix(b"[").and_then(|t| t.strip_suffix(b"]")) {
        let text = std::str::from_utf8(v6).ok()?;
        return text.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    crate::net::parse_ipv4(host).map(IpAddr::V4)
}

/// The scheme, as an enum and as written, and what follows its colon.
/// `sip:` and `sips:`, nearly every URI the SBC sees, are recognised
/// without the general scheme scan.
fn scheme(s: &[u8]) -> Result<(Scheme, &[u8], &[u8]), UriError> {
    if s.len() > 4 && s[..4].eq_ignore_ascii_case(b"sip:") {
        return Ok((Scheme::Sip, &s[..3], &s[4..]));
    }
    if s.len() > 5 && s[..5].eq_ignore_ascii_case(b"sips:") {
        return Ok((Scheme::Sips, &s[..4], &s[5..]));
    }
    let colon = super::scan::find_byte(b':', s).ok_or(UriError::NoScheme)?;
    let scheme_raw = &s[..colon];
    let scheme_ok = scheme_raw.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme_raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(UriError::NoScheme);
    }
    let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
        Scheme::Sip
    } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
        Scheme::Sips
    } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
        Scheme::Tel
    } else {
        Scheme::Other
    };
    Ok((scheme, scheme_raw, &s[colon + 1..]))
}

fn parse_sip<'a>(
    scheme: Scheme,
    scheme_raw: &'a [u8],
    rest: &'a [u8],
) -> Result<Uri<'a>, UriError> {
    let (user, hostpart) = match super::scan::find_byte(b'@', rest) {
        Some(at) => {
            let userinfo = &rest[..at];
            // user [":" password]; the password is never used.
            let user = match super::scan::find_byte(b':', userinfo) {
                Some(c) => &userinfo[..c],
                None => userinfo,
            };
            (Some(user), &rest[at + 1..])
        }
        None => (None, rest),
    };
    let (host, port, after) = hostport_prefix(hostpart)?;
    if !matches!(after.first(), None | Some(b';' | b'?')) {
        return Err(if port.is_some() {
            UriError::BadPort
        } else {
            UriError::BadHost
        });
    }
    let (params, headers) = match super::scan::find_byte(b'?', after) {
        Some(q) => (&after[..q], &after[q + 1..]),
        None => (after, &after[after.len()..]),
    };
    Ok(Uri {
        scheme,
        scheme_raw,
        user,
        host,
        port,
        params,
        headers,
    })
}

/// Host, port, and the rest of the input after them.
type HostPort<'a> = (&'a [u8], Option<u16>, &'a [u8]);

/// Reads `host [":" port]` from the start of `s` in one pass: the host
/// (an IPv6 reference in brackets, or a run of host-name bytes), the
/// port, and what follows them, unread.
fn hostport_prefix(s: &[u8]) -> Result<HostPort<'_>, UriError> {
    let host_end = if s.first() == Some(&b'[') {
        super::scan::find_byte(b']', s).ok_or(UriError::BadHost)? + 1
    } else {
        s.iter()
            .position(|b| !HOST[usize::from(*b)])
            .unwrap_or(s.len())
    };
    let host = &s[..host_end];
    // A name is valid as scanned; a reference must hold an IPv6 address.
    let valid = match host {
        [] => false,
        [b'[', ..] => host_ip(host).is_some(),
        _ => true,
    };
    if !valid {
        return Err(UriError::BadHost);
    }
    let rest = &s[host_end..];
    let Some((b':', digits)) = rest.split_first() else {
        return Ok((host, None, rest));
    };
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let port = parse_decimal(&digits[..end])
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(UriError::BadPort)?;
    Ok((host, Some(port), &digits[end..]))
}

/// Parses `host [":" port]` (RFC 3261 §25.1 hostport). Used by URIs and Via.
pub fn parse_hostport(s: &[u8]) -> Result<(&[u8], Option<u16>), UriError> {
    match hostport_prefix(s)? {
        (host, port, []) => Ok((host, port)),
        (_, Some(_), _) => Err(UriError::BadPort),
        (_, None, _) => Err(UriError::BadHost),
    }
}

/// Bytes of a host name or IPv4 literal.
static HOST: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
        i += 1;
    }
    t
};

/// Writes a dialled number as the user part of a SIP URI, escaping every
/// octet outside RFC 3261 §25.1 `user` (unreserved / user-unreserved), so
/// nothing the caller sent can change the URI's structure.
pub fn escape_user(number: &[u8], out: &mut impl BufMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in number {
        let plain = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b','
                    | b';'
                    | b'?'
                    | b'/'
            );
        if plain {
            out.put_u8(b);
        } else {
            out.put_u8(b'%');
            out.put_u8(HEX[usize::from(b >> 4)]);
            out.put_u8(HEX[usize::from(b & 0xf)]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dialled_numbers_cannot_change_the_uri() {
        let mut out = bytes::BytesMut::new();
        super::escape_user(b"1234@evil.example>:x", &mut out);
        assert_eq!(&out[..], b"1234%40evil.example%3E%3Ax");
        let mut out = bytes::BytesMut::new();
        super::escape_user(b"+39-06 1", &mut out);
        assert_eq!(&out[..], b"+39-06%201");
    }

    use super::*;

    #[test]
    fn sip_uri_with_user_params_and_headers() {
        let u =
            Uri::parse(b"sip:alice:secret@[2001:db8::10]:5070;transport=udp;lr?Subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param(b"transport"), Some(Some(&b"udp"[..])));
        assert_eq!(u.param(b"lr"), Some(None));
        assert_eq!(u.headers, b"Subject=x");
        assert_eq!(
            u.socket_addr(5060),
            Some("[2001:db8::10]:5070".parse().unwrap())
        );
    }

    #[test]
    fn semicolon_in_user_part() {
        // RFC 4475 §3.1.1.9: ';' may appear in the user part.
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
    }

    #[test]
    fn tel_and_unknown_schemes() {
        let t = Uri::parse(b"tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(t.scheme, Scheme::Tel);
        assert_eq!(t.user, Some(&b"+1-201-555-0123"[..]));
        let o = Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(o.scheme, Scheme::Other);
    }

    /// The hostport parse the one-pass scan replaced (split at the first
    /// `;` or `?` after any IPv6 reference, then host and port), as the
    /// reference.
    fn hostport_reference(s: &[u8]) -> Result<HostPort<'_>, UriError> {
        let search_from = if s.first() == Some(&b'[') {
            s.iter().position(|b| *b == b']').ok_or(UriError::BadHost)?
        } else {
            0
        };
        let end = s[search_from..]
            .iter()
            .position(|b| matches!(b, b';' | b'?'))
            .map_or(s.len(), |p| p + search_from);
        let (hostport, after) = (&s[..end], &s[end..]);
        let (host, port) = if hostport.first() == Some(&b'[') {
            let close = hostport
                .iter()
                .position(|b| *b == b']')
                .ok_or(UriError::BadHost)?;
            match &hostport[close + 1..] {
                [] => (&hostport[..=close], None),
                [b':', port @ ..] => (&hostport[..=close], Some(port)),
                _ => return Err(UriError::BadHost),
            }
        } else {
            match hostport.iter().position(|b| *b == b':') {
                Some(c) => (&hostport[..c], Some(&hostport[c + 1..])),
                None => (hostport, None),
            }
        };
        if !valid_host(host) {
            return Err(UriError::BadHost);
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                parse_decimal(p)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or(UriError::BadPort)?,
            ),
        };
        Ok((host, port, after))
    }

    fn valid_host(host: &[u8]) -> bool {
        match host {
            [] => false,
            [b'[', .., b']'] => host_ip(host).is_some(),
            // Checked without an early exit, so the loop vectorises.
            _ => host.iter().fold(true, |ok, b| ok & HOST[usize::from(*b)]),
        }
    }

    proptest::proptest! {
        #[test]
        fn one_pass_hostport_agrees_with_the_split_parse(
            s in proptest::collection::vec(
                proptest::sample::select(b"ab1.:;?[]@-0f9x!%=".to_vec()),
                0..24,
            ),
        ) {
            let rest = [b"a@".as_slice(), &s].concat();
            let uri = [b"sip:".as_slice(), &rest].concat();
            let new = Uri::parse(&uri).map(|u| (u.host, u.port, u.params, u.headers));
            let old = hostport_reference(&rest[2..]).map(|(host, port, after)| {
                let (params, headers) = match after.iter().position(|b| *b == b'?') {
                    Some(q) => (&after[..q], &after[q + 1..]),
                    None => (after, &after[after.len()..]),
                };
                (host, port, params, headers)
            });
            // The user part ends at the first '@', the one put first.
            proptest::prop_assert_eq!(new, old);
            let sent_by = s.iter().position(|b| *b == b';').map_or(&s[..], |e| &s[..e]);
            proptest::prop_assert_eq!(
                parse_hostport(sent_by),
                hostport_reference(sent_by).and_then(|(h, p, after)| match after {
                    [] => Ok((h, p)),
                    // The reference split only at ';' and '?'; a '?' left
                    // over belongs to no host or port.
                    _ => Err(if p.is_some() { UriError::BadPort } else { UriError::BadHost }),
                })
            );
        }
    }

    #[test]
    fn rejects_bad_uris() {
        assert_eq!(
            Uri::parse(b"sip:a b@c").unwrap_err(),
            UriError::BadCharacter
        );
        assert_eq!(Uri::parse(b"nocolon").unwrap_err(), UriError::NoScheme);
        assert_eq!(
            Uri::parse(b"sip:a@host:99999").unwrap_err(),
            UriError::BadPort
        );
        assert_eq!(Uri::parse(b"sip:a@").unwrap_err(), UriError::BadHost);
        assert_eq!(Uri::parse(b"sip:a@[::1").unwrap_err(), UriError::BadHost);
    }
}
