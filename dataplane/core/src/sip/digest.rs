//! HTTP Digest access authentication as SIP uses it (RFC 3261 §22.4 on
//! RFC 2617, with the algorithms of RFC 7616): parsing a challenge
//! (`WWW-Authenticate` / `Proxy-Authenticate`) and credentials
//! (`Authorization` / `Proxy-Authorization`), computing and rendering a
//! client's answer, and checking an answer on the server side.
//!
//! Sans-IO and allocation-light: values are parsed from the header value
//! bytes (folded lines allowed, RFC 3261 §7.3.1), hashes are computed into
//! a fixed [`HexDigest`]. Hostile input gives a [`DigestError`], never a
//! panic.
//!
//! ```
//! use sbc_core::sip::digest::{self, Challenge, Credentials, Secret};
//!
//! // Client: answer the challenge of a 401.
//! let challenge = Challenge::parse(br#"Digest realm="sbc", nonce="abc", qop="auth""#)?;
//! let me = Credentials { username: b"alice", password: b"secret" };
//! let answer = digest::answer(&challenge, &me, b"REGISTER", b"sip:sbc.example", b"0a4f113b", 1)?;
//! let mut value = Vec::new();
//! answer.write(&mut value)?; // the Authorization header value
//!
//! // Server: check it against the challenge it sent.
//! let received = digest::Authorization::parse(&value)?;
//! digest::verify(&challenge, &received, b"REGISTER", Secret::Password(b"secret"))?;
//! # Ok::<(), digest::DigestError>(())
//! ```
//!
//! Not supported: `qop=auth-int` (it hashes the body), username hashing
//! (`userhash=true`, RFC 7616 §3.4.4), the `username*` form (§4) and the
//! SHA-512-256 algorithms. Nonce freshness, nonce-count replay and whether
//! `uri` names the request's target (RFC 7616 §3.4.6) are the server's
//! state and left to the caller of [`verify`].

use std::borrow::Cow;
use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::scan::is_token;

/// Assigns each known directive to its variable, refusing a second
/// occurrence; unknown directives are skipped (RFC 7616 §3.3: ignored).
macro_rules! match_directive {
    ($name:expr, $value:expr, { $($key:literal => $slot:ident,)* }) => {{
        let name: &[u8] = $name;
        let value: Cow<'_, [u8]> = $value;
        $(
            if name.eq_ignore_ascii_case($key.as_bytes()) {
                if $slot.is_some() {
                    return Err(DigestError::Duplicate($key));
                }
                $slot = Some(value);
                continue;
            }
        )*
        let _ = value;
    }};
}

