//! SDP (RFC 4566) as the media layer needs it: parsed into session lines
//! and media sections (slices of the body), and rewritten for anchoring
//! (RFC 3264 offer/answer: c= and m= ports, a=rtcp, o= address) with codec
//! filtering. Everything not named here is kept as written.

use smallvec::SmallVec;
use std::net::IpAddr;

/// One `<type>=<value>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// One media section: its m= line and the lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    pub media: &'a [u8],
    pub port: u16,
    /// `m=audio 49170/2 ...`: the number of ports (RFC 4566 §5.14).
    pub port_count: Option<&'a [u8]>,
    pub proto: &'a [u8],
    pub fmts: SmallVec<[&'a [u8]; FORMATS_INLINE]>,
    pub lines: SmallVec<[Line<'a>; LINES_INLINE]>,
    /// The address of this section's first c= line, read once by
    /// [`Sdp::parse`].
    conn: Option<IpAddr>,
}

/// Formats of one m= line and lines of one section held without a heap
/// allocation: enough for what phones and trunks offer; more spill to the
/// heap.
const FORMATS_INLINE: usize = 8;
const LINES_INLINE: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    pub session: SmallVec<[Line<'a>; LINES_INLINE]>,
    pub media: SmallVec<[Media<'a>; 2]>,
    /// The address of the session's first c= line.
    conn: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP line is not <type>=<value>")]
    Line,
    #[error("SDP m= line is malformed")]
    MediaLine,
    #[error("SDP c= line is malformed")]
    Connection,
    #[error("SDP has no v= line first")]
    Version,
}

fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

impl<'a> Sdp<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        let mut session = SmallVec::new();
        let mut media: SmallVec<[Media<'a>; 2]> = SmallVec::new();
        let mut conn = None;
        for (i, raw) in lines(body).enumerate() {
            let [kind, b'=', value @ ..] = raw else {
                return Err(SdpError::Line);
            };
            if !kind.is_ascii_lowercase() {
                return Err(SdpError::Line);
            }
            if i == 0 && *kind != b'v' {
                return Err(SdpError::Version);
            }
            let line = Line { kind: *kind, value };
            // Every c= line must be well formed; the first of each part
            // is kept.
            let c = if *kind == b'c' {
                Some(parse_c(value)?)
            } else {
                None
            };
            if *kind == b'm' {
                media.push(parse_m(value)?);
            } else if let Some(m) = media.last_mut() {
                m.lines.push(line);
                m.conn = m.conn.or(c);
            } else {
                session.push(line);
                conn = conn.or(c);
            }
        }
        if session.is_empty() {
            return Err(SdpError::Version);
        }
        Ok(Sdp {
            session,
            media,
            conn,
        })
    }

    /// The connection address of a media section (its own c= or the
    /// session's).
    pub fn connection(&self, index: usize) -> Option<IpAddr> {
        self.media.get(index)?.conn.or(self.conn)
    }
}

fn parse_m(value: &[u8]) -> Result<Media<'_>, SdpError> {
    // m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    let mut parts = value.split(|b| *b == b' ').filter(|p| !p.is_empty());
    let media = parts.next().ok_or(SdpError::MediaLine)?;
    let port_field = parts.next().ok_or(SdpError::MediaLine)?;
    let (port, port_count) = match port_field.iter().position(|b| *b == b'/') {
        Some(i) => (&port_field[..i], Some(&port_field[i + 1..])),
        None => (port_field, None),
    };
    let port = std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or(SdpError::MediaLine)?;
    let proto = parts.next().ok_or(SdpError::MediaLine)?;
    let fmts: SmallVec<[&[u8]; FORMATS_INLINE]> = parts.collect();
    if fmts.is_empty() {
        return Err(SdpError::MediaLine);
    }
    Ok(Media {
        media,
        port,
        port_count,
        proto,
        fmts,
        lines: SmallVec::new(),
        conn: None,
    })
}

/// `c=IN IP4 192.0.2.1` (a TTL or count suffix is ignored).
fn parse_c(value: &[u8]) -> Result<IpAddr, SdpError> {
    let addr = fields(value)
        .and_then(|mut f| in_address(&mut f))
        .ok_or(SdpError::Connection)?;
    let addr = addr.split(|b| *b == b'/').next().unwrap_or(addr);
    crate::net::parse_ip(addr).ok_or(SdpError::Connection)
}

