//! The lazy, zero-copy message parser.
//!
//! [`Message::parse`] finds the start line, the header boundaries and the
//! body once, classifies header names, and keeps slices of the received
//! buffer. Header *values* are parsed only when asked for (see the typed
//! accessors in [`super::fields`]).

use smallvec::SmallVec;

use super::header::HeaderName;
use super::method::Method;
use super::scan::{is_lws, is_token, parse_decimal, trim};

/// Upper bound on header lines per message; more is treated as an attack.
pub const MAX_HEADERS: usize = 200;

/// One header line (with its folded continuation lines).
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub name: HeaderName,
    /// The name as it was written (case and compact form preserved).
    pub raw_name: &'a [u8],
    /// The value, trimmed; folded lines keep their CRLF inside.
    pub value: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: Method,
    pub method_raw: &'a [u8],
    pub uri: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub struct StatusLine<'a> {
    pub code: u16,
    pub reason: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub enum StartLine<'a> {
    Request(RequestLine<'a>),
    Response(StatusLine<'a>),
}

/// Why a message could not be parsed. Each error knows its answer: the
/// status a request gets ([`ParseError::status`]); a response is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("keepalive or empty datagram")]
    Keepalive,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("status code out of range")]
    StatusCode,
    #[error("malformed header line")]
    HeaderLine,
    #[error("header section not terminated")]
    Unterminated,
    #[error("too many headers")]
    TooManyHeaders,
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("body shorter than Content-Length")]
    Truncated,
}

impl ParseError {
    /// RFC 3261 §21.4.1 (400) and §21.5.7 (505) for requests.
    pub fn status(self) -> u16 {
        match self {
            Self::Version => 505,
            _ => 400,
        }
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Keepalive => "keepalive",
            Self::StartLine => "start_line",
            Self::Version => "version",
            Self::StatusCode => "status_code",
            Self::HeaderLine => "header_line",
            Self::Unterminated => "unterminated",
            Self::TooManyHeaders => "too_many_headers",
            Self::Duplicate(_) => "duplicate_header",
            Self::ContentLength => "content_length",
            Self::Truncated => "truncated",
        }
    }
}

/// Where one header sits in the message (offsets keep the index small, so
/// a parsed message is cheap to move).
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: HeaderName,
    name_len: u8,
    name_start: u32,
    value_start: u32,
    value_len: u32,
}

/// A parsed SIP message borrowing the buffer it was received in.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The message from its start line; header offsets index into it.
    bytes: &'a [u8],
    start: StartLine<'a>,
    entries: SmallVec<[Entry; 24]>,
    /// Index in `entries` of the first header of each known kind (u8::MAX: none).
    first: [u8; HEADER_KINDS],
    body: &'a [u8],
}

/// The headers of a message, in order.
#[derive(Debug, Clone)]
pub struct Headers<'m, 'a> {
    msg: &'m Message<'a>,
    entries: std::slice::Iter<'m, Entry>,
}

impl<'a> Iterator for Headers<'_, 'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        self.entries.next().map(|e| self.msg.view(e))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Headers<'_, '_> {}

const HEADER_KINDS: usize = HeaderName::Other as usize + 1;
const NONE: u8 = u8::MAX;