/// Why a challenge or credentials could not be parsed, answered or
/// verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The value is not of the `Digest` scheme (or has no scheme).
    #[error("not a Digest challenge or credentials")]
    NotDigest,
    /// The auth-param list does not parse (RFC 7616 §3.3, §3.4:
    /// `token "=" ( token / quoted-string )`, comma separated).
    #[error("malformed Digest parameter list")]
    Malformed,
    /// A directive appears more than once.
    #[error("Digest parameter {0} appears twice")]
    Duplicate(&'static str),
    /// A required directive is absent.
    #[error("Digest parameter {0} is missing")]
    Missing(&'static str),
    /// A directive (or a value given to this module) has a value it may not
    /// have.
    #[error("Digest parameter {0} has an invalid value")]
    Invalid(&'static str),
    /// A directive asks for something this module does not implement
    /// (an algorithm, a qop, username hashing).
    #[error("unsupported Digest {0}")]
    Unsupported(&'static str),
    /// The credentials do not answer this challenge: the named directive
    /// differs from the challenge's.
    #[error("Digest credentials do not match the challenge's {0}")]
    Mismatch(&'static str),
    /// The credentials answer the challenge, but the response is wrong:
    /// wrong password (or HA1), method or uri.
    #[error("Digest response is wrong")]
    WrongResponse,
}

/// A hash algorithm (RFC 7616 §3.3, registry of §6.1). The `-sess`
/// variants hash the nonces into A1 (§3.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `MD5`, the default when a challenge names none (RFC 7616 §3.3).
    #[default]
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` value (case-insensitive).
    pub fn parse(name: &[u8]) -> Result<Self, DigestError> {
        const ALL: [Algorithm; 4] = [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ];
        ALL.into_iter()
            .find(|a| name.eq_ignore_ascii_case(a.name().as_bytes()))
            .ok_or(DigestError::Unsupported("algorithm"))
    }

    /// The name as written in the `algorithm` directive.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (RFC 7616 §3.4.2).
    pub fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Length of a hash in lowercase hex (RFC 7616 §3.2): 32 for MD5, 64
    /// for SHA-256.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 32,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 64,
        }
    }

    /// `H(username ":" realm ":" password)`, RFC 7616 §3.4.2's A1 without
    /// the session part: what a server stores instead of the password and
    /// passes to [`verify`] as [`Secret::Ha1`].
    pub fn ha1(self, username: &[u8], realm: &[u8], password: &[u8]) -> HexDigest {
        self.hash(&[username, realm, password])
    }

    /// `H(parts joined by ":")` in lowercase hex (RFC 7616 §3.2).
    fn hash(self, parts: &[&[u8]]) -> HexDigest {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hash_joined::<Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hash_joined::<Sha256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn hash_joined<D: Digest>(parts: &[&[u8]]) -> HexDigest {
    let mut h = D::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    HexDigest::from_raw(&h.finalize())
}

/// A hash in lowercase hex (RFC 7616 §3.2): 32 characters for MD5, 64 for
/// SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexDigest {
    len: u8,
    buf: [u8; 64],
}

impl HexDigest {
    fn from_raw(raw: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        let mut len = 0u8;
        for (pair, b) in buf.chunks_exact_mut(2).zip(raw) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 15)];
            len += 2;
        }
        HexDigest { len, buf }
    }

    /// Parses a hash in hex of `len` digits (either case; kept lowercase).
    fn from_hex(hex: &[u8], len: usize) -> Option<Self> {
        if hex.len() != len || len > 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut buf = [0u8; 64];
        for (d, s) in buf.iter_mut().zip(hex) {
            *d = s.to_ascii_lowercase();
        }
        Some(HexDigest {
            len: u8::try_from(len).ok()?,
            buf,
        })
    }

    /// The hex digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexDigest({})", self.as_str())
    }
}

impl fmt::Display for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `qop` value (RFC 7616 §3.3). Only `auth` can be answered or
/// verified here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// Authentication only.
    Auth,
    /// Authentication with integrity protection of the body.
    AuthInt,
}

impl Qop {
    fn parse(token: &[u8]) -> Option<Self> {
        if token.eq_ignore_ascii_case(b"auth") {
            Some(Qop::Auth)
        } else if token.eq_ignore_ascii_case(b"auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }

    /// The token as written.
    pub fn name(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// A parsed `Digest` challenge: the value of a `WWW-Authenticate` or
/// `Proxy-Authenticate` header (RFC 7616 §3.3, RFC 3261 §22.4). Values are
/// unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
    /// Returned unchanged by the client (RFC 7616 §3.3).
    pub opaque: Option<Vec<u8>>,
    /// [`Algorithm::Md5`] when the challenge names none.
    pub algorithm: Algorithm,
    /// The `qop` options offered, in order, known ones only; empty when the
    /// challenge has no `qop` directive (the RFC 2069 form RFC 3261 §22.4
    /// keeps for compatibility).
    pub qop: Vec<Qop>,
    /// `stale=true`: the previous answer had the right password but an
    /// expired nonce (RFC 7616 §3.3).
    pub stale: bool,
}

impl Challenge {
    /// A fresh challenge as a server sends it: MD5, `qop="auth"`, no
    /// `opaque`.
    pub fn new(realm: impl Into<Vec<u8>>, nonce: impl Into<Vec<u8>>) -> Self {
        Challenge {
            realm: realm.into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm: Algorithm::Md5,
            qop: vec![Qop::Auth],
            stale: false,
        }
    }

    /// Parses `Digest realm="...", nonce="...", ...` (RFC 7616 §3.3).
    /// `realm` and `nonce` are required; unknown directives are ignored; an
    /// unknown `algorithm`, or a `qop` with no option known here, is
    /// [`DigestError::Unsupported`]. A second challenge in the same value
    /// (`..., Basic realm="x"`) ends the parse.
    pub fn parse(value: &[u8]) -> Result<Self, DigestError> {
        let value = unfold(value);
        let mut params = Params::new(&value)?;
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut stale = None;
        while let Some((name, v)) = params.next_param()? {
            match_directive!(name, v, {
                "realm" => realm,
                "nonce" => nonce,
                "opaque" => opaque,
                "algorithm" => algorithm,
                "qop" => qop,
                "stale" => stale,
            });
        }
        let qop = match qop {
            None => Vec::new(),
            Some(list) => {
                let mut offered: Vec<Qop> = Vec::new();
                for q in list
                    .split(|&b| b == b',')
                    .filter_map(|q| Qop::parse(q.trim_ascii()))
                {
                    if !offered.contains(&q) {
                        offered.push(q);
                    }
                }
                if offered.is_empty() {
                    return Err(DigestError::Unsupported("qop"));
                }
                offered
            }
        };
        Ok(Challenge {
            realm: realm.ok_or(DigestError::Missing("realm"))?.into_owned(),
            nonce: nonce.ok_or(DigestError::Missing("nonce"))?.into_owned(),
            opaque: opaque.map(Cow::into_owned),
            algorithm: match algorithm {
                Some(a) => Algorithm::parse(&a)?,
                None => Algorithm::Md5,
            },
            qop,
            stale: stale.is_some_and(|s| s.eq_ignore_ascii_case(b"true")),
        })
    }

    /// Whether the challenge offers `qop`.
    pub fn offers(&self, qop: Qop) -> bool {
        self.qop.contains(&qop)
    }

    /// What an answer to it must match, borrowed (see [`verify_expected`]).
    pub fn expected(&self) -> Expected<'_> {
        Expected {
            realm: &self.realm,
            nonce: &self.nonce,
            opaque: self.opaque.as_deref(),
            algorithm: self.algorithm,
            qop: &self.qop,
        }
    }

    /// Appends the header value (`Digest realm="...", ...`), quoting as
    /// RFC 7616 §3.3 asks: realm, nonce, opaque and qop quoted, algorithm
    /// and stale not. [`DigestError::Invalid`] (and nothing written) when a
    /// value holds a control character, which no quoted-string can carry.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), DigestError> {
        self.expected().write_challenge(self.stale, out)
    }
}

impl Expected<'_> {
    /// Appends the challenge these parts make, with `stale`, as
    /// [`Challenge::write`] does, without owning a [`Challenge`] first.
    pub fn write_challenge(&self, stale: bool, out: &mut Vec<u8>) -> Result<(), DigestError> {
        check_quotable("realm", self.realm)?;
        check_quotable("nonce", self.nonce)?;
        if let Some(o) = self.opaque {
            check_quotable("opaque", o)?;
        }
        out.extend_from_slice(b"Digest ");
        quoted(out, "realm", self.realm);
        if !self.qop.is_empty() {
            out.extend_from_slice(b", qop=\"");
            for (i, q) in self.qop.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(q.name().as_bytes());
            }
            out.push(b'"');
        }
        out.extend_from_slice(b", algorithm=");
        out.extend_from_slice(self.algorithm.name().as_bytes());
        out.extend_from_slice(b", ");
        quoted(out, "nonce", self.nonce);
        if let Some(o) = self.opaque {
            out.extend_from_slice(b", ");
            quoted(out, "opaque", o);
        }
        if stale {
            out.extend_from_slice(b", stale=true");
        }
        Ok(())
    }
}

/// Who a client is and what it knows. `Debug` does not show the password.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a [u8],
    pub password: &'a [u8],
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &String::from_utf8_lossy(self.username))
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a server checks an answer with (see [`verify`]). `Debug` does not
/// show it.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// The user's password.
    Password(&'a [u8]),
    /// `H(username ":" realm ":" password)` in hex ([`Algorithm::ha1`]),
    /// for the challenge's algorithm (its non-session form for `-sess`).
    Ha1(&'a [u8]),
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Password(<redacted>)",
            Secret::Ha1(_) => "Ha1(<redacted>)",
        })
    }
}

/// Parsed or computed `Digest` credentials: the value of an
/// `Authorization` or `Proxy-Authorization` header (RFC 7616 §3.4,
/// RFC 3261 §22.4). Values are unquoted and unescaped.
/// Parsed, the values borrow the header (unless an escape or a folded
/// line made a copy necessary); computed, they borrow the challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub username: Cow<'a, [u8]>,
    pub realm: Cow<'a, [u8]>,
    pub nonce: Cow<'a, [u8]>,
    /// The `digest-uri`: the request's target as the client wrote it.
    pub uri: Cow<'a, [u8]>,
    /// The request-digest in hex (RFC 7616 §3.4.1).
    pub response: Cow<'a, [u8]>,
    /// [`Algorithm::Md5`] when absent.
    pub algorithm: Algorithm,
    /// Present with `qop`.
    pub cnonce: Option<Cow<'a, [u8]>>,
    pub opaque: Option<Cow<'a, [u8]>>,
    /// The qop chosen; `None` for the RFC 2069 form.
    pub qop: Option<Qop>,
    /// The nonce count (`nc`, 8 lowercase hex digits on the wire); present
    /// with `qop`.
    pub nc: Option<u32>,
}

impl<'a> Authorization<'a> {
    /// Parses `Digest username="...", realm="...", ...` (RFC 7616 §3.4).
    /// `username`, `realm`, `nonce`, `uri` and `response` are required, and
    /// `cnonce` and `nc` with `qop`; unknown directives are ignored;
    /// `userhash=true` and `username*` are [`DigestError::Unsupported`].
    pub fn parse(value: &'a [u8]) -> Result<Self, DigestError> {
        match unfold(value) {
            Cow::Borrowed(v) => Self::parse_unfolded(v),
            Cow::Owned(v) => Authorization::parse_unfolded(&v).map(Authorization::into_owned),
        }
    }

    /// The same credentials owning their values.
    pub fn into_owned(self) -> Authorization<'static> {
        let own = |c: Cow<'_, [u8]>| Cow::Owned(c.into_owned());
        Authorization {
            username: own(self.username),
            realm: own(self.realm),
            nonce: own(self.nonce),
            uri: own(self.uri),
            response: own(self.response),
            algorithm: self.algorithm,
            cnonce: self.cnonce.map(own),
            opaque: self.opaque.map(own),
            qop: self.qop,
            nc: self.nc,
        }
    }

    /// [`Authorization::parse`] of a value with no line breaks left.
    fn parse_unfolded(value: &'a [u8]) -> Result<Self, DigestError> {
        let mut params = Params::new(value)?;
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut cnonce = None;
        let mut opaque = None;
        let mut qop = None;
        let mut nc = None;
        let mut userhash = None;
        let mut username_ext = None;
        while let Some((name, v)) = params.next_param()? {
            match_directive!(name, v, {
                "username" => username,
                "realm" => realm,
                "nonce" => nonce,
                "uri" => uri,
                "response" => response,
                "algorithm" => algorithm,
                "cnonce" => cnonce,
                "opaque" => opaque,
                "qop" => qop,
                "nc" => nc,
                "userhash" => userhash,
                "username*" => username_ext,
            });
        }
        if username_ext.is_some() {
            return Err(DigestError::Unsupported("username*"));
        }
        if userhash.is_some_and(|u: Cow<'_, [u8]>| u.eq_ignore_ascii_case(b"true")) {
            return Err(DigestError::Unsupported("userhash"));
        }
        let qop = match qop {
            None => None,
            Some(q) => Some(Qop::parse(&q).ok_or(DigestError::Invalid("qop"))?),
        };
        let nc = match nc {
            None => None,
            Some(n) => Some(parse_nc(&n).ok_or(DigestError::Invalid("nc"))?),
        };
        if qop.is_some() {
            if cnonce.is_none() {
                return Err(DigestError::Missing("cnonce"));
            }
            if nc.is_none() {
                return Err(DigestError::Missing("nc"));
            }
        }
        Ok(Authorization {
            username: username.ok_or(DigestError::Missing("username"))?,
            realm: realm.ok_or(DigestError::Missing("realm"))?,
            nonce: nonce.ok_or(DigestError::Missing("nonce"))?,
            uri: uri.ok_or(DigestError::Missing("uri"))?,
            response: response.ok_or(DigestError::Missing("response"))?,
            algorithm: match algorithm {
                Some(a) => Algorithm::parse(&a)?,
                None => Algorithm::Md5,
            },
            cnonce,
            opaque,
            qop,
            nc,
        })
    }

    /// Appends the header value: `Digest username="...", realm="...",
    /// nonce="...", uri="...", response="..."[, opaque="..."][,
    /// cnonce="...", qop=auth, nc=00000001], algorithm=MD5`, quoting as
    /// RFC 7616 §3.4 asks (qop, nc and algorithm unquoted); each optional
    /// directive is written when present.
    /// [`DigestError::Invalid`] (and nothing written) when a value holds a
    /// control character, which no quoted-string can carry.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), DigestError> {
        let fields: [(&'static str, &[u8]); 5] = [
            ("username", &self.username),
            ("realm", &self.realm),
            ("nonce", &self.nonce),
            ("uri", &self.uri),
            ("response", &self.response),
        ];
        for (name, v) in fields {
            check_quotable(name, v)?;
        }
        if let Some(o) = &self.opaque {
            check_quotable("opaque", o)?;
        }
        if let Some(c) = &self.cnonce {
            check_quotable("cnonce", c)?;
        }
        out.extend_from_slice(b"Digest ");
        for (name, v) in fields {
            quoted(out, name, v);
            out.extend_from_slice(b", ");
        }
        if let Some(o) = &self.opaque {
            quoted(out, "opaque", o);
            out.extend_from_slice(b", ");
        }
        if let Some(c) = &self.cnonce {
            quoted(out, "cnonce", c);
            out.extend_from_slice(b", ");
        }
        if let Some(q) = self.qop {
            out.extend_from_slice(b"qop=");
            out.extend_from_slice(q.name().as_bytes());
            out.extend_from_slice(b", ");
        }
        if let Some(nc) = self.nc {
            out.extend_from_slice(b"nc=");
            out.extend_from_slice(&nc_hex(nc));
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"algorithm=");
        out.extend_from_slice(self.algorithm.name().as_bytes());
        Ok(())
    }
}

/// The request-digest (RFC 7616 §3.4.1) answering `challenge` for a
/// `method uri` request, with the client nonce `cnonce` and nonce count
/// `nc` (both used only when the challenge offers `qop=auth`, which is then
/// chosen; without `qop` the RFC 2069 form of RFC 2617 §3.2.2.1).
///
/// [`DigestError::Unsupported`] when the challenge offers `qop` but not
/// `auth`, or asks for a `-sess` algorithm without `qop`;
/// [`DigestError::Invalid`] for an empty `cnonce` when one is needed.
pub fn response(
    challenge: &Challenge,
    credentials: &Credentials<'_>,
    method: &[u8],
    uri: &[u8],
    cnonce: &[u8],
    nc: u32,
) -> Result<HexDigest, DigestError> {
    let qop = client_qop(challenge)?;
    if qop.is_some() && cnonce.is_empty() {
        return Err(DigestError::Invalid("cnonce"));
    }
    let alg = challenge.algorithm;
    let ha1 = alg.ha1(credentials.username, &challenge.realm, credentials.password);
    request_digest(
        alg,
        &ha1,
        &challenge.nonce,
        qop.map(|_| (nc_hex(nc), cnonce)),
        method,
        uri,
    )
}

/// The full answer to `challenge` ([`response`] and the directives that go
/// with it); [`Authorization::write`] renders it as the `Authorization` (or
/// `Proxy-Authorization`) header value.
pub fn answer<'a>(
    challenge: &'a Challenge,
    credentials: &Credentials<'a>,
    method: &[u8],
    uri: &'a [u8],
    cnonce: &'a [u8],
    nc: u32,
) -> Result<Authorization<'a>, DigestError> {
    let digest = response(challenge, credentials, method, uri, cnonce, nc)?;
    let qop = client_qop(challenge)?;
    Ok(Authorization {
        username: Cow::Borrowed(credentials.username),
        realm: Cow::Borrowed(&challenge.realm),
        nonce: Cow::Borrowed(&challenge.nonce),
        uri: Cow::Borrowed(uri),
        response: Cow::Owned(digest.as_bytes().to_vec()),
        algorithm: challenge.algorithm,
        cnonce: qop.map(|_| Cow::Borrowed(cnonce)),
        opaque: challenge.opaque.as_deref().map(Cow::Borrowed),
        qop,
        nc: qop.map(|_| nc),
    })
}

/// Checks received credentials against the challenge the server sent
/// (RFC 7616 §3.4, §3.4.1): same realm, nonce, opaque and algorithm, a qop
/// the challenge offered (or none when it offered none), and the response
/// computed from `secret` for `method`. The response is compared in
/// constant time.
///
/// Not checked, since they are the server's state: that the user is the one
/// whose `secret` this is, that the nonce is fresh and `nc` not replayed,
/// and that `authorization.uri` names the request's target (RFC 7616
/// §3.4.6).
pub fn verify(
    challenge: &Challenge,
    authorization: &Authorization<'_>,
    method: &[u8],
    secret: Secret<'_>,
) -> Result<(), DigestError> {
    verify_expected(challenge.expected(), authorization, method, secret)
}

/// What a challenge said, borrowed: what [`verify_expected`] checks an
/// answer against, without a [`Challenge`] to build (a server rebuilds
/// its challenge from the nonce the answer carries).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub realm: &'a [u8],
    pub nonce: &'a [u8],
    pub opaque: Option<&'a [u8]>,
    pub algorithm: Algorithm,
    /// The qop options offered.
    pub qop: &'a [Qop],
}