/// The space-separated fields of an SDP value, which must be UTF-8 (RFC
/// 4566 §5).
pub(crate) fn fields(value: &[u8]) -> Option<Fields<'_>> {
    // ASCII is checked a word at a time; only other text needs the full
    // UTF-8 check.
    if !value.is_ascii() {
        std::str::from_utf8(value).ok()?;
    }
    Some(Fields(value))
}

/// The runs of non-white-space bytes of an SDP value, in order.
pub(crate) struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0;
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &rest[start..];
        let end = rest
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(rest.len());
        self.0 = &rest[end..];
        Some(&rest[..end])
    }
}

/// The address of the next three fields when they are `IN <addrtype>
/// <address>` (a connection address, RFC 4566 §5.7, as `c=` and
/// `a=rtcp` write it), as written.
pub(crate) fn in_address<'a>(fields: &mut impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    match (fields.next(), fields.next(), fields.next()) {
        (Some(b"IN"), Some(_), Some(addr)) => Some(addr),
        _ => None,
    }
}

impl Media<'_> {
    /// Value of the first `a=<name>[:value]` attribute of this section.
    pub fn attr(&self, name: &[u8]) -> Option<&[u8]> {
        self.lines
            .iter()
            .filter(|l| l.kind == b'a')
            .find_map(|l| attr_named(l.value, name))
    }

    pub fn has_attr(&self, name: &[u8]) -> bool {
        self.attr(name).is_some()
    }

    /// The encoding name of a payload type: from a=rtpmap, or the static
    /// RFC 3551 assignment; `t38` for udptl.
    pub fn encoding(&self, fmt: &[u8]) -> Option<String> {
        if self.proto.eq_ignore_ascii_case(b"udptl") {
            return Some(String::from_utf8_lossy(fmt).to_ascii_lowercase());
        }
        for l in self.lines.iter().filter(|l| l.kind == b'a') {
            if let Some(v) = attr_named(l.value, b"rtpmap")
                && let Some((pt, rest)) = split_once(v, b' ')
                && pt == fmt
            {
                let name = rest.split(|b| *b == b'/').next().unwrap_or(rest);
                return Some(String::from_utf8_lossy(name).to_ascii_lowercase());
            }
        }
        let pt: u8 = std::str::from_utf8(fmt).ok()?.parse().ok()?;
        static_encoding(pt).map(str::to_owned)
    }

    /// True for RTP-based profiles (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF...).
    pub fn is_rtp(&self) -> bool {
        self.proto
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"RTP"))
    }
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|b| *b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `name` or `name:value` -> the value (empty for a flag).
fn attr_named<'v>(attr: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    match split_once(attr, b':') {
        Some((n, v)) if n.eq_ignore_ascii_case(name) => Some(v),
        None if attr.eq_ignore_ascii_case(name) => Some(&attr[attr.len()..]),
        _ => None,
    }
}

/// RFC 3551 §6 static payload types.
fn static_encoding(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "pcmu",
        3 => "gsm",
        4 => "g723",
        5 | 6 | 16 | 17 => "dvi4",
        7 => "lpc",
        8 => "pcma",
        9 => "g722",
        10 | 11 => "l16",
        12 => "qcelp",
        13 => "cn",
        14 => "mpa",
        15 => "g728",
        18 => "g729",
        25 => "celb",
        26 => "jpeg",
        28 => "nv",
        31 => "h261",
        32 => "mpv",
        33 => "mp2t",
        34 => "h263",
        _ => return None,
    })
}

/// What one media section becomes in the rewritten SDP (the default:
/// rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Anchor {
    /// Our RTP port for this stream, or 0 to reject it (RTCP is always on
    /// the next port, so no a=rtcp is needed, RFC 3605).
    pub port: u16,
    /// Offer / accept rtcp-mux towards this side.
    pub rtcp_mux: bool,
}

