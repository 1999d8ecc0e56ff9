//! Response templates: the headers of a received request that every
//! response to it repeats, kept in one buffer.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sip::{CommaList, HeaderName, Params, Request, Via, Writer, put_unfolded};

/// The headers of a received request that its responses repeat (RFC 3261
/// §8.2.6.2): Via (with received/rport filled, RFC 3581 §4), From, To,
/// Call-ID, CSeq, and Record-Route for dialog-creating responses (§12.1.1).
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// Via and From, the To value, Call-ID and CSeq, Record-Route, one
    /// after the other (one allocation; the ends below split it).
    all: Bytes,
    head_end: u32,
    to_end: u32,
    tail_end: u32,
    to_has_tag: bool,
}

impl Template {
    pub fn new(req: &Request<'_>, src: SocketAddr, with_record_route: bool) -> Self {
        let mut b = crate::sip::buffer(repeated_len(req, with_record_route) + 64);
        write_head(&mut b, req, src);
        let head_end = b.len();
        if let Some(to) = req.msg.value(HeaderName::To) {
            put_unfolded(&mut b, to);
        }
        let to_end = b.len();
        write_tail(&mut b, req);
        let tail_end = b.len();
        if with_record_route {
            for h in req.msg.all(HeaderName::RecordRoute) {
                Writer::new(&mut b).copy(h);
            }
        }
        let end = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Template {
            all: crate::sip::seal(b),
            head_end: end(head_end),
            to_end: end(to_end),
            tail_end: end(tail_end),
            to_has_tag: req.to_tag().is_some(),
        }
    }

    /// The four parts: Via and From, the To value, Call-ID and CSeq,
    /// Record-Route.
    fn parts(&self) -> [&[u8]; 4] {
        let at = |n: u32| usize::try_from(n).unwrap_or(usize::MAX).min(self.all.len());
        let (h, t, c) = (at(self.head_end), at(self.to_end), at(self.tail_end));
        let (h, t) = (h.min(t), t.min(c));
        [
            &self.all[..h],
            &self.all[h..t],
            &self.all[t..c],
            &self.all[c..],
        ]
    }

    /// Writes status line and the repeated headers. `tag` is added to To
    /// when the request had none (not for 100 Trying, §8.2.6.2).
    pub fn start<'b>(
        &self,
        buf: &'b mut BytesMut,
        code: u16,
        reason: &[u8],
        tag: Option<&[u8]>,
    ) -> Writer<'b> {
        let [head, to, tail, record_route] = self.parts();
        let mut w = Writer::new(buf);
        w.status_line(code, reason);
        w.raw(head);
        w.raw(b"To: ");
        w.raw(to);
        if let Some(tag) = added_to_tag(self.to_has_tag, tag, code) {
            w.raw(b";tag=");
            w.raw(tag);
        }
        w.raw(b"\r\n");
        w.raw(tail);
        if (101..300).contains(&code) {
            w.raw(record_route);
        }
        w
    }

    /// A template with nothing in it, for transactions that will send no
    /// more responses (frees the memory of the real one).
    pub fn empty() -> Self {
        Template {
            all: Bytes::new(),
            head_end: 0,
            to_end: 0,
            tail_end: 0,
            to_has_tag: true,
        }
    }

    /// A response with no body and no extra headers.
    pub fn simple(&self, code: u16, reason: &[u8], tag: Option<&[u8]>) -> Bytes {
        let mut buf = crate::sip::buffer(self.len() + 64);
        self.start(&mut buf, code, reason, tag).body(b"");
        crate::sip::seal(buf)
    }

    pub fn len(&self) -> usize {
        self.all.len() + 64
    }
}

/// A response to `req` written straight into `buf`, for an answer sent
/// once: the lines [`Template::start`] writes (no Record-Route), without
/// a template made and copied first.
pub(crate) fn respond_once<'b>(
    buf: &'b mut BytesMut,
    req: &Request<'_>,
    src: SocketAddr,
    (code, reason): (u16, &[u8]),
    tag: Option<&[u8]>,
) -> Writer<'b> {
    Writer::new(buf).status_line(code, reason);
    write_head(buf, req, src);
    buf.put_slice(b"To: ");
    if let Some(to) = req.msg.value(HeaderName::To) {
        put_unfolded(buf, to);
    }
    if let Some(tag) = added_to_tag(req.to_tag().is_some(), tag, code) {
        buf.put_slice(b";tag=");
        buf.put_slice(tag);
    }
    buf.put_slice(b"\r\n");
    write_tail(buf, req);
    Writer::new(buf)
}

/// The tag a response adds to To: ours, unless the request's To had one
/// or the response is 100 Trying (RFC 3261 §8.2.6.2).
fn added_to_tag(request_had_one: bool, tag: Option<&[u8]>, code: u16) -> Option<&[u8]> {
    if request_had_one || code <= 100 {
        None
    } else {
        tag
    }
}