/// [`verify`] against a challenge's parts.
pub fn verify_expected(
    challenge: Expected<'_>,
    authorization: &Authorization<'_>,
    method: &[u8],
    secret: Secret<'_>,
) -> Result<(), DigestError> {
    let a = authorization;
    if *a.realm != *challenge.realm {
        return Err(DigestError::Mismatch("realm"));
    }
    if *a.nonce != *challenge.nonce {
        return Err(DigestError::Mismatch("nonce"));
    }
    if a.opaque.as_deref() != challenge.opaque {
        return Err(DigestError::Mismatch("opaque"));
    }
    if a.algorithm != challenge.algorithm {
        return Err(DigestError::Mismatch("algorithm"));
    }
    let qop = match a.qop {
        None if challenge.qop.is_empty() => None,
        Some(q) if challenge.qop.contains(&q) => {
            if q != Qop::Auth {
                return Err(DigestError::Unsupported("qop"));
            }
            match (a.nc, &a.cnonce) {
                (Some(nc), Some(cnonce)) => Some((nc_hex(nc), &**cnonce)),
                (None, _) => return Err(DigestError::Missing("nc")),
                (_, None) => return Err(DigestError::Missing("cnonce")),
            }
        }
        _ => return Err(DigestError::Mismatch("qop")),
    };
    let alg = challenge.algorithm;
    let ha1 = match secret {
        Secret::Password(p) => alg.ha1(&a.username, challenge.realm, p),
        Secret::Ha1(h) => {
            HexDigest::from_hex(h, alg.hex_len()).ok_or(DigestError::Invalid("HA1"))?
        }
    };
    let want = request_digest(alg, &ha1, challenge.nonce, qop, method, &a.uri)?;
    if eq_hex_constant_time(want.as_bytes(), &a.response) {
        Ok(())
    } else {
        Err(DigestError::WrongResponse)
    }
}