impl<'a> Message<'a> {
    /// Parses a datagram (RFC 3261 §7, §18.3: over UDP the body is bounded by
    /// Content-Length when present and trailing octets are ignored).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        parse(bytes, Mode::Strict)
    }

    /// Best-effort parse of a request that failed [`Message::parse`], so that
    /// a 400 can still be addressed (it needs Via, From, To, Call-ID, CSeq).
    /// Returns `None` for responses and for input with no usable structure.
    pub fn salvage(bytes: &'a [u8]) -> Option<Self> {
        let msg = parse(bytes, Mode::Lenient).ok()?;
        msg.is_request().then_some(msg)
    }

    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }

    pub fn request_line(&self) -> Option<&RequestLine<'a>> {
        match &self.start {
            StartLine::Request(r) => Some(r),
            StartLine::Response(_) => None,
        }
    }

    pub fn status_line(&self) -> Option<&StatusLine<'a>> {
        match &self.start {
            StartLine::Response(s) => Some(s),
            StartLine::Request(_) => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// The whole message as framed (start line to end of body).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Every header, in order.
    pub fn headers(&self) -> Headers<'_, 'a> {
        Headers {
            msg: self,
            entries: self.entries.iter(),
        }
    }

    fn view(&self, e: &Entry) -> Header<'a> {
        let bytes: &'a [u8] = self.bytes;
        let at = |start: u32, len: usize| {
            let start = start as usize;
            bytes.get(start..start + len).unwrap_or(b"")
        };
        Header {
            name: e.name,
            raw_name: at(e.name_start, usize::from(e.name_len)),
            value: at(e.value_start, e.value_len as usize),
        }
    }

    /// The first header of a known kind.
    pub fn header(&self, name: HeaderName) -> Option<Header<'a>> {
        let idx = *self.first.get(name as usize)?;
        if idx == NONE {
            return None;
        }
        self.entries.get(usize::from(idx)).map(|e| self.view(e))
    }

    /// The value of the first header of a known kind.
    pub fn value(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.header(name).map(|h| h.value)
    }

    /// Every header of a known kind, in order.
    pub fn all(&self, name: HeaderName) -> impl Iterator<Item = Header<'a>> + '_ {
        let start = match self.first.get(name as usize) {
            Some(&i) if i != NONE => usize::from(i),
            _ => self.entries.len(),
        };
        self.entries[start..]
            .iter()
            .filter(move |e| e.name == name)
            .map(|e| self.view(e))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Lenient,
}

fn parse(bytes: &[u8], mode: Mode) -> Result<Message<'_>, ParseError> {
    // RFC 3261 §7.5 / RFC 5626 §4.4.1: leading CRLFs are ignored; a datagram
    // of only CRLFs is a keepalive.
    let lead = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .ok_or(ParseError::Keepalive)?;
    let msg = &bytes[lead..];

    // RFC 3261 §7: a CR only ends a line, with its LF. One anywhere else in
    // the start line or the headers is refused: another parser (a peer's,
    // downstream) may take it for a line end, so a value copied on would
    // smuggle in a header, and the SBC's own messages must never carry one.
    let mut bare_cr = false;
    let (line, pos) = next_line(msg, 0, &mut bare_cr).ok_or(ParseError::Unterminated)?;
    let start = start_line(line, mode)?;

    let mut entries: SmallVec<[Entry; 24]> = SmallVec::new();
    let mut first = [NONE; HEADER_KINDS];
    let mut error: Option<ParseError> = None;
    let body_start = header_section(
        msg,
        pos,
        &mut bare_cr,
        (&mut entries, &mut first),
        &mut error,
    )?;

    if bare_cr {
        error = error.or(Some(ParseError::HeaderLine));
    }
    let rest = &msg[body_start..];
    let body = match framed_body(msg, rest, &entries, &first) {
        Ok(b) => b,
        Err(e) => {
            error = error.or(Some(e));
            rest
        }
    };
    if let (Some(e), Mode::Strict) = (error, mode) {
        return Err(e);
    }
    let end = body_start + body.len();
    Ok(Message {
        bytes: &msg[..end],
        start,
        entries,
        first,
        body,
    })
}

