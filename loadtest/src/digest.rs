//! HTTP digest authentication (RFC 2617 / RFC 3261 §22, MD5) for the
//! `[authentication]` keyword: answers the challenge of the last 401 or 407.

use md5::{Digest, Md5};

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
    pub opaque: Option<Vec<u8>>,
    /// `qop` offered includes `auth`.
    pub qop_auth: bool,
    pub algorithm: Option<Vec<u8>>,
}

impl Challenge {
    /// Parses `Digest realm="...", nonce="...", ...`; `None` for other
    /// schemes or when realm or nonce is missing.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        let (scheme, rest) = split_at_ws(value);
        if !scheme.eq_ignore_ascii_case(b"Digest") {
            return None;
        }
        let mut c = Challenge::default();
        let mut have_realm = false;
        let mut have_nonce = false;
        for (name, v) in params(rest) {
            match name.to_ascii_lowercase().as_slice() {
                b"realm" => {
                    c.realm = v;
                    have_realm = true;
                }
                b"nonce" => {
                    c.nonce = v;
                    have_nonce = true;
                }
                b"opaque" => c.opaque = Some(v),
                b"qop" => {
                    c.qop_auth = v
                        .split(|&b| b == b',')
                        .any(|q| q.trim_ascii().eq_ignore_ascii_case(b"auth"));
                }
                b"algorithm" => c.algorithm = Some(v),
                _ => {}
            }
        }
        (have_realm && have_nonce).then_some(c)
    }

    /// Whether sbc-load can answer it (MD5 only).
    pub fn supported(&self) -> bool {
        self.algorithm
            .as_deref()
            .is_none_or(|a| a.eq_ignore_ascii_case(b"MD5"))
    }
}

fn hex(d: &[u8]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in d.iter().take(16).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

fn md5_hex(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    hex(&h.finalize())
}

/// The credentials value (after `Authorization: `) answering `c` for a
/// request `method uri`. `cnonce` is used when the challenge offers
/// `qop=auth` (nonce count 1).
pub fn credentials(
    c: &Challenge,
    method: &[u8],
    uri: &[u8],
    username: &[u8],
    password: &[u8],
    cnonce: &[u8],
    out: &mut Vec<u8>,
) {
    let ha1 = md5_hex(&[username, &c.realm, password]);
    let ha2 = md5_hex(&[method, uri]);
    let response = if c.qop_auth {
        md5_hex(&[&ha1, &c.nonce, b"00000001", cnonce, b"auth", &ha2])
    } else {
        md5_hex(&[&ha1, &c.nonce, &ha2])
    };
    fn q(out: &mut Vec<u8>, name: &str, v: &[u8]) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\", ");
    }
    out.extend_from_slice(b"Digest ");
    q(out, "username", username);
    q(out, "realm", &c.realm);
    q(out, "nonce", &c.nonce);
    q(out, "uri", uri);
    q(out, "response", &response);
    if let Some(o) = &c.opaque {
        q(out, "opaque", o);
    }
    if c.qop_auth {
        q(out, "cnonce", cnonce);
        out.extend_from_slice(b"qop=auth, nc=00000001, ");
    }
    out.extend_from_slice(b"algorithm=MD5");
}

fn split_at_ws(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, b""),
    }
}

/// `name=value` pairs, comma separated, values quoted or tokens.
fn params(mut s: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_ascii();
        while let [b',', rest @ ..] = s {
            s = rest.trim_ascii();
        }
        if s.is_empty() {
            return out;
        }
        let Some(eq) = s.iter().position(|&b| b == b'=') else {
            return out;
        };
        let name = s[..eq].trim_ascii().to_vec();
        s = s[eq + 1..].trim_ascii();
        let mut value = Vec::new();
        if let [b'"', rest @ ..] = s {
            let mut i = 0;
            while i < rest.len() {
                match rest[i] {
                    b'\\' if i + 1 < rest.len() => {
                        value.push(rest[i + 1]);
                        i += 2;
                    }
                    b'"' => break,
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            s = rest.get(i + 1..).unwrap_or(b"");
        } else {
            let end = s.iter().position(|&b| b == b',').unwrap_or(s.len());
            value = s[..end].trim_ascii().to_vec();
            s = &s[end..];
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn response_of(creds: &[u8]) -> String {
        let s = String::from_utf8(creds.to_vec()).unwrap();
        let at = s.find("response=\"").unwrap() + 10;
        s[at..at + 32].to_string()
    }

    /// RFC 2617 §3.5's worked example.
    #[test]
    fn rfc2617_example_with_qop() {
        let c = Challenge::parse(
            br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(c.qop_auth && c.supported());
        let mut out = Vec::new();
        credentials(
            &c,
            b"GET",
            b"/dir/index.html",
            b"Mufasa",
            b"Circle Of Life",
            b"0a4f113b",
            &mut out,
        );
        assert_eq!(response_of(&out), "6629fae49393a05397450978507c4ef1");
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("nc=00000001") && s.contains("cnonce=\"0a4f113b\""));
        assert!(s.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn without_qop_the_rfc2069_form() {
        let c = Challenge::parse(br#"Digest realm="r", nonce="n""#).unwrap();
        let mut out = Vec::new();
        credentials(&c, b"INVITE", b"sip:a@b", b"u", b"p", b"c", &mut out);
        let ha1 = md5_hex(&[b"u", b"r", b"p"]);
        let ha2 = md5_hex(&[b"INVITE", b"sip:a@b"]);
        let want = md5_hex(&[&ha1, b"n", &ha2]);
        assert_eq!(response_of(&out).as_bytes(), &want);
        assert!(!String::from_utf8(out).unwrap().contains("qop"));
    }

    #[test]
    fn other_schemes_and_incomplete_challenges_are_refused() {
        assert!(Challenge::parse(b"Basic realm=\"x\"").is_none());
        assert!(Challenge::parse(b"Digest realm=\"x\"").is_none());
        let c = Challenge::parse(b"Digest realm=x, nonce=y, algorithm=SHA-256").unwrap();
        assert!(!c.supported());
        assert_eq!(c.realm, b"x");
    }
}