/// The qop a client answers with: `auth` if offered, none if nothing is.
fn client_qop(challenge: &Challenge) -> Result<Option<Qop>, DigestError> {
    if challenge.qop.is_empty() {
        Ok(None)
    } else if challenge.offers(Qop::Auth) {
        Ok(Some(Qop::Auth))
    } else {
        Err(DigestError::Unsupported("qop"))
    }
}

/// RFC 7616 §3.4.1-§3.4.3, with `ha1` = `H(username:realm:password)`:
/// `KD(H(A1), nonce:nc:cnonce:qop:H(A2))` with `qop=auth`, else the RFC
/// 2069 form `KD(H(A1), nonce:H(A2))`; A2 = `method:uri`.
fn request_digest(
    alg: Algorithm,
    ha1: &HexDigest,
    nonce: &[u8],
    qop_auth: Option<([u8; 8], &[u8])>,
    method: &[u8],
    uri: &[u8],
) -> Result<HexDigest, DigestError> {
    let ha1 = if alg.is_session() {
        let Some((_, cnonce)) = qop_auth else {
            return Err(DigestError::Unsupported("-sess algorithm without qop"));
        };
        alg.hash(&[ha1.as_bytes(), nonce, cnonce])
    } else {
        *ha1
    };
    let ha2 = alg.hash(&[method, uri]);
    Ok(match qop_auth {
        Some((nc, cnonce)) => {
            alg.hash(&[ha1.as_bytes(), nonce, &nc, cnonce, b"auth", ha2.as_bytes()])
        }
        None => alg.hash(&[ha1.as_bytes(), nonce, ha2.as_bytes()]),
    })
}

fn nc_hex(nc: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    crate::hex::write_hex(&mut out, u64::from(nc));
    out
}

/// `nc-value = 8LHEX` (RFC 7616 §3.4).
fn parse_nc(s: &[u8]) -> Option<u32> {
    if s.len() != 8 {
        return None;
    }
    u32::try_from(crate::hex::parse_hex(s)?).ok()
}