/// Reads the header lines of `msg` from `pos` into `entries` (and the
/// first of each kind into `first`), up to the empty line; returns where
/// the body starts. The first error met goes to `error` and the lines of
/// the header in error are skipped, so a lenient parse still reads the
/// rest. Only a header section without its end is an error here.
#[inline(always)]
fn header_section(
    msg: &[u8],
    mut pos: usize,
    bare_cr: &mut bool,
    (entries, first): (&mut SmallVec<[Entry; 24]>, &mut [u8; HEADER_KINDS]),
    error: &mut Option<ParseError>,
) -> Result<usize, ParseError> {
    // Offset in `msg` where the last header's value begins (after the colon).
    let mut value_start = 0usize;
    // True while the lines being read belong to a header that was rejected.
    let mut skipping = false;
    loop {
        let Some((line, next)) = next_line(msg, pos, bare_cr) else {
            return Err(ParseError::Unterminated);
        };
        if line.is_empty() {
            return Ok(next);
        }
        let line_start = line.as_ptr() as usize - msg.as_ptr() as usize;
        pos = next;
        if matches!(line[0], b' ' | b'\t') {
            // Continuation of the previous header (RFC 3261 §7.3.1 folding).
            match entries.last_mut() {
                _ if skipping => {}
                Some(e) => {
                    let (start, len) = trimmed(msg, value_start, line_start + line.len());
                    e.value_start = start;
                    e.value_len = len;
                }
                None => *error = error.or(Some(ParseError::HeaderLine)),
            }
            continue;
        }
        match header_line(msg, line, line_start, entries, first) {
            Ok(start) => {
                value_start = start;
                skipping = false;
            }
            Err(e) => {
                *error = error.or(Some(e));
                skipping = true;
            }
        }
    }
}

/// The start line; in lenient mode (salvaging a broken request to answer
/// it) a bad request line still gives its method.
#[inline]
fn start_line(line: &[u8], mode: Mode) -> Result<StartLine<'_>, ParseError> {
    match parse_start_line(line) {
        Ok(s) => Ok(s),
        Err(_) if mode == Mode::Lenient && !line.starts_with(b"SIP/") => {
            let method_raw = line.split(|b| *b == b' ').next().unwrap_or(line);
            Ok(StartLine::Request(RequestLine {
                method: Method::parse(method_raw),
                method_raw,
                uri: b"",
            }))
        }
        Err(e) => Err(e),
    }
}

/// Indexes one header line (not a continuation) that starts at
/// `line_start` in `msg`; the offset where its value starts, or why the
/// line is refused (RFC 3261 §7.3: `name HCOLON value`).
#[inline]
fn header_line(
    msg: &[u8],
    line: &[u8],
    line_start: usize,
    entries: &mut SmallVec<[Entry; 24]>,
    first: &mut [u8; HEADER_KINDS],
) -> Result<usize, ParseError> {
    // The name is a run of token bytes, then optional white space, then
    // the colon: one pass over the name, which is short.
    let name_len = line
        .iter()
        .position(|b| !is_token(*b))
        .unwrap_or(line.len());
    let colon = name_len
        + line[name_len..]
            .iter()
            .position(|b| !is_lws(*b))
            .ok_or(ParseError::HeaderLine)?;
    let raw_name = &line[..name_len];
    if line[colon] != b':' || raw_name.is_empty() || raw_name.len() > 255 {
        return Err(ParseError::HeaderLine);
    }
    if entries.len() >= MAX_HEADERS || msg.len() > u32::MAX as usize {
        return Err(ParseError::TooManyHeaders);
    }
    let name = HeaderName::parse(raw_name);
    let slot = &mut first[name as usize];
    if *slot == NONE {
        // MAX_HEADERS < u8::MAX, so the index fits.
        *slot = u8::try_from(entries.len()).unwrap_or(NONE);
    } else if name.is_single() {
        return Err(ParseError::Duplicate(name.as_str()));
    }
    let value_start = line_start + colon + 1;
    let (v_start, v_len) = trimmed(msg, value_start, line_start + line.len());
    entries.push(Entry {
        name,
        // At most 255 (checked above).
        name_len: u8::try_from(raw_name.len()).unwrap_or(u8::MAX),
        // msg.len() fits u32 (checked above).
        name_start: line_start as u32,
        value_start: v_start,
        value_len: v_len,
    });
    Ok(value_start)
}

