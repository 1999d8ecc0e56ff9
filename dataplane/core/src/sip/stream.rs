//! Framing SIP over a byte stream (TCP, and TLS once decrypted): messages
//! are cut by their Content-Length (RFC 3261 §18.3), CRLF keepalives are
//! told apart from messages (RFC 5626 §3.5.1), and limits bound what one
//! connection can make the SBC hold. Sans-IO: bytes in, frames out.

use bytes::{Buf, Bytes, BytesMut};

use crate::sip::HeaderName;

/// How much a connection may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Start line and headers, up to and including the empty line.
    pub max_header: usize,
    /// A whole message, headers and body.
    pub max_message: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_header: 16 * 1024,
            max_message: 64 * 1024,
        }
    }
}

/// What the stream carried next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole SIP message, headers and body.
    Message(Bytes),
    /// A double-CRLF keepalive ping: answer with a single CRLF (pong).
    Ping,
}

/// Why the stream cannot be framed any further: the connection is to be
/// closed (after a 400 or 413 where the message can still be answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No empty line within `max_header` bytes.
    HeaderTooLong,
    /// Content-Length says more than `max_message` allows.
    TooLarge,
    /// No Content-Length (mandatory on streams), or one that is not a
    /// number, or several that disagree.
    BadContentLength,
}

impl FrameError {
    /// The label counted in metrics.
    pub fn label(self) -> &'static str {
        match self {
            FrameError::HeaderTooLong => "header_too_long",
            FrameError::TooLarge => "too_large",
            FrameError::BadContentLength => "bad_content_length",
        }
    }
}

/// Reassembles messages from the chunks a connection delivers. Each byte
/// is searched once for the end of the head, and each head read once,
/// however the message is cut into chunks.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: BytesMut,
    limits: StreamLimits,
    /// The framing failed: nothing more is taken.
    failed: Option<FrameError>,
    /// No empty line ends before this offset of `buf`.
    searched: usize,
    /// The whole length of the message whose head has arrived and whose
    /// body has not (yet).
    expected: Option<usize>,
}

impl StreamDecoder {
    pub fn new(limits: StreamLimits) -> Self {
        StreamDecoder {
            limits,
            ..StreamDecoder::default()
        }
    }

    /// Bytes received and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Part of a message is buffered, more than the CRLFs of a keepalive:
    /// the peer owes the rest (a Content-Length larger than what came,
    /// say). A failed stream owes nothing.
    pub fn mid_message(&self) -> bool {
        self.failed.is_none() && !self.buf.is_empty() && !b"\r\n\r\n".starts_with(&self.buf)
    }

