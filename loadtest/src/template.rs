//! Message templates: the text of a `<send>` with its `[keywords]`,
//! compiled once per scenario and rendered per message.
//!
//! Text handling follows SIPp: every line is stripped of its leading
//! blanks, leading and trailing blank lines go, the first empty line
//! separates the headers from the body, line ends become CRLF, a header
//! line that renders empty (`[routes]` with no route set, `[last_X:]` of a
//! header the last message did not have) is left out, and `[len]` is the
//! length of the rendered body, right-aligned in five columns as SIPp
//! writes it (`Content-Length:   129`).

use std::fmt;

use sbc_core::sip::HeaderName;

use crate::scenario::VarId;
use crate::srtp::Suite;

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown keyword [{0}]")]
    UnknownKeyword(String),
    #[error("unterminated keyword starting with [{0}")]
    Unterminated(String),
    #[error("keyword [{0}]: {1}")]
    BadArgument(String, &'static str),
    #[error("keyword [{0}]: {1}")]
    Injection(String, String),
    #[error("[len] is only allowed in the header part")]
    LenInBody,
    #[error("the message is empty")]
    Empty,
}

/// A `[keyword]` and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Keyword {
    CallId,
    CallNumber,
    /// `[branch]`, `[branch-N]`: the branch of the message N steps back
    /// (SIPp numbers branches by the index of the message sent).
    Branch(i64),
    /// `[cseq]`, `[cseq+N]`, `[cseq-N]`.
    Cseq(i64),
    /// `[len]`, `[len+N]`: the body's length (plus N).
    Len(i64),
    /// `[last_Name:]` (whole header lines) or `[last_Name:value]`.
    Last(LastHeader),
    /// `[last_Request_URI]`: the Request-URI of the last request received.
    LastRequestUri,
    /// `[last_cseq_number]`: the number in the last message's CSeq
    /// (plus an offset).
    LastCseqNumber(i64),
    /// `[last_message]`: the last message received, whole.
    LastMessage,
    PeerTagParam,
    Routes,
    NextUrl,
    LocalIp,
    LocalIpType,
    LocalPort(i64),
    RemoteIp,
    /// `[remote_host]`: the remote host as the command line names it.
    RemoteHost,
    RemoteIpType,
    RemotePort(i64),
    /// `[server_ip]`: the address the SIP socket is bound to.
    ServerIp,
    Transport,
    MediaIp,
    MediaIpType,
    /// `[media_port]`, `[media_port+N]`.
    MediaPort(i64),
    /// `[auto_media_port]`, `[auto_media_port+N]`: a port pair per call.
    AutoMediaPort(i64),
    Service,
    Pid,
    /// `[dynamic_id]`: SIPp's wrapping counter (`-dynamicStart`,
    /// `-dynamicMax`, `-dynamicStep`), stepped at each use.
    DynamicId,
    /// `[msg_index]`: the index of the message in the scenario.
    MsgIndex,
    /// `[clock_tick]`: milliseconds since the run started.
    ClockTick,
    /// `[users]`: `-users`.
    Users,
    /// `[userid]`: the call's user (with `-users`), else 0.
    UserId,
    /// `[timestamp]`: the wall clock as SIPp's statistics write it.
    Timestamp,
    /// `[date]`: the wall clock as an HTTP/SIP date (GMT).
    Date,
    /// `[sipp_version]`: sbc-load's version.
    SippVersion,
    /// `[tdmmap]`: the call's TDM circuit (`-tdmmap`), `x.h.y/z`.
    TdmMap,
    /// `[file name="..."]`: the contents of the file (its name may hold
    /// keywords).
    File(Box<Template>),
    /// `[fill text="..." variable="v"]`: the text repeated to v's length.
    Fill {
        text: Vec<u8>,
        var: VarId,
    },
    Authentication {
        username: Option<Vec<u8>>,
        password: Option<Vec<u8>>,
    },
    /// `[fieldN]`, `[fieldN file="name" line="..."]`: field N of an
    /// injection file (an index into the run's `-inf` files) on the
    /// call's line, or on the line `line` renders to.
    Field {
        field: usize,
        file: usize,
        line: Option<Box<Template>>,
    },
    /// `[$name]`.
    Var(VarId),
    /// `[cryptotag1audio]`, `[cryptotag2video]`: an SDP crypto line's tag
    /// (SIPp's lines are 1 and 2).
    CryptoTag(u8),
    /// `[cryptosuiteaescm128sha1801audio]` and the like: a suite's name.
    CryptoSuite(Suite),
    /// `[cryptokeyparams1audio]`: a fresh master key and salt for that
    /// line (base64); with a negative offset (`[cryptokeyparams1audio-9]`)
    /// the one the call's last SDP gave it.
    CryptoKey {
        video: bool,
        line: u8,
        reuse: bool,
    },
    /// `[ueaescm128sha1801audio]` and the like: `UNENCRYPTED_SRTP`.
    Unencrypted,
}