/// Attributes of the other side's transport that must not cross: ICE and
/// the old a=rtcp (replaced by ours).
fn dropped_attr(attr: &[u8]) -> bool {
    const DROP: &[&[u8]] = &[
        b"rtcp",
        b"rtcp-mux",
        b"candidate",
        b"remote-candidates",
        b"ice-ufrag",
        b"ice-pwd",
        b"ice-options",
        b"ice-lite",
        b"ice-mismatch",
        b"end-of-candidates",
    ];
    let name = split_once(attr, b':').map_or(attr, |(n, _)| n);
    DROP.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// Attributes that belong to one payload type (`a=rtpmap:<pt> ...`).
fn payload_attr(attr: &[u8]) -> Option<&[u8]> {
    for name in [&b"rtpmap"[..], b"fmtp", b"rtcp-fb"] {
        if let Some(v) = attr_named(attr, name) {
            return Some(v.split(|b| *b == b' ').next().unwrap_or(v));
        }
    }
    None
}

/// Rewrites `sdp` so that every anchored stream points at `ip`: our own
/// `o=` line (`o=- <id> <version> IN IP4 <ip>`: the other side's user
/// name and session id never cross; RFC 4566 §5.2, RFC 3264 §8: the
/// version goes up when the description changes), `c=` addresses, `m=`
/// ports, no a=rtcp, no ICE. `keep` says which formats of each section
/// survive (codec filtering).
pub fn rewrite(
    sdp: &Sdp<'_>,
    ip: IpAddr,
    anchors: &[Anchor],
    keep: &dyn Fn(&Media<'_>, &[u8]) -> bool,
    origin: (u64, u64),
) -> Vec<u8> {
    let mut w = SdpWriter {
        buf: Vec::with_capacity(512),
        family: if ip.is_ipv4() { b"IP4" } else { b"IP6" },
        ip,
    };
    for l in &sdp.session {
        match l.kind {
            b'o' => w.origin(origin),
            b'c' => w.connection(),
            b'a' if dropped_attr(l.value) => {}
            _ => w.line(l.kind, l.value),
        }
    }
    for (i, m) in sdp.media.iter().enumerate() {
        let anchor = anchors.get(i).copied().unwrap_or_default();
        w.media(m, anchor, keep);
    }
    w.buf
}

/// Writes SDP lines, each `<type>=<value>` CRLF.
struct SdpWriter {
    buf: Vec<u8>,
    family: &'static [u8; 3],
    ip: IpAddr,
}

impl SdpWriter {
    fn line(&mut self, kind: u8, value: &[u8]) {
        self.buf.push(kind);
        self.buf.push(b'=');
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Our `o=` line: `- <id> <version> IN <family> <address>`.
    fn origin(&mut self, (id, version): (u64, u64)) {
        let mut n = itoa::Buffer::new();
        self.buf.extend_from_slice(b"o=- ");
        self.buf.extend_from_slice(n.format(id).as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(n.format(version).as_bytes());
        self.buf.push(b' ');
        self.address();
    }

    /// Our `c=` line.
    fn connection(&mut self) {
        self.buf.extend_from_slice(b"c=");
        self.address();
    }

    /// `IN <family> <address>` CRLF, ending an `o=` or `c=` line.
    fn address(&mut self) {
        self.buf.extend_from_slice(b"IN ");
        self.buf.extend_from_slice(self.family);
        self.buf.push(b' ');
        crate::sip::put_ip(&mut self.buf, self.ip);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// One media section: its m= line with our port and the formats kept
    /// (RFC 3264 §6: a rejected stream keeps port 0 and a format), our c=,
    /// the attributes of kept formats, rtcp-mux when accepted.
    fn media(&mut self, m: &Media<'_>, anchor: Anchor, keep: &dyn Fn(&Media<'_>, &[u8]) -> bool) {
        let kept: SmallVec<[&[u8]; 8]> = m.fmts.iter().copied().filter(|f| keep(m, f)).collect();
        let (port, fmts) = if anchor.port == 0 || kept.is_empty() {
            (0, m.fmts.iter().copied().take(1).collect())
        } else {
            (anchor.port, kept)
        };
        let b = &mut self.buf;
        b.extend_from_slice(b"m=");
        b.extend_from_slice(m.media);
        b.push(b' ');
        b.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
        if let Some(count) = m.port_count {
            b.push(b'/');
            b.extend_from_slice(count);
        }
        b.push(b' ');
        b.extend_from_slice(m.proto);
        for f in &fmts {
            b.push(b' ');
            b.extend_from_slice(f);
        }
        b.extend_from_slice(b"\r\n");
        for l in &m.lines {
            match l.kind {
                b'c' => self.connection(),
                b'a' if dropped_attr(l.value) => {}
                b'a' => {
                    if let Some(pt) = payload_attr(l.value)
                        && pt != b"*"
                        && !fmts.contains(&pt)
                    {
                        continue;
                    }
                    self.line(b'a', l.value);
                }
                _ => self.line(l.kind, l.value),
            }
        }
        if port != 0 && m.is_rtp() && anchor.rtcp_mux {
            self.line(b'a', b"rtcp-mux");
        }
    }
}

#[cfg(test)]
mod tests;