/// The body: `rest` cut at Content-Length when there is one (RFC 3261
/// §18.3; more bytes than it says are ignored, fewer are an error).
#[inline]
fn framed_body<'m>(
    msg: &[u8],
    rest: &'m [u8],
    entries: &[Entry],
    first: &[u8; HEADER_KINDS],
) -> Result<&'m [u8], ParseError> {
    let cl_index = first[HeaderName::ContentLength as usize];
    if cl_index == NONE {
        return Ok(rest);
    }
    let declared = entries
        .get(usize::from(cl_index))
        .and_then(|e| msg.get(e.value_start as usize..(e.value_start + e.value_len) as usize))
        .and_then(parse_decimal)
        .and_then(|n| usize::try_from(n).ok());
    match declared {
        Some(n) if n <= rest.len() => Ok(&rest[..n]),
        Some(_) => Err(ParseError::Truncated),
        None => Err(ParseError::ContentLength),
    }
}

/// Offset and length of `msg[from..to]` without surrounding white space.
fn trimmed(msg: &[u8], from: usize, to: usize) -> (u32, u32) {
    let slice = msg.get(from..to).unwrap_or(b"");
    let t = trim(slice);
    let start = from + (t.as_ptr() as usize - slice.as_ptr() as usize).min(slice.len());
    // Messages longer than u32::MAX are refused before indexing.
    (start as u32, t.len() as u32)
}

/// Returns the line starting at `pos` (without its CR LF or bare LF) and the
/// position after it, or `None` if no line terminator follows. A CR not
/// followed by LF stays in the line and sets `bare_cr`.
fn next_line<'b>(buf: &'b [u8], pos: usize, bare_cr: &mut bool) -> Option<(&'b [u8], usize)> {
    let rest = buf.get(pos..)?;
    let mut from = 0;
    loop {
        let i = from + super::scan::find_line_break(rest.get(from..)?)?;
        match rest.get(i) {
            Some(b'\n') => return Some((&rest[..i], pos + i + 1)),
            Some(b'\r') if rest.get(i + 1) == Some(&b'\n') => {
                return Some((&rest[..i], pos + i + 2));
            }
            Some(b'\r') => *bare_cr = true,
            // HTAB, NUL or another control byte below CR: part of the line.
            _ => {}
        }
        from = i + 1;
    }
}

fn parse_start_line(line: &[u8]) -> Result<StartLine<'_>, ParseError> {
    if let Some(rest) = strip_version(line) {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2)
        let rest = rest.strip_prefix(b" ").ok_or(ParseError::StartLine)?;
        let code = rest.get(..3).ok_or(ParseError::StatusCode)?;
        let code = parse_decimal(code)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c))
            .ok_or(ParseError::StatusCode)?;
        let reason = match &rest[3..] {
            [] => &rest[3..],
            [b' ', reason @ ..] => reason,
            _ => return Err(ParseError::StatusCode),
        };
        return Ok(StartLine::Response(StatusLine { code, reason }));
    }
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseError::Version);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (§7.1). Exactly one
    // SP between elements; RFC 4475 §3.1.2.9/§3.1.2.10 allow rejecting more.
    let mut parts = line.split(|b| *b == b' ');
    let method_raw = parts.next().ok_or(ParseError::StartLine)?;
    let uri = parts.next().ok_or(ParseError::StartLine)?;
    let version = parts.next().ok_or(ParseError::StartLine)?;
    if parts.next().is_some()
        || method_raw.is_empty()
        || !method_raw.iter().all(|b| is_token(*b))
        || uri.is_empty()
        || !uri.iter().all(|b| b.is_ascii_graphic())
        || uri.first() == Some(&b'<')
    {
        return Err(ParseError::StartLine);
    }
    match strip_version(version) {
        Some([]) => {}
        Some(_) => return Err(ParseError::StartLine),
        None if version.len() >= 4 && version[..4].eq_ignore_ascii_case(b"SIP/") => {
            return Err(ParseError::Version);
        }
        None => return Err(ParseError::StartLine),
    }
    Ok(StartLine::Request(RequestLine {
        method: Method::parse(method_raw),
        method_raw,
        uri,
    }))
}