/// SIPp's SRTP keywords: `crypto{tag,keyparams}N{audio,video}`,
/// `cryptosuite{aescm128sha1,nullsha1}{80,32}N{audio,video}` and
/// `ueaescm128sha1{80,32}N{audio,video}` (N: 1 or 2).
fn sdes_keyword(base: &str, off: i64) -> Option<Keyword> {
    let (rest, video) = match base.strip_suffix("audio") {
        Some(r) => (r, false),
        None => (base.strip_suffix("video")?, true),
    };
    let (rest, line) = match rest.strip_suffix('1') {
        Some(r) => (r, 1),
        None => (rest.strip_suffix('2')?, 2),
    };
    let suite = |name: &str| match name {
        "aescm128sha180" => Some(Suite::AesCm128HmacSha1_80),
        "aescm128sha132" => Some(Suite::AesCm128HmacSha1_32),
        "nullsha180" => Some(Suite::NullHmacSha1_80),
        "nullsha132" => Some(Suite::NullHmacSha1_32),
        _ => None,
    };
    match rest {
        "cryptotag" => Some(Keyword::CryptoTag(line)),
        "cryptokeyparams" => Some(Keyword::CryptoKey {
            video,
            line,
            reuse: off < 0,
        }),
        _ => {
            if let Some(name) = rest.strip_prefix("cryptosuite") {
                return suite(name).map(Keyword::CryptoSuite);
            }
            let name = rest.strip_prefix("ue")?;
            suite(name)
                .filter(|_| name.starts_with("aescm"))
                .map(|_| Keyword::Unencrypted)
        }
    }
}

/// Which header a `[last_*]` keyword copies.
#[derive(Debug, Clone, PartialEq)]
pub struct LastHeader {
    /// The name as the scenario writes it (used in the output line).
    pub display: Vec<u8>,
    pub kind: HeaderName,
    /// `[last_X:value]`: the values only, without the name.
    pub value_only: bool,
}

impl LastHeader {
    /// Whether a received header is the one asked for.
    pub fn matches(&self, name: HeaderName, raw_name: &[u8]) -> bool {
        if self.kind == HeaderName::Other {
            name == HeaderName::Other && raw_name.eq_ignore_ascii_case(&self.display)
        } else {
            name == self.kind
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(Vec<u8>),
    Kw(Keyword),
}

/// A compiled message.
#[derive(Clone, PartialEq)]
pub struct Template {
    head: Vec<Vec<Part>>,
    body: Vec<Vec<Part>>,
    /// The method if the start line is a request with a literal method.
    method: Option<Vec<u8>>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("head_lines", &self.head.len())
            .field("body_lines", &self.body.len())
            .field(
                "method",
                &self.method.as_deref().map(String::from_utf8_lossy),
            )
            .finish()
    }
}

/// Maps a `[$name]` to its variable id (declaring it when new), and
/// names the generic keywords (`-key NAME VALUE`).
pub trait VarTable {
    fn var(&mut self, name: &str) -> VarId;
    fn generic(&self, _name: &str) -> Option<&str> {
        None
    }
    /// The `-inf` file `[fieldN file=name]` reads (the first without a
    /// name).
    fn inf_file(&self, name: Option<&str>) -> Result<usize, String> {
        match name {
            None => Ok(0),
            Some(n) => Err(format!("no -inf file is named {n}")),
        }
    }
}

impl Template {
    /// Compiles the text of a `<send>` (or an `assignstr` value when
    /// `single_line`).
    pub fn compile(text: &str, vars: &mut dyn VarTable) -> Result<Self, TemplateError> {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim_start_matches([' ', '\t']).trim_end_matches(['\r']))
            .collect();
        let first = lines.iter().position(|l| !l.trim().is_empty());
        let last = lines.iter().rposition(|l| !l.trim().is_empty());
        let (Some(first), Some(last)) = (first, last) else {
            return Err(TemplateError::Empty);
        };
        let lines = &lines[first..=last];
        let split = lines.iter().position(|l| l.trim().is_empty());
        let (head, body) = match split {
            Some(i) => (&lines[..i], &lines[i + 1..]),
            None => (lines, &[][..]),
        };
        let mut t = Template {
            head: Vec::with_capacity(head.len()),
            body: Vec::with_capacity(body.len()),
            method: None,
        };
        for l in head {
            t.head.push(parse_line(l.trim_end(), vars)?);
        }
        for l in body {
            let parts = parse_line(l.trim_end(), vars)?;
            if parts.iter().any(|p| matches!(p, Part::Kw(Keyword::Len(_)))) {
                return Err(TemplateError::LenInBody);
            }
            t.body.push(parts);
        }
        if let Some(Part::Lit(first)) = t.head.first().and_then(|l| l.first())
            && !first.starts_with(b"SIP/")
        {
            let end = first.iter().position(|&b| b == b' ').unwrap_or(first.len());
            t.method = Some(first[..end].to_vec());
        }
        Ok(t)
    }

