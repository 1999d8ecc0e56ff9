//! Writing SIP messages into a caller-provided buffer.
//!
//! The writer never re-parses: callers append a start line, headers (copied
//! slices from a received message or values the SBC minted) and a body; the
//! Content-Length is computed from the body.

use std::net::{IpAddr, SocketAddr};

use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::HeaderName;
use super::message::Header;

thread_local! {
    /// The buffer the last sealed message was written in, for the next.
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// Largest buffer kept for reuse.
const SPARE_MAX: usize = 64 * 1024;

/// An empty buffer with room for `capacity` bytes to write a message in:
/// the one [`seal`] gave back when there is one (a message written while
/// another is being written gets a new one).
pub fn buffer(capacity: usize) -> BytesMut {
    let mut buf = SPARE.take().unwrap_or_default();
    buf.reserve(capacity);
    buf
}

/// The message written in `buf`, in an allocation of its own size (owned
/// alone: no shared counter until it is cloned), `buf` kept for the next
/// [`buffer`]. A message kept for retransmission holds no spare room.
pub fn seal(buf: BytesMut) -> Bytes {
    let message = Bytes::copy_from_slice(&buf);
    recycle(buf);
    message
}

/// Keeps `buf` (emptied) for the next [`buffer`]: for a message sent once
/// and not kept, which needs no allocation of its own.
pub fn recycle(mut buf: BytesMut) {
    if buf.capacity() <= SPARE_MAX {
        buf.clear();
        SPARE.set(Some(buf));
    }
}

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

/// Appends `ip` as text: a dotted quad, or IPv6 in its `Display` form
/// (no brackets). Without `fmt` for IPv4, the common case on every
/// message (Via `received`, SDP, Request-URIs).
pub fn put_ip(buf: &mut impl BufMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b'.');
                }
                buf.put_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => put_display(buf, v6),
    }
}

/// Appends `addr` as `SocketAddr` displays it (`ip:port`, IPv6 in
/// brackets).
pub fn put_socket_addr(buf: &mut impl BufMut, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            put_ip(buf, IpAddr::V4(*v4.ip()));
            buf.put_u8(b':');
            buf.put_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
        }
        SocketAddr::V6(_) => put_display(buf, addr),
    }
}

/// Appends a value's `Display` text through a stack buffer (addresses
/// are at most 64 bytes as text).
fn put_display(buf: &mut impl BufMut, value: impl std::fmt::Display) {
    let mut text = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{value}"));
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    buf.put_slice(&text[..len.min(text.len())]);
}

/// Appends `value`, replacing each folded line break (CR/LF followed by
/// white space) with a single space.
pub fn put_unfolded(buf: &mut impl BufMut, value: &[u8]) {
    // A byte below 0x0e (CR, LF, but also TAB and other controls) sends
    // it to the exact search: most parts have none.
    if !super::scan::has_byte_below_or(value, 0x0e, 0)
        || memchr::memchr2(b'\r', b'\n', value).is_none()
    {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    #[test]
    fn a_sealed_message_is_its_own_size_and_its_buffer_serves_the_next() {
        let mut outer = buffer(512);
        outer.put_slice(b"OPTIONS sip:a SIP/2.0\r\n");
        // A message written while another is: a buffer of its own.
        let mut inner = buffer(512);
        inner.put_slice(b"SIP/2.0 200 OK\r\n");
        let inner_at = inner.as_ptr();
        let inner = seal(inner);
        assert_eq!(&inner[..], b"SIP/2.0 200 OK\r\n");
        let outer = seal(outer);
        assert_eq!(&outer[..], b"OPTIONS sip:a SIP/2.0\r\n");
        // The spare is the last buffer sealed, empty, with its room.
        let next = buffer(16);
        assert!(next.is_empty() && next.capacity() >= 512);
        assert_ne!(next.as_ptr(), inner_at, "the outer one was sealed last");
        // A sealed message owns exactly its bytes: converting it back
        // reuses its allocation only when nothing else shares it.
        let len = outer.len();
        assert_eq!(Vec::from(outer).capacity(), len);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let ips: [IpAddr; 6] = [
            "0.0.0.0".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "2001:db8::9:1".parse().unwrap(),
            "::ffff:192.0.2.7".parse().unwrap(),
            "::".parse().unwrap(),
        ];
        for ip in ips {
            let mut b = BytesMut::new();
            put_ip(&mut b, ip);
            assert_eq!(&b[..], ip.to_string().as_bytes());
            for port in [0, 5060, 65535] {
                let addr = SocketAddr::new(ip, port);
                let mut b = Vec::new();
                put_socket_addr(&mut b, addr);
                assert_eq!(&b[..], addr.to_string().as_bytes());
            }
        }
        let longest = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            ),
            65535,
            0,
            u32::MAX,
        ));
        let mut b = Vec::new();
        put_socket_addr(&mut b, longest);
        assert_eq!(&b[..], longest.to_string().as_bytes());
    }
}
