//! Typed requests and responses: after [`Request::parse`] /
//! [`Response::parse`] the headers every decision needs are known valid.

use super::header::HeaderName;
use super::message::{Message, ParseError};
use super::method::Method;
use super::name_addr::NameAddr;
use super::scan::{is_lws, is_token, parse_decimal, trim};
use super::uri::Uri;
use super::via::{Via, split_values};

/// RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
pub const MAX_CSEQ: u32 = (1 << 31) - 1;

#[derive(Debug, Clone, Copy)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method,
    pub method_raw: &'a [u8],
}

impl<'a> CSeq<'a> {
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let value = trim(value);
        let split = value.iter().position(|b| is_lws(*b))?;
        let seq = parse_decimal(&value[..split])
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= MAX_CSEQ)?;
        let method_raw = trim(&value[split..]);
        if method_raw.is_empty() || !method_raw.iter().all(|b| is_token(*b)) {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::parse(method_raw),
            method_raw,
        })
    }
}

/// Why a request cannot be processed; each maps to the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("invalid {0} header")]
    Invalid(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    #[error("invalid Request-URI")]
    RequestUri,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            Self::Parse(p) => p.status(),
            _ => 400,
        }
    }

    /// Reason phrase for the error answer, e.g. "Bad Request (missing Call-ID header)".
    pub fn reason(self) -> String {
        match self.status() {
            505 => "Version Not Supported".to_owned(),
            _ => format!("Bad Request ({self})"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Parse(p) => p.label(),
            Self::Missing(_) => "missing_header",
            Self::Invalid(_) => "invalid_header",
            Self::CSeqMismatch => "cseq_mismatch",
            Self::RequestUri => "request_uri",
        }
    }
}

/// A request whose mandatory headers (RFC 3261 §8.1.1) are present and valid.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub msg: Message<'a>,
    pub method: Method,
    pub method_raw: &'a [u8],
    pub uri: Uri<'a>,
    pub via: Via<'a>,
    pub from: NameAddr<'a>,
    pub to: NameAddr<'a>,
    pub call_id: &'a [u8],
    pub cseq: CSeq<'a>,
    pub max_forwards: Option<u32>,
}

impl<'a> Request<'a> {
    pub fn parse(msg: Message<'a>) -> Result<Self, RequestError> {
        let line = *msg
            .request_line()
            .ok_or(RequestError::Parse(ParseError::StartLine))?;
        let uri = Uri::parse(line.uri).map_err(|_| RequestError::RequestUri)?;
        let (via, from, to, call_id, cseq) = common_headers(&msg, NameAddr::parse)?;
        // Every Via must be well formed, not only ours (RFC 4475 §3.1.2.1);
        // the top one was read by `common_headers`.
        for value in msg
            .all(HeaderName::Via)
            .flat_map(|h| split_values(h.value))
            .skip(1)
        {
            Via::parse(value).map_err(|_| RequestError::Invalid("Via"))?;
        }
        // RFC 3261 §8.1.1.5: the CSeq method matches the request method.
        if cseq.method_raw != line.method_raw {
            return Err(RequestError::CSeqMismatch);
        }
        let max_forwards = match msg.value(HeaderName::MaxForwards) {
            None => None,
            Some(v) => Some(
                parse_decimal(v)
                    .filter(|n| *n <= 255)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(RequestError::Invalid("Max-Forwards"))?,
            ),
        };
        Ok(Request {
            method: line.method,
            method_raw: line.method_raw,
            uri,
            via,
            from,
            to,
            call_id,
            cseq,
            max_forwards,
            msg,
        })
    }

    pub fn from_tag(&self) -> &'a [u8] {
        self.from.tag().unwrap_or(b"")
    }

    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.to.tag()
    }
}

/// A response whose top Via, Call-ID and CSeq are valid (RFC 3261 §18.1.2).
#[derive(Debug, Clone)]
pub struct Response<'a> {
    pub msg: Message<'a>,
    pub code: u16,
    pub reason: &'a [u8],
    pub via: Via<'a>,
    pub from: NameAddr<'a>,
    pub to: NameAddr<'a>,
    pub call_id: &'a [u8],
    pub cseq: CSeq<'a>,
}

impl<'a> Response<'a> {
    pub fn parse(msg: Message<'a>) -> Result<Self, RequestError> {
        let status = *msg
            .status_line()
            .ok_or(RequestError::Parse(ParseError::StartLine))?;
        // Only the tags of a response's From and To are used: their URIs
        // are not checked.
        let (via, from, to, call_id, cseq) = common_headers(&msg, NameAddr::parse_structure)?;
        Ok(Response {
            code: status.code,
            reason: status.reason,
            via,
            from,
            to,
            call_id,
            cseq,
            msg,
        })
    }

    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.to.tag()
    }
}

type Common<'a> = (Via<'a>, NameAddr<'a>, NameAddr<'a>, &'a [u8], CSeq<'a>);

/// The headers every request and response has, From and To read by
/// `name_addr`.
fn common_headers<'a>(
    msg: &Message<'a>,
    name_addr: fn(&'a [u8]) -> Result<NameAddr<'a>, super::name_addr::NameAddrError>,
) -> Result<Common<'a>, RequestError> {
    let via_value = msg
        .value(HeaderName::Via)
        .ok_or(RequestError::Missing("Via"))?;
    let top = split_values(via_value)
        .next()
        .ok_or(RequestError::Invalid("Via"))?;
    let via = Via::parse(top).map_err(|_| RequestError::Invalid("Via"))?;
    let from = name_addr(
        msg.value(HeaderName::From)
            .ok_or(RequestError::Missing("From"))?,
    )
    .map_err(|_| RequestError::Invalid("From"))?;
    let to = name_addr(
        msg.value(HeaderName::To)
            .ok_or(RequestError::Missing("To"))?,
    )
    .map_err(|_| RequestError::Invalid("To"))?;
    let call_id = msg
        .value(HeaderName::CallId)
        .ok_or(RequestError::Missing("Call-ID"))?;
    if call_id.is_empty() || !call_id.iter().all(u8::is_ascii_graphic) {
        return Err(RequestError::Invalid("Call-ID"));
    }
    let cseq = msg
        .value(HeaderName::CSeq)
        .ok_or(RequestError::Missing("CSeq"))
        .and_then(|v| CSeq::parse(v).ok_or(RequestError::Invalid("CSeq")))?;
    Ok((via, from, to, call_id, cseq))
}