    /// Appends what the connection delivered.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next whole frame, `None` while more bytes are needed, or the
    /// error that ends the stream (returned again on every later call).
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let total = match self.expected {
            Some(total) => total,
            None => match self.next_head()? {
                Ok(Head::Message(total)) => total,
                Ok(Head::Ping) => return Some(Ok(Frame::Ping)),
                Err(e) => return Some(Err(self.fail(e))),
            },
        };
        if self.buf.len() < total {
            self.expected = Some(total);
            self.buf.reserve(total - self.buf.len());
            return None;
        }
        self.expected = None;
        self.searched = 0;
        Some(Ok(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// At a message boundary: skips empty lines, and reads the next head
    /// once it is whole. `None` while more bytes are needed.
    fn next_head(&mut self) -> Option<Result<Head, FrameError>> {
        if self.searched == 0 {
            // Empty lines between messages are keepalives (RFC 3261 §7.5
            // allows CRLFs before a start line); two in a row are a ping.
            loop {
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.buf.advance(4);
                    return Some(Ok(Head::Ping));
                }
                match self.buf.as_ref() {
                    [b'\r', b'\n', next, ..] if *next != b'\r' => self.buf.advance(2),
                    [b'\r', b'\n', b'\r', next, ..] if *next != b'\n' => self.buf.advance(2),
                    [b'\n', ..] => self.buf.advance(1),
                    _ => break,
                }
            }
            // Part of a ping (or a lone CRLF): wait for the rest. Anything
            // else is taken as the start of a message, and bounded as one.
            if b"\r\n\r\n".starts_with(&self.buf) {
                return None;
            }
        }
        // Resume the search where the last one stopped (an empty line may
        // straddle the two chunks).
        let from = self.searched.saturating_sub(3);
        let window = &self.buf[from..self.buf.len().min(self.limits.max_header)];
        let Some(at) = memchr::memmem::find(window, b"\r\n\r\n") else {
            self.searched = from + window.len();
            if self.buf.len() >= self.limits.max_header {
                return Some(Err(FrameError::HeaderTooLong));
            }
            return None;
        };
        let head = from + at + 4;
        self.searched = head;
        let total = content_length(&self.buf[..head]).and_then(|length| {
            head.checked_add(length)
                .filter(|t| *t <= self.limits.max_message)
                .ok_or(FrameError::TooLarge)
        });
        Some(total.map(Head::Message))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = Some(e);
        self.buf = BytesMut::new();
        self.searched = 0;
        self.expected = None;
        e
    }
}

/// What starts the stream at a message boundary.
enum Head {
    Ping,
    /// A message of this many bytes, head and body.
    Message(usize),
}

/// The Content-Length (or compact `l`) of a head; every occurrence must
/// agree.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    // Line ends are found by `memchr`, not a byte at a time: this runs on
    // every message a stream carries.
    let mut ends = memchr::memchr_iter(b'\n', head).chain(std::iter::once(head.len()));
    // Skip the start line.
    let mut start = ends.next().map_or(head.len(), |end| end + 1);
    let lines = ends.map(|end| {
        let line = head.get(start..end).unwrap_or_default();
        start = end + 1;
        line
    });
    length_of_lines(lines)
}