/// Strips a leading "SIP/2.0" (case-insensitive, RFC 3261 §7.1).
fn strip_version(s: &[u8]) -> Option<&[u8]> {
    let v = s.get(..7)?;
    v.eq_ignore_ascii_case(b"SIP/2.0").then(|| &s[7..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/UDP b.example;branch=z9hG4bK2\r\n\
VIA: SIP/2.0/UDP c.example;branch=z9hG4bK3\r\n\
f: <sip:alice@example.com>;tag=1\r\n\
t: <sip:bob@example.com>\r\n\
i: abc@example.com\r\n\
CSeq: 1 INVITE\r\n\
Subject: folded\r\n  across\r\n\tlines\r\n\
l: 4\r\n\
\r\n\
bodyTRAILING";

    #[test]
    fn compact_forms_case_and_repeated_headers() {
        // RFC 3261 §7.3.1 (case), §7.3.3 (compact forms), §7.3.1 (repeats).
        let m = Message::parse(BASIC).unwrap();
        assert_eq!(m.value(HeaderName::CallId), Some(&b"abc@example.com"[..]));
        assert_eq!(m.header(HeaderName::From).unwrap().raw_name, b"f");
        let vias: Vec<_> = m.all(HeaderName::Via).collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[1].raw_name, b"VIA");
        let values: Vec<_> = crate::sip::via_values(vias[0].value).collect();
        assert_eq!(values.len(), 2, "comma-separated values in one line");
        assert_eq!(m.headers().len(), 8);
    }

    #[test]
    fn folded_lines_are_one_value() {
        // RFC 3261 §7.3.1: a line starting with white space continues the
        // previous header.
        let m = Message::parse(BASIC).unwrap();
        let subject = m.headers().find(|h| h.raw_name == b"Subject").unwrap();
        assert_eq!(subject.value, b"folded\r\n  across\r\n\tlines");
        let mut out = bytes::BytesMut::new();
        crate::sip::put_unfolded(&mut out, subject.value);
        assert_eq!(&out[..], b"folded across lines");
    }

    #[test]
    fn a_cr_that_ends_no_line_is_refused() {
        // RFC 3261 §7: CR only as part of CRLF. Anywhere else in the start
        // line or a header (one parser's character is another's line end)
        // the message is malformed; in the body it is the body's business.
        for bad in [
            &b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\rX-Smuggled: y\r\n\r\n"[..],
            b"OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n \rb\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\r\n\r\n",
        ] {
            assert_eq!(
                Message::parse(bad).unwrap_err(),
                ParseError::HeaderLine,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // In the start line it is a malformed start line.
        let e = Message::parse(b"OPTIONS sip:x\r SIP/2.0\r\nCall-ID: 1\r\n\r\n").unwrap_err();
        assert_eq!(e, ParseError::StartLine);
        let e = Message::parse(b"OPTIONS sip:x\rp SIP/2.0\r\nCall-ID: 1\r\n\r\n").unwrap_err();
        assert_eq!(e, ParseError::StartLine);
        // CRLF, bare LF line ends, folding and a CR in the body are fine.
        let ok =
            Message::parse(b"OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n b\nCall-ID: 1\r\n\r\nbo\rdy")
                .unwrap();
        assert_eq!(ok.body(), b"bo\rdy");
    }

    #[test]
    fn content_length_frames_the_body() {
        // RFC 3261 §18.3: octets beyond Content-Length are ignored on UDP.
        let m = Message::parse(BASIC).unwrap();
        assert_eq!(m.body(), b"body");
        assert!(m.as_bytes().ends_with(b"\r\n\r\nbody"));
        // Without Content-Length the datagram's rest is the body.
        let m = Message::parse(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\nrest").unwrap();
        assert_eq!(m.body(), b"rest");
        // Longer than what arrived: refused.
        let e = Message::parse(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nshort")
            .unwrap_err();
        assert_eq!(e, ParseError::Truncated);
        let e = Message::parse(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n").unwrap_err();
        assert_eq!(e, ParseError::ContentLength);
    }

    #[test]
    fn keepalives_leading_crlf_and_bare_lf() {
        assert_eq!(
            Message::parse(b"\r\n\r\n").unwrap_err(),
            ParseError::Keepalive
        );
        let m = Message::parse(b"\r\n\r\nOPTIONS sip:x SIP/2.0\nCall-ID: 1\n\n").unwrap();
        assert_eq!(m.value(HeaderName::CallId), Some(&b"1"[..]));
    }

    #[test]
    fn white_space_before_colon_and_unknown_methods() {
        let m = Message::parse(b"NEWMETHOD sip:x SIP/2.0\r\nCall-ID  :   x1  \r\nX-Odd:\r\n\r\n")
            .unwrap();
        assert_eq!(m.value(HeaderName::CallId), Some(&b"x1"[..]));
        let line = m.request_line().unwrap();
        assert_eq!(line.method, Method::Other);
        assert_eq!(line.method_raw, b"NEWMETHOD");
        assert_eq!(m.headers().nth(1).unwrap().value, b"");
    }

    #[test]
    fn responses_with_odd_reasons_and_bad_codes() {
        let m = Message::parse(b"SIP/2.0 100 \r\nCall-ID: 1\r\n\r\n").unwrap();
        assert_eq!(m.status_line().unwrap().code, 100);
        let m = Message::parse(b"SIP/2.0 200\r\nCall-ID: 1\r\n\r\n").unwrap();
        assert_eq!(m.status_line().unwrap().reason, b"");
        assert_eq!(
            Message::parse(b"SIP/2.0 99 x\r\n\r\n").unwrap_err(),
            ParseError::StatusCode
        );
        assert_eq!(
            Message::parse(b"SIP/2.0 700 x\r\n\r\n").unwrap_err(),
            ParseError::StatusCode
        );
        assert_eq!(
            Message::parse(b"SIP/3.0 200 x\r\n\r\n").unwrap_err(),
            ParseError::Version
        );
        assert_eq!(
            Message::parse(b"INVITE sip:x SIP/7.0\r\n\r\n").unwrap_err(),
            ParseError::Version
        );
    }

    #[test]
    fn structural_errors_and_salvage() {
        let dup = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\ni: 2\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(
            Message::parse(dup).unwrap_err(),
            ParseError::Duplicate("Call-ID")
        );
        // The salvaged message keeps the first value, enough to answer 400.
        let s = Message::salvage(dup).unwrap();
        assert_eq!(s.value(HeaderName::CallId), Some(&b"1"[..]));
        assert_eq!(
            Message::parse(b"OPTIONS sip:x SIP/2.0\r\nno colon here\r\n\r\n").unwrap_err(),
            ParseError::HeaderLine
        );
        assert_eq!(
            Message::parse(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n").unwrap_err(),
            ParseError::Unterminated
        );
        assert!(
            Message::salvage(b"SIP/2.0 200 OK\r\nCall-ID: 1\r\nCall-ID: 2\r\n\r\n").is_none(),
            "never answer a response"
        );
        let many: Vec<u8> = std::iter::once(&b"OPTIONS sip:x SIP/2.0\r\n"[..])
            .chain(std::iter::repeat_n(&b"X-A: 1\r\n"[..], MAX_HEADERS + 1))
            .chain(std::iter::once(&b"\r\n"[..]))
            .flatten()
            .copied()
            .collect();
        assert_eq!(
            Message::parse(&many).unwrap_err(),
            ParseError::TooManyHeaders
        );
    }

    #[test]
    fn request_line_must_be_well_formed() {
        for bad in [
            &b"INVITE  sip:x SIP/2.0\r\n\r\n"[..],
            b"INVITE sip:x SIP/2.0 \r\n\r\n",
            b"INVITE <sip:x> SIP/2.0\r\n\r\n",
            b"INVITE sip:x\r\n\r\n",
            b"INV(TE sip:x SIP/2.0\r\n\r\n",
        ] {
            assert_eq!(
                Message::parse(bad).unwrap_err(),
                ParseError::StartLine,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
