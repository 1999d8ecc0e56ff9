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
        // What is copied, plus room for `received`/`rport` and the names
        // (a whole-message guess would hold the body's size for as long as
        // the transaction lives).
        let copied: usize = req
            .msg
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
            .sum();
        let mut b = crate::sip::buffer(copied + 64);
        let mut first = true;
        for h in req.msg.all(HeaderName::Via) {
            b.put_slice(b"Via: ");
            let mut values = CommaList::new(h.value);
            if first {
                first = false;
                // The top value is the one `Request::parse` read.
                if values.next().is_some() {
                    write_top_via(&mut b, &req.via, src);
                }
                for v in values {
                    b.put_slice(b", ");
                    put_unfolded(&mut b, v);
                }
            } else {
                put_unfolded(&mut b, h.value);
            }
            b.put_slice(b"\r\n");
        }
        if let Some(from) = req.msg.header(HeaderName::From) {
            Writer::new(&mut b).copy(from);
        }
        let head_end = b.len();
        if let Some(to) = req.msg.value(HeaderName::To) {
            put_unfolded(&mut b, to);
        }
        let to_end = b.len();
        for name in [HeaderName::CallId, HeaderName::CSeq] {
            if let Some(h) = req.msg.header(name) {
                Writer::new(&mut b).copy(h);
            }
        }
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
        if let (false, Some(tag), 101..) = (self.to_has_tag, tag, code) {
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
