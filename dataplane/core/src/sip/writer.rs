//! Writing SIP messages into a caller-provided buffer.
//!
//! The writer never re-parses: callers append a start line, headers (copied
//! slices from a received message or values the SBC minted) and a body; the
//! Content-Length is computed from the body.

use bytes::{BufMut, BytesMut};

use super::header::HeaderName;
use super::message::Header;

/// Appends one message to a buffer.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut BytesMut,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut BytesMut) -> Self {
        Writer { buf }
    }

    pub fn request_line(&mut self, method: &[u8], uri: &[&[u8]]) -> &mut Self {
        self.buf.put_slice(method);
        self.buf.put_u8(b' ');
        for part in uri {
            self.buf.put_slice(part);
        }
        self.buf.put_slice(b" SIP/2.0\r\n");
        self
    }

    pub fn status_line(&mut self, code: u16, reason: &[u8]) -> &mut Self {
        self.buf.put_slice(b"SIP/2.0 ");
        self.buf
            .put_slice(itoa::Buffer::new().format(code).as_bytes());
        self.buf.put_u8(b' ');
        put_unfolded(self.buf, reason);
        self.buf.put_slice(b"\r\n");
        self
    }

    /// A header whose value is the concatenation of `parts`.
    pub fn header(&mut self, name: HeaderName, parts: &[&[u8]]) -> &mut Self {
        self.header_named(name.as_str().as_bytes(), parts)
    }

    pub fn header_named(&mut self, name: &[u8], parts: &[&[u8]]) -> &mut Self {
        self.buf.put_slice(name);
        self.buf.put_slice(b": ");
        for part in parts {
            put_unfolded(self.buf, part);
        }
        self.buf.put_slice(b"\r\n");
        self
    }

    pub fn header_u32(&mut self, name: HeaderName, value: u32) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.header(name, &[b.format(value).as_bytes()])
    }

    /// Copies a received header, unfolding continuation lines. Known headers
    /// are written with their canonical long name.
    pub fn copy(&mut self, header: Header<'_>) -> &mut Self {
        let name = match header.name {
            super::HeaderName::Other => header.raw_name,
            known => known.as_str().as_bytes(),
        };
        self.header_named(name, &[header.value])
    }

    /// Pre-rendered header lines (each ending in CRLF).
    pub fn raw(&mut self, lines: &[u8]) -> &mut Self {
        self.buf.put_slice(lines);
        self
    }

    /// Writes Content-Length, the empty line and the body.
    pub fn body(&mut self, body: &[u8]) {
        let mut b = itoa::Buffer::new();
        self.buf.put_slice(b"Content-Length: ");
        self.buf.put_slice(b.format(body.len()).as_bytes());
        self.buf.put_slice(b"\r\n\r\n");
        self.buf.put_slice(body);
    }
}

/// Appends `value`, replacing each folded line break (CR/LF followed by
/// white space) with a single space.
pub fn put_unfolded(buf: &mut BytesMut, value: &[u8]) {
    if memchr::memchr2(b'\r', b'\n', value).is_none() {
        buf.put_slice(value);
        return;
    }
    let mut in_break = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => in_break = true,
            b' ' | b'\t' if in_break => {}
            _ => {
                if in_break {
                    buf.put_u8(b' ');
                    in_break = false;
                }
                buf.put_u8(b);
            }
        }
    }
}