/// Room for the headers a response repeats (RFC 3261 §8.2.6.2): what is
/// copied, plus room for `received`/`rport` and the names (a whole-message
/// guess would hold the body's size for as long as a transaction lives).
pub(crate) fn repeated_len(req: &Request<'_>, with_record_route: bool) -> usize {
    req.msg
        .headers()
        .filter(|h| {
            matches!(
                h.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            ) || (with_record_route && h.name == HeaderName::RecordRoute)
        })
        .map(|h| h.value.len() + 16)
        .sum()
}

/// The Via lines (the top value with `received`/`rport`) and From.
#[inline]
fn write_head(b: &mut BytesMut, req: &Request<'_>, src: SocketAddr) {
    let mut first = true;
    for h in req.msg.all(HeaderName::Via) {
        b.put_slice(b"Via: ");
        let mut values = CommaList::new(h.value);
        if first {
            first = false;
            // The top value is the one `Request::parse` read.
            if values.next().is_some() {
                write_top_via(b, &req.via, src);
            }
            for v in values {
                b.put_slice(b", ");
                put_unfolded(b, v);
            }
        } else {
            put_unfolded(b, h.value);
        }
        b.put_slice(b"\r\n");
    }
    if let Some(from) = req.msg.header(HeaderName::From) {
        Writer::new(b).copy(from);
    }
}

/// Call-ID and CSeq.
#[inline]
fn write_tail(b: &mut BytesMut, req: &Request<'_>) {
    for name in [HeaderName::CallId, HeaderName::CSeq] {
        if let Some(h) = req.msg.header(name) {
            Writer::new(b).copy(h);
        }
    }
}

/// Writes the top Via value with `received` and `rport` filled in (RFC 3261
/// §18.2.1, RFC 3581 §4).
fn write_top_via(b: &mut BytesMut, via: &Via<'_>, src: SocketAddr) {
    b.put_slice(b"SIP/2.0/");
    b.put_slice(via.transport);
    b.put_u8(b' ');
    b.put_slice(via.host);
    if let Some(port) = via.port {
        b.put_u8(b':');
        b.put_slice(itoa::Buffer::new().format(port).as_bytes());
    }
    let mut has_received = false;
    for (name, value) in Params::new(via.params) {
        b.put_u8(b';');
        if name.eq_ignore_ascii_case(b"rport") {
            b.put_slice(b"rport=");
            b.put_slice(itoa::Buffer::new().format(src.port()).as_bytes());
            continue;
        }
        if name.eq_ignore_ascii_case(b"received") {
            has_received = true;
            b.put_slice(b"received=");
            crate::sip::put_ip(b, src.ip());
            continue;
        }
        b.put_slice(name);
        if let Some(v) = value {
            b.put_u8(b'=');
            b.put_slice(v);
        }
    }
    // §18.2.1: received when the host differs; RFC 3581 §4: always when
    // rport was asked for.
    let rport = via.rport().is_some();
    if !has_received && (rport || crate::sip::host_ip(via.host) != Some(src.ip())) {
        b.put_slice(b";received=");
        crate::sip::put_ip(b, src.ip());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::sip::Message;

    /// A response written once from the request is, line for line, the
    /// one a template of it gives.
    #[test]
    fn a_response_written_once_matches_the_templates() {
        let text = b"REGISTER sip:sbc.example SIP/2.0\r\n\
            Via: SIP/2.0/UDP 10.1.1.2:5062;branch=z9hG4bK-1;rport, SIP/2.0/TCP 10.9.9.9\r\n\
            Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0\r\n\
            Max-Forwards: 70\r\n\
            From: \"Alice\" <sip:alice@sbc.example>;tag=a1\r\n\
            To: <sip:alice@sbc.example>\r\n \t;x=1\r\n\
            Call-ID: c1@phone\r\n\
            CSeq: 7 REGISTER\r\n\
            Record-Route: <sip:rr.example;lr>\r\n\
            Content-Length: 0\r\n\r\n";
        let req = Request::parse(Message::parse(text).unwrap()).unwrap();
        let src: SocketAddr = "203.0.113.20:40000".parse().unwrap();
        for (code, tag) in [
            (401, Some(&b"t9"[..])),
            (100, Some(&b"t9"[..])),
            (200, None),
        ] {
            let template = Template::new(&req, src, false);
            let mut want = BytesMut::new();
            template
                .start(&mut want, code, b"Why", tag)
                .header(HeaderName::Expires, &[b"60"])
                .body(b"");
            let mut got = BytesMut::new();
            respond_once(&mut got, &req, src, (code, b"Why"), tag)
                .header(HeaderName::Expires, &[b"60"])
                .body(b"");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{code}"
            );
            let got = String::from_utf8_lossy(&got);
            assert!(got.contains("Via: SIP/2.0/UDP 10.1.1.2:5062;branch=z9hG4bK-1;rport=40000;received=203.0.113.20, SIP/2.0/TCP 10.9.9.9\r\n"));
            let to_tag = code > 100 && tag.is_some();
            assert_eq!(
                got.contains("To: <sip:alice@sbc.example> ;x=1;tag=t9\r\n"),
                to_tag,
                "{got}"
            );
            assert!(!got.contains("Record-Route"));
        }
    }
}