/// The Content-Length the header lines give (a trailing CR on each is
/// ignored); folded continuation lines start with white space and never
/// carry a header name.
fn length_of_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<usize, FrameError> {
    let mut found: Option<usize> = None;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if HeaderName::parse(line[..colon].trim_ascii()) != HeaderName::ContentLength {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let n = crate::sip::scan::parse_decimal(value)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(FrameError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(FrameError::BadContentLength);
        }
        found = Some(n);
    }
    found.ok_or(FrameError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nv=0\n";
    const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nl: 0\r\n\r\n";

    fn frames(d: &mut StreamDecoder) -> Vec<Result<Frame, FrameError>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame() {
            let end = f.is_err();
            out.push(f);
            if end {
                break;
            }
        }
        out
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let stream = [INVITE, OPTIONS, INVITE].concat();
        for cut in 0..stream.len() {
            let mut d = StreamDecoder::default();
            d.push(&stream[..cut]);
            let mut got = frames(&mut d);
            d.push(&stream[cut..]);
            got.extend(frames(&mut d));
            assert_eq!(
                got,
                vec![
                    Ok(Frame::Message(Bytes::from_static(INVITE))),
                    Ok(Frame::Message(Bytes::from_static(OPTIONS))),
                    Ok(Frame::Message(Bytes::from_static(INVITE))),
                ],
                "cut at {cut}"
            );
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn double_crlf_is_a_ping_single_crlfs_are_skipped() {
        let mut d = StreamDecoder::default();
        d.push(b"\r\n\r\n");
        assert_eq!(frames(&mut d), vec![Ok(Frame::Ping)]);
        d.push(b"\r\n");
        assert_eq!(frames(&mut d), vec![], "a lone CRLF waits");
        d.push(OPTIONS);
        assert_eq!(
            frames(&mut d),
            vec![Ok(Frame::Message(Bytes::from_static(OPTIONS)))]
        );
        d.push(b"\r\n\r\n\r\n\r\n");
        assert_eq!(frames(&mut d), vec![Ok(Frame::Ping), Ok(Frame::Ping)]);
    }

    #[test]
    fn limits_and_bad_lengths_end_the_stream() {
        let limits = StreamLimits {
            max_header: 64,
            max_message: 128,
        };
        let mut d = StreamDecoder::new(limits);
        d.push(&[b'A'; 100]);
        assert_eq!(frames(&mut d), vec![Err(FrameError::HeaderTooLong)]);
        d.push(OPTIONS);
        assert_eq!(d.next_frame(), Some(Err(FrameError::HeaderTooLong)));

        let mut d = StreamDecoder::new(limits);
        d.push(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert_eq!(frames(&mut d), vec![Err(FrameError::TooLarge)]);

        let mut d = StreamDecoder::default();
        d.push(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(frames(&mut d), vec![Err(FrameError::BadContentLength)]);

        let mut d = StreamDecoder::default();
        d.push(b"BYE sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n");
        assert_eq!(frames(&mut d), vec![Err(FrameError::BadContentLength)]);

        let mut d = StreamDecoder::default();
        d.push(b"BYE sip:x SIP/2.0\r\nContent-Length: 0\r\nl: 2\r\n\r\nab");
        assert_eq!(frames(&mut d), vec![Err(FrameError::BadContentLength)]);
        assert_eq!(d.buffered(), 0, "a failed stream holds nothing");
    }

    #[test]
    fn a_stray_carriage_return_cannot_make_it_hold_more() {
        let mut d = StreamDecoder::default();
        d.push(b"\r");
        assert_eq!(d.next_frame(), None);
        d.push(&[b'x'; 20_000]);
        assert_eq!(d.next_frame(), Some(Err(FrameError::HeaderTooLong)));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_body_may_hold_an_empty_line() {
        let msg: &[u8] = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 6\r\n\r\na\r\n\r\nb";
        let mut d = StreamDecoder::default();
        d.push(msg);
        d.push(OPTIONS);
        assert_eq!(
            frames(&mut d),
            vec![
                Ok(Frame::Message(Bytes::copy_from_slice(msg))),
                Ok(Frame::Message(Bytes::from_static(OPTIONS))),
            ]
        );
    }

    /// The line-at-a-time reading `content_length` replaced: split on every
    /// `\n`, skip the start line.
    fn content_length_by_split(head: &[u8]) -> Result<usize, FrameError> {
        length_of_lines(head.split(|&b| b == b'\n').skip(1))
    }

    proptest::proptest! {
        #[test]
        fn content_length_reads_lines_as_a_split_does(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"\n"[..], b"\r\n", b"\r", b"Content-Length: 12", b"l:3", b"Content-length :  7 ",
                    b"INVITE sip:x SIP/2.0", b"Via: a", b" folded", b":", b"x", b"12",
                ]),
                0..24,
            )
        ) {
            let head = parts.concat();
            proptest::prop_assert_eq!(content_length(&head), content_length_by_split(&head));
        }
    }

    #[test]
    fn a_message_begun_is_owed_until_it_is_whole() {
        let mut d = StreamDecoder::new(StreamLimits::default());
        assert!(!d.mid_message());
        // Keepalive CRLFs, whole or in part, owe nothing.
        d.push(b"\r\n");
        assert!(d.next_frame().is_none());
        assert!(!d.mid_message());
        d.push(b"\r\n");
        assert!(matches!(d.next_frame(), Some(Ok(Frame::Ping))));
        assert!(!d.mid_message());
        // A head whose Content-Length is more than what follows.
        d.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc");
        assert!(d.next_frame().is_none());
        assert!(d.mid_message());
        d.push(b"defghij");
        assert!(matches!(d.next_frame(), Some(Ok(Frame::Message(_)))));
        assert!(!d.mid_message());
        // Half a head owes the rest too.
        d.push(b"OPTIONS sip:x SIP/2.0\r\nCall-");
        assert!(d.next_frame().is_none());
        assert!(d.mid_message());
    }
}
