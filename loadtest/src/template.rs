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

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown keyword [{0}]")]
    UnknownKeyword(String),
    #[error("unterminated keyword starting with [{0}")]
    Unterminated(String),
    #[error("keyword [{0}]: {1}")]
    BadArgument(String, &'static str),
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
    /// `[branch]`, `[branch-N]`: the branch of the message N steps back.
    Branch(u32),
    /// `[cseq]`, `[cseq+N]`, `[cseq-N]`.
    Cseq(i64),
    Len,
    /// `[last_Name:]` (whole header lines) or `[last_Name:value]`.
    Last(LastHeader),
    /// `[last_Request_URI]`: the Request-URI of the last request received.
    LastRequestUri,
    /// `[last_cseq_number]`: the number in the last message's CSeq.
    LastCseqNumber,
    PeerTagParam,
    Routes,
    NextUrl,
    LocalIp,
    LocalIpType,
    LocalPort,
    RemoteIp,
    RemoteIpType,
    RemotePort,
    Transport,
    MediaIp,
    MediaIpType,
    /// `[media_port]`, `[media_port+N]`.
    MediaPort(i64),
    /// `[auto_media_port]`, `[auto_media_port+N]`: a port pair per call.
    AutoMediaPort(i64),
    Service,
    Pid,
    Authentication {
        username: Option<Vec<u8>>,
        password: Option<Vec<u8>>,
    },
    /// `[fieldN]` of the injection file.
    Field(usize),
    /// `[$name]`.
    Var(VarId),
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

/// Maps a `[$name]` to its variable id (declaring it when new).
pub trait VarTable {
    fn var(&mut self, name: &str) -> VarId;
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
            if parts.iter().any(|p| matches!(p, Part::Kw(Keyword::Len))) {
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
        let mut len_at: Vec<usize> = Vec::new();
        for line in &self.head {
            let line_start = out.len();
            for part in line {
                match part {
                    Part::Lit(l) => out.extend_from_slice(l),
                    Part::Kw(Keyword::Len) => len_at.push(out.len()),
                    Part::Kw(k) => value(k, out),
                }
            }
            if out.len() == line_start && !line.is_empty() {
                len_at.retain(|&p| p < line_start);
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
            let digits = format!("{:>5}", out.len() - body_start);
            for &at in len_at.iter().rev() {
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
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        lit.extend_from_slice(&rest.as_bytes()[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            return Err(TemplateError::Unterminated(
                after.chars().take(20).collect(),
            ));
        };
        let inner = &after[..close];
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        parts.push(Part::Kw(parse_keyword(inner, vars)?));
        rest = &after[close + 1..];
    }
    lit.extend_from_slice(rest.as_bytes());
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

fn signed_suffix(s: &str, whole: &str) -> Result<i64, TemplateError> {
    if s.is_empty() {
        return Ok(0);
    }
    let (sign, digits) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return Err(TemplateError::UnknownKeyword(whole.to_string())),
    };
    digits
        .parse::<i64>()
        .map(|n| sign * n)
        .map_err(|_| TemplateError::BadArgument(whole.to_string(), "expected +N or -N"))
}

fn parse_keyword(inner: &str, vars: &mut dyn VarTable) -> Result<Keyword, TemplateError> {
    let unknown = || TemplateError::UnknownKeyword(inner.to_string());
    if let Some(name) = inner.strip_prefix('$') {
        if name.is_empty() {
            return Err(unknown());
        }
        return Ok(Keyword::Var(vars.var(name)));
    }
    if let Some(rest) = inner.strip_prefix("last_") {
        return Ok(match rest {
            "Request_URI" => Keyword::LastRequestUri,
            "cseq_number" => Keyword::LastCseqNumber,
            _ => {
                let (name, value_only) = match rest.split_once(':') {
                    Some((n, "")) => (n, false),
                    Some((n, "value")) => (n, true),
                    Some(_) => {
                        return Err(TemplateError::BadArgument(
                            inner.to_string(),
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
    if let Some(rest) = inner.strip_prefix("authentication") {
        let mut username = None;
        let mut password = None;
        for arg in rest.split_whitespace() {
            match arg.split_once('=') {
                Some(("username", v)) => username = Some(v.as_bytes().to_vec()),
                Some(("password", v)) => password = Some(v.as_bytes().to_vec()),
                _ => {
                    return Err(TemplateError::BadArgument(
                        inner.to_string(),
                        "arguments are username=... and password=...",
                    ));
                }
            }
        }
        return Ok(Keyword::Authentication { username, password });
    }
    if let Some(n) = inner.strip_prefix("field") {
        let (n, extra) = n.split_once(' ').unwrap_or((n, ""));
        if !extra.trim().is_empty() {
            return Err(TemplateError::BadArgument(
                inner.to_string(),
                "file= and line= arguments are not supported",
            ));
        }
        return n.parse().map(Keyword::Field).map_err(|_| unknown());
    }
    if let Some(rest) = inner.strip_prefix("branch") {
        if rest.is_empty() {
            return Ok(Keyword::Branch(0));
        }
        let n = signed_suffix(rest, inner)?;
        if n > 0 {
            return Err(TemplateError::BadArgument(
                inner.to_string(),
                "only [branch-N] (an earlier message) is meaningful",
            ));
        }
        return u32::try_from(-n)
            .map(Keyword::Branch)
            .map_err(|_| TemplateError::BadArgument(inner.to_string(), "offset too large"));
    }
    if let Some(rest) = inner.strip_prefix("cseq") {
        return Ok(Keyword::Cseq(signed_suffix(rest, inner)?));
    }
    if let Some(rest) = inner.strip_prefix("auto_media_port") {
        return Ok(Keyword::AutoMediaPort(signed_suffix(rest, inner)?));
    }
    if let Some(rest) = inner.strip_prefix("media_port") {
        return Ok(Keyword::MediaPort(signed_suffix(rest, inner)?));
    }
    Ok(match inner {
        "call_id" => Keyword::CallId,
        "call_number" => Keyword::CallNumber,
        "len" => Keyword::Len,
        "peer_tag_param" => Keyword::PeerTagParam,
        "routes" => Keyword::Routes,
        "next_url" => Keyword::NextUrl,
        "local_ip" => Keyword::LocalIp,
        "local_ip_type" => Keyword::LocalIpType,
        "local_port" => Keyword::LocalPort,
        "remote_ip" => Keyword::RemoteIp,
        "remote_ip_type" => Keyword::RemoteIpType,
        "remote_port" => Keyword::RemotePort,
        "transport" => Keyword::Transport,
        "media_ip" => Keyword::MediaIp,
        "media_ip_type" => Keyword::MediaIpType,
        "service" => Keyword::Service,
        "pid" => Keyword::Pid,
        _ => return Err(unknown()),
    })
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
        assert_eq!(kws[0], Keyword::Branch(3));
        assert_eq!(kws[1], Keyword::Cseq(1));
        assert_eq!(kws[2], Keyword::MediaPort(2));
        assert_eq!(kws[3], Keyword::Field(1));
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