    /// Compiles a one-line value (keywords allowed), e.g. `assignstr`.
    pub fn compile_value(text: &str, vars: &mut dyn VarTable) -> Result<Self, TemplateError> {
        Ok(Template {
            head: vec![parse_line(text, vars)?],
            body: Vec::new(),
            method: None,
        })
    }

    /// The text of a template without keywords.
    pub fn literal(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for part in self.head.iter().chain(self.body.iter()).flatten() {
            match part {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Kw(_) => return None,
            }
        }
        Some(out)
    }

    /// The status code, when the start line is a response's.
    pub fn status(&self) -> Option<u16> {
        let Some(Part::Lit(first)) = self.head.first().and_then(|l| l.first()) else {
            return None;
        };
        let rest = first.strip_prefix(b"SIP/2.0 ")?;
        std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
    }

    /// The request method, when the start line names one literally.
    pub fn method(&self) -> Option<&[u8]> {
        self.method.as_deref()
    }

    /// Every keyword, in order.
    pub fn keywords(&self) -> impl Iterator<Item = &Keyword> {
        self.head
            .iter()
            .chain(self.body.iter())
            .flatten()
            .filter_map(|p| match p {
                Part::Kw(k) => Some(k),
                Part::Lit(_) => None,
            })
    }

    /// Renders the message into `out` (appended). `value` writes a
    /// keyword's value; it sees what was rendered before it (the start line
    /// is there for `[authentication]`).
    pub fn render<F>(&self, out: &mut Vec<u8>, mut value: F)
    where
        F: FnMut(&Keyword, &mut Vec<u8>),
    {
        let mut len_at: Vec<(usize, i64)> = Vec::new();
        for line in &self.head {
            let line_start = out.len();
            for part in line {
                match part {
                    Part::Lit(l) => out.extend_from_slice(l),
                    Part::Kw(Keyword::Len(off)) => len_at.push((out.len(), *off)),
                    Part::Kw(k) => value(k, out),
                }
            }
            if out.len() == line_start && !line.is_empty() {
                len_at.retain(|&(p, _)| p < line_start);
                continue;
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let body_start = out.len();
        for line in &self.body {
            for part in line {
                match part {
                    Part::Lit(l) => out.extend_from_slice(l),
                    Part::Kw(k) => value(k, out),
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        if !len_at.is_empty() {
            // SIPp writes the length right-aligned in five columns.
            let len = (out.len() - body_start) as i64;
            for &(at, off) in len_at.iter().rev() {
                let digits = format!("{:>5}", len + off);
                out.splice(at..at, digits.bytes());
            }
        }
    }

    /// Renders a one-line value (no CRLF added).
    pub fn render_value<F>(&self, out: &mut Vec<u8>, mut value: F)
    where
        F: FnMut(&Keyword, &mut Vec<u8>),
    {
        for line in &self.head {
            for part in line {
                match part {
                    Part::Lit(l) => out.extend_from_slice(l),
                    Part::Kw(k) => value(k, out),
                }
            }
        }
    }
}

fn parse_line(line: &str, vars: &mut dyn VarTable) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // As SIPp: `\xHH` writes that byte (`\x5B` a `[` that starts no
            // keyword); with one hex digit the character after it goes too.
            b'\\' if bytes.get(i + 1) == Some(&b'x') => {
                i += 2;
                if let Some(hi) = bytes.get(i).and_then(|&b| hex_digit(b)) {
                    i += 1;
                    let lo = bytes.get(i).and_then(|&b| hex_digit(b));
                    lit.push(lo.map_or(hi, |lo| (hi << 4) | lo));
                }
                i += 1;
            }
            b'[' => {
                let rest = &line[i + 1..];
                let close = quoted_find(rest, b']');
                // A `[` before the `]` makes this one literal text.
                if let Some(open) = quoted_find(rest, b'[')
                    && close.is_none_or(|c| open < c)
                {
                    lit.extend_from_slice(&bytes[i..=i + open]);
                    i += open + 1;
                    continue;
                }
                let Some(close) = close else {
                    return Err(TemplateError::Unterminated(rest.chars().take(20).collect()));
                };
                let inner = &rest[..close];
                match parse_keyword(inner, vars)? {
                    Part::Lit(l) => lit.extend_from_slice(&l),
                    kw => {
                        if !lit.is_empty() {
                            parts.push(Part::Lit(std::mem::take(&mut lit)));
                        }
                        parts.push(kw);
                    }
                }
                i += close + 2;
            }
            b => {
                lit.push(b);
                i += 1;
            }
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The position of `c` in `s`, skipping double-quoted text (a keyword's
/// `file="a]b"` argument), as SIPp finds a keyword's end.
fn quoted_find(s: &str, c: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == c {
            return Some(i);
        }
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
        }
        i += 1;
    }
    None
}

/// Splits SIPp's `+N`/`-N` offset off a keyword (`[cseq+1]`,
/// `[remote_port-2]`); keywords without one get 0.
fn split_offset(inner: &str) -> (&str, i64) {
    if inner.starts_with("authentication") || inner.starts_with("tdmmap") {
        return (inner, 0);
    }
    let Some(at) = inner.rfind(['+', '-']) else {
        return (inner, 0);
    };
    let digits = &inner[at + 1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (inner, 0);
    }
    match digits.parse::<i64>() {
        Ok(n) if inner.as_bytes()[at] == b'-' => (&inner[..at], -n),
        Ok(n) => (&inner[..at], n),
        Err(_) => (inner, 0),
    }
}

/// The value of a keyword argument written `name=value` or
/// `name="value"` (SIPp's `getKeywordParam`).
fn keyword_param<'a>(inner: &'a str, name: &str) -> Option<&'a str> {
    let at = inner.find(name)?;
    let v = &inner[at + name.len()..];
    if let Some(q) = v.strip_prefix('"') {
        return Some(q.find('"').map_or(q, |e| &q[..e]));
    }
    Some(v.find([' ', ']']).map_or(v, |e| &v[..e]))
}

fn parse_keyword(whole: &str, vars: &mut dyn VarTable) -> Result<Part, TemplateError> {
    let unknown = || TemplateError::UnknownKeyword(whole.to_string());
    let kw = |k| Ok(Part::Kw(k));
    if let Some(name) = whole.strip_prefix('$') {
        if name.is_empty() {
            return Err(unknown());
        }
        return kw(Keyword::Var(vars.var(name)));
    }
    if let Some(rest) = whole.strip_prefix("last_") {
        let (base, off) = split_offset(whole);
        return kw(match (rest, base) {
            ("Request_URI", _) => Keyword::LastRequestUri,
            ("message", _) => Keyword::LastMessage,
            (_, "last_cseq_number") => Keyword::LastCseqNumber(off),
            _ => {
                let (name, value_only) = match rest.split_once(':') {
                    Some((n, "")) => (n, false),
                    Some((n, "value")) => (n, true),
                    Some(_) => {
                        return Err(TemplateError::BadArgument(
                            whole.to_string(),
                            "only [last_Name:] and [last_Name:value] are supported",
                        ));
                    }
                    None => (rest, false),
                };
                if name.is_empty() {
                    return Err(unknown());
                }
                Keyword::Last(LastHeader {
                    display: name.as_bytes().to_vec(),
                    kind: HeaderName::parse(name.as_bytes()),
                    value_only,
                })
            }
        });
    }
    if let Some(rest) = whole.strip_prefix("authentication") {
        let mut username = None;
        let mut password = None;
        for arg in rest.split_whitespace() {
            match arg.split_once('=') {
                Some(("username", v)) => username = Some(v.as_bytes().to_vec()),
                Some(("password", v)) => password = Some(v.as_bytes().to_vec()),
                _ => {
                    return Err(TemplateError::BadArgument(
                        whole.to_string(),
                        "arguments are username=... and password=...",
                    ));
                }
            }
        }
        return kw(Keyword::Authentication { username, password });
    }
    let (name, args) = whole.split_once(' ').unwrap_or((whole, ""));
    if let Some(n) = name.strip_prefix("field") {
        let field = n.parse().map_err(|_| unknown())?;
        let file = vars
            .inf_file(keyword_param(args, "file="))
            .map_err(|e| TemplateError::Injection(whole.to_string(), e))?;
        let line = match keyword_param(args, "line=") {
            Some(l) => Some(Box::new(Template::compile_value(l, vars)?)),
            None => None,
        };
        return kw(Keyword::Field { field, file, line });
    }
    if name == "file" {
        let Some(file) = keyword_param(args, "name=").filter(|f| !f.is_empty()) else {
            return Err(TemplateError::BadArgument(
                whole.to_string(),
                "name= gives the file",
            ));
        };
        return kw(Keyword::File(Box::new(Template::compile_value(
            file, vars,
        )?)));
    }
    if name == "fill" {
        let text = keyword_param(args, "text=")
            .filter(|t| !t.is_empty())
            .unwrap_or("X");
        let var = keyword_param(args, "variable=").unwrap_or("");
        return kw(Keyword::Fill {
            text: text.as_bytes().to_vec(),
            var: vars.var(var),
        });
    }
    let (base, off) = split_offset(whole);
    if let Some(k) = sdes_keyword(base, off) {
        return Ok(Part::Kw(k));
    }
    Ok(Part::Kw(match base {
        "call_id" => Keyword::CallId,
        "call_number" => Keyword::CallNumber,
        "branch" => Keyword::Branch(off),
        "cseq" => Keyword::Cseq(off),
        "len" => Keyword::Len(off),
        "peer_tag_param" => Keyword::PeerTagParam,
        "routes" => Keyword::Routes,
        "next_url" => Keyword::NextUrl,
        "local_ip" => Keyword::LocalIp,
        "local_ip_type" => Keyword::LocalIpType,
        "local_port" => Keyword::LocalPort(off),
        "remote_ip" => Keyword::RemoteIp,
        "remote_host" => Keyword::RemoteHost,
        "remote_ip_type" => Keyword::RemoteIpType,
        "remote_port" => Keyword::RemotePort(off),
        "server_ip" => Keyword::ServerIp,
        "transport" => Keyword::Transport,
        "media_ip" => Keyword::MediaIp,
        "media_ip_type" => Keyword::MediaIpType,
        "media_port" => Keyword::MediaPort(off),
        "auto_media_port" => Keyword::AutoMediaPort(off),
        "rtpstream_audio_port" => Keyword::AutoMediaPort(off),
        "rtpstream_video_port" => Keyword::AutoMediaPort(off + 2),
        "service" => Keyword::Service,
        "pid" => Keyword::Pid,
        "dynamic_id" => Keyword::DynamicId,
        "msg_index" => Keyword::MsgIndex,
        "clock_tick" => Keyword::ClockTick,
        "users" => Keyword::Users,
        "userid" => Keyword::UserId,
        "timestamp" => Keyword::Timestamp,
        "date" => Keyword::Date,
        "sipp_version" => Keyword::SippVersion,
        "tdmmap" => Keyword::TdmMap,
        // A -key value, last as in SIPp (built-in names win).
        _ => {
            return match vars.generic(base) {
                Some(v) => Ok(Part::Lit(v.as_bytes().to_vec())),
                None => Err(unknown()),
            };
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[derive(Default)]
    struct Vars(Vec<String>);

    impl VarTable for Vars {
        fn var(&mut self, name: &str) -> VarId {
            if let Some(i) = self.0.iter().position(|v| v == name) {
                return VarId(i as u16);
            }
            self.0.push(name.to_string());
            VarId(self.0.len() as u16 - 1)
        }
    }

    fn render(t: &Template, f: impl FnMut(&Keyword, &mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        t.render(&mut out, f);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn indentation_blank_lines_and_crlf() {
        let text = "\n\n      OPTIONS sip:x SIP/2.0\n      Call-ID: [call_id]\n      Content-Length: 0\n\n    ";
        let t = Template::compile(text, &mut Vars::default()).unwrap();
        assert_eq!(t.method(), Some(&b"OPTIONS"[..]));
        let s = render(&t, |k, out| {
            assert_eq!(k, &Keyword::CallId);
            out.extend_from_slice(b"1-2@h");
        });
        assert_eq!(
            s,
            "OPTIONS sip:x SIP/2.0\r\nCall-ID: 1-2@h\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn len_counts_the_rendered_body() {
        let text = "INVITE sip:x SIP/2.0\nContent-Length: [len]\n\nv=0\nc=IN IP4 [media_ip]\n";
        let t = Template::compile(text, &mut Vars::default()).unwrap();
        let s = render(&t, |k, out| {
            assert_eq!(k, &Keyword::MediaIp);
            out.extend_from_slice(b"10.0.0.1");
        });
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "v=0\r\nc=IN IP4 10.0.0.1\r\n");
        assert!(head.ends_with(&format!("Content-Length: {:>5}", body.len())));
    }

    #[test]
    fn empty_header_lines_are_dropped() {
        let text = "BYE [next_url] SIP/2.0\n[routes]\nMax-Forwards: 70\n";
        let t = Template::compile(text, &mut Vars::default()).unwrap();
        let s = render(&t, |k, out| {
            if *k == Keyword::NextUrl {
                out.extend_from_slice(b"sip:a@b");
            }
        });
        assert_eq!(s, "BYE sip:a@b SIP/2.0\r\nMax-Forwards: 70\r\n\r\n");
    }

    #[test]
    fn keywords_parse_with_arguments() {
        let mut vars = Vars::default();
        let text = "X [branch-3] [cseq+1] [media_port+2] [field1] [$v] [last_Via:] [last_To:value] [authentication username=a password=b]";
        let t = Template::compile(text, &mut vars).unwrap();
        let kws: Vec<_> = t.keywords().cloned().collect();
        assert_eq!(kws[0], Keyword::Branch(-3));
        assert_eq!(kws[1], Keyword::Cseq(1));
        assert_eq!(kws[2], Keyword::MediaPort(2));
        assert_eq!(
            kws[3],
            Keyword::Field {
                field: 1,
                file: 0,
                line: None
            }
        );
        assert_eq!(kws[4], Keyword::Var(VarId(0)));
        match &kws[5] {
            Keyword::Last(l) => assert!(l.kind == HeaderName::Via && !l.value_only),
            k => panic!("{k:?}"),
        }
        match &kws[6] {
            Keyword::Last(l) => assert!(l.kind == HeaderName::To && l.value_only),
            k => panic!("{k:?}"),
        }
        assert_eq!(
            kws[7],
            Keyword::Authentication {
                username: Some(b"a".to_vec()),
                password: Some(b"b".to_vec())
            }
        );
    }

    /// A table with generic keywords and one injection file.
    struct Ctx(Vars);

    impl VarTable for Ctx {
        fn var(&mut self, name: &str) -> VarId {
            self.0.var(name)
        }
        fn generic(&self, name: &str) -> Option<&str> {
            (name == "host").then_some("sbc.example")
        }
        fn inf_file(&self, name: Option<&str>) -> Result<usize, String> {
            match name {
                None | Some("a.csv") => Ok(0),
                Some("b.csv") => Ok(1),
                Some(n) => Err(format!("no {n}")),
            }
        }
    }

    #[test]
    fn sipp_syntax_escapes_offsets_and_arguments() {
        let mut ctx = Ctx(Vars::default());
        // \xHH, a `[` before the `]` is text, -key values are literals.
        let t = Template::compile("X \\x5Bnot\\x5D [[call_id] [host] [users-2]", &mut ctx).unwrap();
        let s = render(&t, |k, out| match k {
            Keyword::CallId => out.extend_from_slice(b"id"),
            Keyword::Users => out.extend_from_slice(b"U"),
            k => panic!("{k:?}"),
        });
        assert_eq!(s, "X [not] [id sbc.example U\r\n\r\n");
        let t = Template::compile_value(
            "[remote_port+2][local_port-1][last_cseq_number+1][branch+1][len+3]",
            &mut ctx,
        )
        .unwrap();
        let kws: Vec<_> = t.keywords().cloned().collect();
        assert_eq!(
            kws,
            [
                Keyword::RemotePort(2),
                Keyword::LocalPort(-1),
                Keyword::LastCseqNumber(1),
                Keyword::Branch(1),
                Keyword::Len(3)
            ]
        );
        let t = Template::compile_value(
            r#"[field2 file="b.csv" line="[$n]"][file name="x-[$n].txt"][fill text="ab" variable=n][field0 file="users-2.csv"]"#,
            &mut ctx,
        );
        assert!(matches!(t, Err(TemplateError::Injection(..))), "{t:?}");
        let t = Template::compile_value(
            r#"[field2 file="b.csv" line="[$n]"][file name="x-[$n].txt"][fill text="ab" variable=n]"#,
            &mut ctx,
        )
        .unwrap();
        let kws: Vec<_> = t.keywords().cloned().collect();
        match &kws[0] {
            Keyword::Field {
                field: 2,
                file: 1,
                line: Some(l),
            } => assert_eq!(l.keywords().next(), Some(&Keyword::Var(VarId(0)))),
            k => panic!("{k:?}"),
        }
        assert!(matches!(&kws[1], Keyword::File(n) if n.literal().is_none()));
        assert_eq!(
            kws[2],
            Keyword::Fill {
                text: b"ab".to_vec(),
                var: VarId(0)
            }
        );
        // The first -inf by default; a file's name is its base name.
        let t = Template::compile_value("[field1]", &mut ctx).unwrap();
        assert!(matches!(
            t.keywords().next(),
            Some(Keyword::Field {
                field: 1,
                file: 0,
                line: None
            })
        ));
        // SIPp's SRTP keywords.
        let kw = |text: &str, ctx: &mut Ctx| {
            Template::compile_value(text, ctx)
                .unwrap()
                .keywords()
                .next()
                .cloned()
        };
        assert_eq!(
            kw("[cryptotag2video]", &mut ctx),
            Some(Keyword::CryptoTag(2))
        );
        assert_eq!(
            kw("[cryptosuiteaescm128sha1321audio]", &mut ctx),
            Some(Keyword::CryptoSuite(Suite::AesCm128HmacSha1_32))
        );
        assert_eq!(
            kw("[cryptosuitenullsha1802video]", &mut ctx),
            Some(Keyword::CryptoSuite(Suite::NullHmacSha1_80))
        );
        assert_eq!(
            kw("[cryptokeyparams1audio]", &mut ctx),
            Some(Keyword::CryptoKey {
                video: false,
                line: 1,
                reuse: false
            })
        );
        assert_eq!(
            kw("[cryptokeyparams2video-9]", &mut ctx),
            Some(Keyword::CryptoKey {
                video: true,
                line: 2,
                reuse: true
            })
        );
        assert_eq!(
            kw("[ueaescm128sha1801audio]", &mut ctx),
            Some(Keyword::Unencrypted)
        );
        for bad in [
            "[cryptotag3audio]",
            "[cryptosuitef8sha1801audio]",
            "[uenullsha1801audio]",
        ] {
            assert!(
                matches!(
                    Template::compile_value(bad, &mut ctx),
                    Err(TemplateError::UnknownKeyword(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Template::compile_value("[nothost]", &mut ctx),
            Err(TemplateError::UnknownKeyword(_))
        ));
    }

    #[test]
    fn unknown_keywords_are_errors() {
        let e = Template::compile("X [nonsense]", &mut Vars::default()).unwrap_err();
        assert_eq!(e, TemplateError::UnknownKeyword("nonsense".into()));
        assert!(matches!(
            Template::compile("X [call_id", &mut Vars::default()),
            Err(TemplateError::Unterminated(_))
        ));
        assert!(matches!(
            Template::compile("X\n\nbody [len]", &mut Vars::default()),
            Err(TemplateError::LenInBody)
        ));
        assert!(matches!(
            Template::compile("  \n \n", &mut Vars::default()),
            Err(TemplateError::Empty)
        ));
    }
}