/// Equal as hex, ignoring case, in time that depends on the lengths only.
fn eq_hex_constant_time(want: &[u8], got: &[u8]) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let diff = want.iter().zip(got).fold(0u8, |d, (a, b)| {
        d | (a.to_ascii_lowercase() ^ b.to_ascii_lowercase())
    });
    diff == 0
}

fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Whether `s` holds a control byte (TAB aside): the word test first, the
/// exact one only when it fires.
fn has_control(s: &[u8]) -> bool {
    super::scan::has_byte_below_or(s, 0x20, 0x7f) && s.iter().any(|&b| is_control(b))
}

fn check_quotable(name: &'static str, v: &[u8]) -> Result<(), DigestError> {
    if has_control(v) {
        Err(DigestError::Invalid(name))
    } else {
        Ok(())
    }
}

/// `name="value"`, with `"` and `\` escaped (RFC 7616 §3.4.5).
fn quoted(out: &mut Vec<u8>, name: &str, v: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    // Runs without a quote or backslash are copied whole.
    let mut rest = v;
    while let Some(i) = memchr::memchr2(b'"', b'\\', rest) {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(rest[i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// The value with each line break (CR/LF, and the white space after it)
/// turned into one space, as RFC 3261 §7.3.1 allows; borrowed when there
/// is none.
fn unfold(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memchr2(b'\r', b'\n', value).is_none() {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut in_break = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => in_break = true,
            b' ' | b'\t' if in_break => {}
            _ => {
                if in_break {
                    out.push(b' ');
                    in_break = false;
                }
                out.push(b);
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_ows(b)).count();
    &s[n..]
}

/// A directive's name and unquoted value.
type Param<'a> = (&'a [u8], Cow<'a, [u8]>);

/// The auth-params after the scheme (RFC 7235 §2.1 as RFC 7616 uses it):
/// `token BWS "=" BWS ( token / quoted-string )`, comma separated, empty
/// elements allowed.
struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    /// Checks the `Digest` scheme and positions after it.
    fn new(value: &'a [u8]) -> Result<Self, DigestError> {
        let s = value.trim_ascii();
        let n = s.iter().take_while(|&&b| is_token(b)).count();
        let (scheme, rest) = s.split_at(n);
        if !scheme.eq_ignore_ascii_case(b"Digest") || rest.first().is_some_and(|&b| !is_ows(b)) {
            return Err(DigestError::NotDigest);
        }
        Ok(Params { rest })
    }

    /// The next `(name, unquoted value)`; `None` at the end of the list or
    /// where the next challenge of the same header value starts.
    fn next_param(&mut self) -> Result<Option<Param<'a>>, DigestError> {
        let mut s = self.rest;
        loop {
            s = skip_ows(s);
            match s.split_first() {
                Some((b',', rest)) => s = rest,
                _ => break,
            }
        }
        if s.is_empty() {
            self.rest = s;
            return Ok(None);
        }
        let n = s.iter().take_while(|&&b| is_token(b)).count();
        if n == 0 {
            return Err(DigestError::Malformed);
        }
        let (name, after_name) = s.split_at(n);
        let s = skip_ows(after_name);
        let Some((b'=', s)) = s.split_first() else {
            // `token` then white space, a comma or the end: the scheme of
            // another challenge.
            return match after_name.first() {
                None | Some(b',' | b' ' | b'\t') => {
                    self.rest = b"";
                    Ok(None)
                }
                Some(_) => Err(DigestError::Malformed),
            };
        };
        let s = skip_ows(s);
        let (value, s) = match s.split_first() {
            Some((b'"', s)) => quoted_string(s)?,
            _ => {
                let n = s
                    .iter()
                    .take_while(|&&b| b > b' ' && b < 0x7f && b != b',' && b != b'"')
                    .count();
                if n == 0 {
                    return Err(DigestError::Malformed);
                }
                (Cow::Borrowed(&s[..n]), &s[n..])
            }
        };
        let s = skip_ows(s);
        match s.first() {
            None | Some(b',') => {
                self.rest = s;
                Ok(Some((name, value)))
            }
            Some(_) => Err(DigestError::Malformed),
        }
    }
}

/// The content of a quoted-string whose opening quote is consumed, and the
/// rest after its closing quote: borrowed when it holds no escape.
fn quoted_string(s: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), DigestError> {
    // Up to the first quote or backslash, found by one search; no control
    // byte may stand before it.
    let plain = memchr::memchr2(b'"', b'\\', s).ok_or(DigestError::Malformed)?;
    if has_control(&s[..plain]) {
        return Err(DigestError::Malformed);
    }
    if s[plain] == b'"' {
        return Ok((Cow::Borrowed(&s[..plain]), &s[plain + 1..]));
    }
    let mut value = s[..plain].to_vec();
    let mut i = plain;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Ok((Cow::Owned(value), &s[i + 1..])),
            b'\\' => {
                let Some(&e) = s.get(i + 1) else {
                    return Err(DigestError::Malformed);
                };
                if is_control(e) {
                    return Err(DigestError::Malformed);
                }
                value.push(e);
                i += 2;
            }
            b if is_control(b) => return Err(DigestError::Malformed),
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    Err(DigestError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;

    const NONCE: &[u8] = b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &[u8] = b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const OPAQUE: &[u8] = b"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const MUFASA: Credentials<'static> = Credentials {
        username: b"Mufasa",
        password: b"Circle of Life",
    };

    /// RFC 7616 §3.9.1's challenges, as the server sends them.
    fn rfc7616_challenge(algorithm: &str) -> Challenge {
        let value = format!(
            "Digest\r\n    realm=\"http-auth@example.org\",\r\n    qop=\"auth, auth-int\",\r\n    \
             algorithm={algorithm},\r\n    nonce=\"{}\",\r\n    opaque=\"{}\"",
            std::str::from_utf8(NONCE).unwrap(),
            std::str::from_utf8(OPAQUE).unwrap()
        );
        Challenge::parse(value.as_bytes()).unwrap()
    }

    fn written(a: &Authorization) -> String {
        let mut out = Vec::new();
        a.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc7616_example_md5() {
        let c = rfc7616_challenge("MD5");
        assert_eq!(c.realm, b"http-auth@example.org");
        assert_eq!(c.qop, [Qop::Auth, Qop::AuthInt]);
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.opaque.as_deref(), Some(OPAQUE));
        let r = response(&c, &MUFASA, b"GET", b"/dir/index.html", CNONCE, 1).unwrap();
        assert_eq!(r.as_str(), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc7616_example_sha256() {
        let c = rfc7616_challenge("SHA-256");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let r = response(&c, &MUFASA, b"GET", b"/dir/index.html", CNONCE, 1).unwrap();
        assert_eq!(
            r.as_str(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let a = answer(&c, &MUFASA, b"GET", b"/dir/index.html", CNONCE, 1).unwrap();
        let s = written(&a);
        assert!(s.contains(
            "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
        ));
        assert!(s.contains("qop=auth, nc=00000001, ") && s.ends_with("algorithm=SHA-256"));
    }

    /// The Authorization values of RFC 7616 §3.9.1, as a server receives
    /// them, verified with the password and with HA1.
    #[test]
    fn rfc7616_example_verifies_on_the_server() {
        for (alg, resp) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let c = rfc7616_challenge(alg);
            let value = format!(
                "Digest username=\"Mufasa\",\r\n    realm=\"http-auth@example.org\",\r\n    \
                 uri=\"/dir/index.html\",\r\n    algorithm={alg},\r\n    nonce=\"{}\",\r\n    \
                 nc=00000001,\r\n    cnonce=\"{}\",\r\n    qop=auth,\r\n    response=\"{resp}\",\r\n    \
                 opaque=\"{}\",\r\n    userhash=false",
                std::str::from_utf8(NONCE).unwrap(),
                std::str::from_utf8(CNONCE).unwrap(),
                std::str::from_utf8(OPAQUE).unwrap()
            );
            let a = Authorization::parse(value.as_bytes()).unwrap();
            assert_eq!((a.qop, a.nc), (Some(Qop::Auth), Some(1)));
            assert_eq!(&*a.uri, b"/dir/index.html");
            verify(&c, &a, b"GET", Secret::Password(b"Circle of Life")).unwrap();
            let ha1 = c
                .algorithm
                .ha1(b"Mufasa", b"http-auth@example.org", b"Circle of Life");
            verify(&c, &a, b"GET", Secret::Ha1(ha1.as_bytes())).unwrap();
            let upper = ha1.as_str().to_ascii_uppercase();
            verify(&c, &a, b"GET", Secret::Ha1(upper.as_bytes())).unwrap();
            assert_eq!(
                verify(&c, &a, b"GET", Secret::Password(b"Circle Of Life")),
                Err(DigestError::WrongResponse)
            );
            assert_eq!(
                verify(&c, &a, b"POST", Secret::Password(b"Circle of Life")),
                Err(DigestError::WrongResponse)
            );
            assert_eq!(
                verify(&c, &a, b"GET", Secret::Ha1(b"abc")),
                Err(DigestError::Invalid("HA1"))
            );
            // What the client computes is what the RFC shows.
            let ours = answer(&c, &MUFASA, b"GET", b"/dir/index.html", CNONCE, 1).unwrap();
            assert_eq!(ours, a);
        }
    }

    /// RFC 2617 §3.5's worked example (moved from sbc-load, with the exact
    /// header sbc-load has always written).
    #[test]
    fn rfc2617_example_with_qop() {
        let c = Challenge::parse(
            br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(c.offers(Qop::Auth) && c.algorithm == Algorithm::Md5);
        let me = Credentials {
            username: b"Mufasa",
            password: b"Circle Of Life",
        };
        let a = answer(&c, &me, b"GET", b"/dir/index.html", b"0a4f113b", 1).unwrap();
        assert_eq!(
            written(&a),
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"6629fae49393a05397450978507c4ef1\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", cnonce=\"0a4f113b\", qop=auth, \
             nc=00000001, algorithm=MD5"
        );
    }

    #[test]
    fn without_qop_the_rfc2069_form() {
        let c = Challenge::parse(br#"Digest realm="r", nonce="n""#).unwrap();
        assert!(c.qop.is_empty());
        let me = Credentials {
            username: b"u",
            password: b"p",
        };
        let a = answer(&c, &me, b"INVITE", b"sip:a@b", b"c", 1).unwrap();
        let ha1 = Algorithm::Md5.hash(&[b"u", b"r", b"p"]);
        let ha2 = Algorithm::Md5.hash(&[b"INVITE", b"sip:a@b"]);
        let want = Algorithm::Md5.hash(&[ha1.as_bytes(), b"n", ha2.as_bytes()]);
        assert_eq!(a.response, want.as_bytes());
        let s = written(&a);
        assert!(!s.contains("qop") && !s.contains("cnonce") && !s.contains("nc="));
        verify(
            &c,
            &Authorization::parse(s.as_bytes()).unwrap(),
            b"INVITE",
            Secret::Password(b"p"),
        )
        .unwrap();
    }

    #[test]
    fn session_algorithms_hash_the_nonces_into_a1() {
        let mut c = Challenge::new("r", "n");
        c.algorithm = Algorithm::Sha256Sess;
        let me = Credentials {
            username: b"u",
            password: b"p",
        };
        let a = answer(&c, &me, b"REGISTER", b"sip:r", b"cn", 7).unwrap();
        let base = Algorithm::Sha256.hash(&[b"u", b"r", b"p"]);
        let ha1 = Algorithm::Sha256.hash(&[base.as_bytes(), b"n", b"cn"]);
        let ha2 = Algorithm::Sha256.hash(&[b"REGISTER", b"sip:r"]);
        let want = Algorithm::Sha256.hash(&[
            ha1.as_bytes(),
            b"n",
            b"00000007",
            b"cn",
            b"auth",
            ha2.as_bytes(),
        ]);
        assert_eq!(a.response, want.as_bytes());
        let text = written(&a);
        let parsed = Authorization::parse(text.as_bytes()).unwrap();
        verify(&c, &parsed, b"REGISTER", Secret::Ha1(base.as_bytes())).unwrap();
        c.qop.clear();
        assert_eq!(
            response(&c, &me, b"REGISTER", b"sip:r", b"cn", 1),
            Err(DigestError::Unsupported("-sess algorithm without qop"))
        );
    }

    #[test]
    fn challenges_parse_leniently_but_not_carelessly() {
        // Unquoted values, odd case, empty elements, a second challenge.
        let c = Challenge::parse(
            b"digest REALM=x,, nonce=y , Algorithm=\"sha-256\", stale=TRUE, Basic realm=\"z\"",
        )
        .unwrap();
        assert_eq!(
            (c.realm.as_slice(), c.nonce.as_slice()),
            (&b"x"[..], &b"y"[..])
        );
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(c.stale);
        // Escapes inside quoted strings.
        let c = Challenge::parse(br#"Digest realm="a \"b\" \\c", nonce="n""#).unwrap();
        assert_eq!(c.realm, br#"a "b" \c"#);
        let err = |v: &[u8]| Challenge::parse(v).unwrap_err();
        assert_eq!(err(b"Basic realm=\"x\""), DigestError::NotDigest);
        assert_eq!(err(b"Digestrealm=\"x\""), DigestError::NotDigest);
        assert_eq!(err(b""), DigestError::NotDigest);
        assert_eq!(err(b"Digest realm=\"x\""), DigestError::Missing("nonce"));
        assert_eq!(err(b"Digest nonce=\"x\""), DigestError::Missing("realm"));
        assert_eq!(err(b"Digest realm=\"x"), DigestError::Malformed);
        assert_eq!(
            err(b"Digest realm=\"x\" nonce=\"y\""),
            DigestError::Malformed
        );
        assert_eq!(
            err(b"Digest realm=\"a\0b\", nonce=y"),
            DigestError::Malformed
        );
        assert_eq!(err(b"Digest realm=, nonce=y"), DigestError::Malformed);
        assert_eq!(
            err(b"Digest realm=a, realm=b, nonce=y"),
            DigestError::Duplicate("realm")
        );
        assert_eq!(
            err(b"Digest realm=x, nonce=y, algorithm=SHA-512-256"),
            DigestError::Unsupported("algorithm")
        );
        assert_eq!(
            err(b"Digest realm=x, nonce=y, qop=\"auth-conf\""),
            DigestError::Unsupported("qop")
        );
    }

    #[test]
    fn a_challenge_without_qop_auth_is_not_answered_in_the_old_form() {
        let c = Challenge::parse(b"Digest realm=x, nonce=y, qop=\"auth-int\"").unwrap();
        assert_eq!(
            response(&c, &MUFASA, b"GET", b"/", b"c", 1),
            Err(DigestError::Unsupported("qop"))
        );
        let ok = Challenge::parse(b"Digest realm=x, nonce=y, qop=auth").unwrap();
        assert_eq!(
            response(&ok, &MUFASA, b"GET", b"/", b"", 1),
            Err(DigestError::Invalid("cnonce"))
        );
    }

    #[test]
    fn a_challenge_written_parses_back() {
        let mut c = Challenge::new(&br#"we"ird\realm"#[..], "n0nce");
        c.opaque = Some(b"op".to_vec());
        c.stale = true;
        c.qop = vec![Qop::Auth, Qop::AuthInt];
        c.algorithm = Algorithm::Sha256;
        let mut out = Vec::new();
        c.write(&mut out).unwrap();
        assert_eq!(
            out,
            br#"Digest realm="we\"ird\\realm", qop="auth, auth-int", algorithm=SHA-256, nonce="n0nce", opaque="op", stale=true"#
        );
        assert_eq!(Challenge::parse(&out).unwrap(), c);
        c.realm = b"line\r\nbreak".to_vec();
        let mut out = Vec::new();
        assert_eq!(c.write(&mut out), Err(DigestError::Invalid("realm")));
        assert!(out.is_empty());
    }

    #[test]
    fn verify_refuses_answers_to_another_challenge() {
        let c = Challenge::new("r", "n");
        let me = Credentials {
            username: b"u",
            password: b"p",
        };
        let good = answer(&c, &me, b"REGISTER", b"sip:r", b"cn", 1).unwrap();
        let check = |f: &dyn Fn(&mut Authorization)| {
            let mut a = good.clone();
            f(&mut a);
            verify(&c, &a, b"REGISTER", Secret::Password(b"p"))
        };
        assert_eq!(check(&|_| {}), Ok(()));
        assert_eq!(
            check(&|a| a.realm = b"x".to_vec().into()),
            Err(DigestError::Mismatch("realm"))
        );
        assert_eq!(
            check(&|a| a.nonce = b"x".to_vec().into()),
            Err(DigestError::Mismatch("nonce"))
        );
        assert_eq!(
            check(&|a| a.opaque = Some(b"x".to_vec().into())),
            Err(DigestError::Mismatch("opaque"))
        );
        assert_eq!(
            check(&|a| a.algorithm = Algorithm::Sha256),
            Err(DigestError::Mismatch("algorithm"))
        );
        assert_eq!(check(&|a| a.qop = None), Err(DigestError::Mismatch("qop")));
        assert_eq!(
            check(&|a| a.qop = Some(Qop::AuthInt)),
            Err(DigestError::Mismatch("qop"))
        );
        assert_eq!(check(&|a| a.nc = Some(2)), Err(DigestError::WrongResponse));
        assert_eq!(
            check(&|a| a.uri = b"sip:x".to_vec().into()),
            Err(DigestError::WrongResponse)
        );
        assert_eq!(
            check(&|a| a.response = Vec::new().into()),
            Err(DigestError::WrongResponse)
        );
        assert_eq!(
            check(&|a| a.response = a.response.to_ascii_uppercase().into()),
            Ok(())
        );
    }

    #[test]
    fn authorization_parse_refusals() {
        let base = "username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"0\"";
        let parse = |extra: &str| {
            Authorization::parse(format!("Digest {base}{extra}").as_bytes())
                .map(Authorization::into_owned)
        };
        assert!(parse("").is_ok());
        assert_eq!(
            parse(", qop=auth, nc=00000001"),
            Err(DigestError::Missing("cnonce"))
        );
        assert_eq!(
            parse(", qop=auth, cnonce=c"),
            Err(DigestError::Missing("nc"))
        );
        assert_eq!(
            parse(", qop=auth, cnonce=c, nc=1"),
            Err(DigestError::Invalid("nc"))
        );
        assert_eq!(
            parse(", qop=auth, cnonce=c, nc=0000000A"),
            Err(DigestError::Invalid("nc"))
        );
        assert_eq!(
            parse(", qop=conf, cnonce=c, nc=00000001"),
            Err(DigestError::Invalid("qop"))
        );
        assert_eq!(
            parse(", userhash=true"),
            Err(DigestError::Unsupported("userhash"))
        );
        assert_eq!(
            parse(", username*=UTF-8''x"),
            Err(DigestError::Unsupported("username*"))
        );
        assert_eq!(parse(", uri=\"x\""), Err(DigestError::Duplicate("uri")));
        assert_eq!(
            Authorization::parse(b"Digest realm=r, nonce=n, uri=u, response=0"),
            Err(DigestError::Missing("username"))
        );
        let a = parse(", qop=auth, cnonce=c, nc=ffffffff, userhash=false").unwrap();
        assert_eq!(a.nc, Some(u32::MAX));
    }

    fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                Just(b','),
                Just(b'='),
                Just(b' '),
                0x20u8..0x7f,
                0x80u8..=0xff
            ],
            0..24,
        )
    }

    /// A quoted-string holding arbitrary (escaped) bytes, or a token.
    fn any_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            value_bytes().prop_map(|v| {
                let mut q = b"\"".to_vec();
                for b in v {
                    if b == b'"' || b == b'\\' {
                        q.push(b'\\');
                    }
                    q.push(b);
                }
                q.push(b'"');
                q
            }),
            "[a-zA-Z0-9/+=._-]{1,12}".prop_map(String::into_bytes),
        ]
    }

    fn param(
        name: &'static str,
        value: impl Strategy<Value = Vec<u8>>,
    ) -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), value).prop_map(move |(upper, v)| {
            let n = if upper {
                name.to_ascii_uppercase()
            } else {
                name.to_owned()
            };
            [n.as_bytes(), b"=", &v].concat()
        })
    }

    fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => prop::sample::select(values).prop_map(|v| v.as_bytes().to_vec()),
            1 => any_value(),
        ]
    }

    const ALGORITHMS: &[&str] = &["MD5", "md5-sess", "SHA-256", "SHA-256-sess", "\"MD5\""];
    const QOPS: &[&str] = &[
        "\"auth\"",
        "auth",
        "\"auth, auth-int\"",
        "\"auth-int\"",
        "auth-int",
    ];

    /// Well-formed challenges and credentials with their directives in any
    /// order, between separators of all kinds, now and then a fragment of
    /// syntax in the wrong place: generated values get past the scheme and
    /// often parse.
    fn digestish() -> impl Strategy<Value = Vec<u8>> {
        use prop::option::of as opt;
        let challenge = (
            param("realm", any_value()),
            param("nonce", any_value()),
            opt(param("opaque", any_value())),
            opt(param("algorithm", one_of(ALGORITHMS))),
            opt(param("qop", one_of(QOPS))),
            opt(param("stale", one_of(&["true", "FALSE"]))),
            opt(param("domain", any_value())),
        )
            .prop_map(|(r, n, a, b, c, d, e)| {
                [Some(r), Some(n), a, b, c, d, e]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
            });
        let authorization = (
            (
                param("username", any_value()),
                param("realm", any_value()),
                param("nonce", any_value()),
                param("uri", any_value()),
                param("response", any_value()),
            ),
            opt(param("algorithm", one_of(ALGORITHMS))),
            opt(param("opaque", any_value())),
            opt((
                param("qop", one_of(&["auth", "\"auth\"", "auth-int"])),
                param("cnonce", any_value()),
                param("nc", one_of(&["00000001", "deadbeef", "0000000A"])),
            )
                .prop_map(|(q, c, n)| vec![q, c, n])),
            opt(param("userhash", one_of(&["false", "true"]))),
        )
            .prop_map(|((u, r, n, uri, resp), a, o, q, h)| {
                let mut v = vec![u, r, n, uri, resp];
                v.extend([a, o, h].into_iter().flatten());
                v.extend(q.into_iter().flatten());
                v
            });
        let sep = prop_oneof![
            6 => Just(&b", "[..]),
            1 => Just(&b",\r\n\t"[..]),
            1 => Just(&b" ,, "[..]),
            1 => Just(&b","[..]),
        ];
        let junk = prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"=".to_vec()),
            Just(b" ".to_vec()),
            Just(b", Basic ".to_vec()),
            Just(b"\r\n".to_vec()),
            value_bytes(),
        ];
        (
            prop_oneof![challenge, authorization].prop_shuffle(),
            prop::collection::vec(sep, 16),
            prop::option::weighted(0.25, (any::<prop::sample::Index>(), junk)),
        )
            .prop_map(|(params, seps, junk)| {
                let mut out = b"Digest ".to_vec();
                for (i, p) in params.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(seps[i % seps.len()]);
                    }
                    out.extend_from_slice(p);
                }
                if let Some((at, j)) = junk {
                    let at = at.index(out.len() + 1);
                    out.splice(at..at, j);
                }
                out
            })
    }

    proptest! {
        /// Arbitrary values never panic either parser.
        #[test]
        fn arbitrary_values_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Challenge::parse(&bytes);
            let _ = Authorization::parse(&bytes);
        }

        /// Nor do values made of Digest syntax; what parses writes and
        /// parses back the same.
        #[test]
        fn digest_like_values_never_panic(value in digestish()) {
            if let Ok(c) = Challenge::parse(&value) {
                let mut out = Vec::new();
                c.write(&mut out).unwrap();
                prop_assert_eq!(Challenge::parse(&out), Ok(c));
            }
            if let Ok(a) = Authorization::parse(&value) {
                let mut out = Vec::new();
                a.write(&mut out).unwrap();
                prop_assert_eq!(Authorization::parse(&out), Ok(a));
            }
        }

        /// Any answer a client writes verifies on the server, with the
        /// password or with HA1.
        #[test]
        fn answers_verify(
            realm in value_bytes(), nonce in value_bytes(), user in value_bytes(),
            password in value_bytes(), uri in value_bytes(), cnonce in value_bytes(),
            nc in any::<u32>(), alg in 0usize..4, qop in any::<bool>(),
        ) {
            let algorithm = [Algorithm::Md5, Algorithm::Md5Sess, Algorithm::Sha256, Algorithm::Sha256Sess][alg];
            let mut c = Challenge::new(realm, nonce);
            c.algorithm = algorithm;
            if !qop {
                c.qop.clear();
            }
            let me = Credentials { username: &user, password: &password };
            match answer(&c, &me, b"REGISTER", &uri, &cnonce, nc) {
                Ok(a) => {
                    let mut out = Vec::new();
                    a.write(&mut out).unwrap();
                    let got = Authorization::parse(&out).unwrap();
                    prop_assert_eq!(&got, &a);
                    prop_assert_eq!(verify(&c, &got, b"REGISTER", Secret::Password(&password)), Ok(()));
                    let ha1 = algorithm.ha1(&user, &c.realm, &password);
                    prop_assert_eq!(verify(&c, &got, b"REGISTER", Secret::Ha1(ha1.as_bytes())), Ok(()));
                }
                Err(e) => prop_assert!(
                    (qop && cnonce.is_empty() && e == DigestError::Invalid("cnonce"))
                        || (!qop && algorithm.is_session())
                ),
            }
        }
    }
}
