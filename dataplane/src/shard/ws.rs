//! SIP over WebSocket (RFC 7118), server side, for `ws:` and `wss:`
//! listeners: the HTTP upgrade (which must offer the `sip` subprotocol),
//! then one SIP message per WebSocket message, text or binary (§5.1).
//! Pings are answered and a close is returned (RFC 6455 §5.5).
//!
//! tungstenite does the WebSocket work over an in-memory pipe: the
//! connection's (decrypted) bytes are pushed in, and what it writes
//! (the 101 response, frames, pongs) is taken out and sent by the shard.
//! It never touches a socket, so it runs on the shard's ring like TCP.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::{Message, WebSocket, WebSocketConfig};

use super::boundary::FrameCursor;

/// The subprotocol SIP clients must offer (RFC 7118 §4.1).
const SUBPROTOCOL: &str = "sip";

/// Bytes of an upgrade request that has not ended yet, at most.
const MAX_REQUEST: usize = 16 * 1024;

/// tungstenite's read buffer per connection.
const READ_BUFFER: usize = 4 * 1024;

/// Input and output between the connection and tungstenite.
#[derive(Default)]
struct Pipes {
    input: BytesMut,
    output: Vec<u8>,
}

/// tungstenite's stream: reads what the connection received (WouldBlock
/// when it has all been read), writes into the output.
#[derive(Clone, Default)]
struct Pipe(Rc<RefCell<Pipes>>);

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(p.input.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), p.input.get(..n)) {
            dst.copy_from_slice(src);
        }
        p.input.advance(n);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Accepts an upgrade only when it offers `sip`, and names it in the
/// answer; anything else gets 400.
struct SipOnly;

impl Callback for SipOnly {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let offered = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
        if !offered {
            let mut refusal = ErrorResponse::new(Some(
                "SIP over WebSocket needs the \"sip\" subprotocol\n".into(),
            ));
            *refusal.status_mut() = tungstenite::http::StatusCode::BAD_REQUEST;
            return Err(refusal);
        }
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    }
}

enum State {
    Upgrading(Box<MidHandshake<ServerHandshake<Pipe, SipOnly>>>),
    Open(Box<WebSocket<Pipe>>),
    /// Failed or closed: nothing more is read or sent.
    Done,
}

/// Why a WebSocket connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsEnd {
    /// The upgrade failed (not WebSocket, no `sip` subprotocol, too long).
    Upgrade,
    /// A protocol error or an oversize message.
    Protocol,
    /// The peer sent a close (answered).
    Closed,
}

/// One WebSocket connection's state.
pub(crate) struct WsConn {
    pipe: Pipe,
    state: State,
    /// Bytes received before the upgrade completed (tungstenite buffers
    /// them itself, so the pipe cannot tell).
    upgrade_bytes: usize,
    /// Frame boundaries of what came after the upgrade (tungstenite
    /// refuses bytes behind the request: a client must wait for the 101,
    /// RFC 6455 §4.1).
    frames: FrameCursor,
}

impl WsConn {
    /// A connection waiting for its upgrade request; messages of at most
    /// `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        let pipe = Pipe::default();
        // A small read buffer: tungstenite's default reserves 128 KiB per
        // connection, too much for thousands of idle phones.
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
            .read_buffer_size(READ_BUFFER);
        let mid = match ServerHandshake::start(pipe.clone(), SipOnly, Some(config)).handshake() {
            Err(HandshakeError::Interrupted(mid)) => State::Upgrading(Box::new(mid)),
            // Nothing was read yet: it cannot be done or failed.
            Ok(ws) => State::Open(Box::new(ws)),
            Err(HandshakeError::Failure(_)) => State::Done,
        };
        WsConn {
            pipe,
            state: mid,
            upgrade_bytes: 0,
            frames: FrameCursor::default(),
        }
    }

    /// The upgrade request has not been answered yet.
    pub(crate) fn upgrading(&self) -> bool {
        matches!(self.state, State::Upgrading(_))
    }

    /// Bytes received: each whole SIP message goes to `out`. An error
    /// says the connection must close (after what [`WsConn::output`]
    /// holds is sent: the 400, or the close answered).
    pub(crate) fn push(&mut self, data: &[u8], out: &mut impl FnMut(Bytes)) -> Result<(), WsEnd> {
        self.pipe.0.borrow_mut().input.extend_from_slice(data);
        let upgrading = matches!(self.state, State::Upgrading(_));
        if upgrading {
            self.upgrade_bytes += data.len();

            if self.upgrade_bytes > MAX_REQUEST {
                self.state = State::Done;
                return Err(WsEnd::Upgrade);
            }
            match std::mem::replace(&mut self.state, State::Done) {
                State::Upgrading(mid) => match (*mid).handshake() {
                    Ok(ws) => {
                        self.state = State::Open(Box::new(ws));
                        // What tungstenite left unread behind the request
                        // (it reads the upgrade a chunk at a time) is the
                        // first frames: followed from here.
                        self.frames.push(&self.pipe.0.borrow().input);
                    }
                    Err(HandshakeError::Interrupted(mid)) => {
                        self.state = State::Upgrading(Box::new(mid));
                        return Ok(());
                    }
                    Err(HandshakeError::Failure(e)) => {
                        tracing::debug!(error = %e, "WebSocket upgrade refused");
                        return Err(WsEnd::Upgrade);
                    }
                },
                other => self.state = other,
            }
        }
        let State::Open(ws) = &mut self.state else {
            return Err(WsEnd::Protocol);
        };
        if !upgrading {
            self.frames.push(data);
        }
        let end = loop {
            match ws.read() {
                Ok(Message::Text(text)) => out(Bytes::from(text)),
                Ok(Message::Binary(data)) => out(data),
                Ok(Message::Close(_)) => break Some(WsEnd::Closed),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    break None;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break Some(WsEnd::Closed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket protocol error");
                    break Some(WsEnd::Protocol);
                }
            }
        };
        // Pongs and the answer to a close go out with the next output.
        let _ = ws.flush();
        match end {
            None => Ok(()),
            Some(e) => {
                self.state = State::Done;
                Err(e)
            }
        }
    }

    /// The peer is in the middle of a frame, or of a message sent in
    /// several frames (after the upgrade; before it, the first-message
    /// timeout bounds the request).
    pub(crate) fn mid_message(&self) -> bool {
        matches!(self.state, State::Open(_)) && self.frames.mid_message()
    }

    /// Frames one SIP message (a text message when it is UTF-8, as SIP
    /// messages nearly always are, else binary). False when the connection
    /// cannot carry it (not upgraded yet, or closed).
    pub(crate) fn send(&mut self, data: Bytes) -> bool {
        let State::Open(ws) = &mut self.state else {
            return false;
        };
        let message = if std::str::from_utf8(&data).is_ok() {
            match tungstenite::Utf8Bytes::try_from(data) {
                Ok(text) => Message::Text(text),
                Err(_) => return false,
            }
        } else {
            Message::Binary(data)
        };
        ws.send(message).is_ok()
    }

    /// What must be sent to the peer now (upgrade response, frames,
    /// pongs), taken out.
    pub(crate) fn output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pipe.0.borrow_mut().output)
    }

    /// Starts the closing handshake the SBC's side (RFC 6455 §7.1.2):
    /// a close frame with 1001 (going away), in [`WsConn::output`]. Nothing
    /// is taken or sent after it.
    pub(crate) fn close(&mut self) {
        if let State::Open(ws) = &mut self.state {
            let frame = tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Away,
                reason: "".into(),
            };
            let _ = ws.close(Some(frame));
            let _ = ws.flush();
        }
        self.state = State::Done;
    }

    /// The upgrade completed.
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: sbc.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n";

    /// A client frame: FIN, `opcode`, masked with `key` (clients must mask).
    fn frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    fn collect(ws: &mut WsConn, data: &[u8]) -> (Result<(), WsEnd>, Vec<Bytes>) {
        let mut got = Vec::new();
        let r = ws.push(data, &mut |m| got.push(m));
        (r, got)
    }

    #[test]
    fn upgrades_with_the_sip_subprotocol_in_pieces_then_carries_messages() {
        let mut ws = WsConn::new(65536);
        let (first, second) = UPGRADE.as_bytes().split_at(40);
        assert_eq!(collect(&mut ws, first), (Ok(()), vec![]));
        assert!(!ws.is_open());
        assert!(ws.output().is_empty());
        assert_eq!(collect(&mut ws, second), (Ok(()), vec![]));
        assert!(ws.is_open());
        let answer = String::from_utf8(ws.output()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        // RFC 6455 §1.3's example key and accept value.
        assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("sec-websocket-protocol: sip"),
            "{answer}"
        );

        let options = b"OPTIONS sip:sbc.example SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let mut two = frame(1, options, [1, 2, 3, 4]);
        two.extend(frame(2, b"binary SIP", [9, 8, 7, 6]));
        // Split inside the second frame: only the first is whole.
        let (a, b) = two.split_at(two.len() - 3);
        let (r, got) = collect(&mut ws, a);
        assert_eq!((r, got), (Ok(()), vec![Bytes::from_static(options)]));
        let (r, got) = collect(&mut ws, b);
        assert_eq!((r, got), (Ok(()), vec![Bytes::from_static(b"binary SIP")]));

        assert!(ws.send(Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")));
        let out = ws.output();
        assert_eq!(out[0], 0x81, "an unmasked final text frame");
        assert_eq!(&out[2..], b"SIP/2.0 200 OK\r\n\r\n");
    }

    #[test]
    fn a_frame_or_message_in_part_is_seen() {
        let sip = b"OPTIONS sip:sbc.example SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let mut ws = WsConn::new(65536);
        let (a, b) = UPGRADE.as_bytes().split_at(UPGRADE.len() - 3);
        assert_eq!(collect(&mut ws, a), (Ok(()), vec![]));
        assert!(!ws.mid_message(), "an upgrade under way is not counted");
        assert_eq!(collect(&mut ws, b), (Ok(()), vec![]));
        assert!(ws.is_open());
        assert!(!ws.mid_message());
        // A frame cut inside its mask.
        let whole = frame(1, sip, [1, 2, 3, 4]);
        let (head, tail) = whole.split_at(4);
        assert_eq!(collect(&mut ws, head), (Ok(()), vec![]));
        assert!(ws.mid_message());
        let (r, got) = collect(&mut ws, tail);
        assert_eq!((r, got), (Ok(()), vec![Bytes::copy_from_slice(sip)]));
        assert!(!ws.mid_message());

        // A message in two fragments with a ping between: mid until the
        // final fragment, whatever the ping.
        let (p1, p2) = sip.split_at(10);
        let mut first = frame(1, p1, [1, 1, 1, 1]);
        first[0] &= 0x7f;
        assert_eq!(collect(&mut ws, &first), (Ok(()), vec![]));
        assert!(ws.mid_message());
        assert_eq!(collect(&mut ws, &frame(9, b"p", [2; 4])), (Ok(()), vec![]));
        assert!(ws.mid_message());
        let (r, got) = collect(&mut ws, &frame(0, p2, [3; 4]));
        assert_eq!((r, got), (Ok(()), vec![Bytes::copy_from_slice(sip)]));
        assert!(!ws.mid_message());
    }

    #[test]
    fn frames_left_unread_behind_an_upgrade_are_followed() {
        // A request of exactly one of tungstenite's 4 KiB reads, and the
        // first bytes of a frame behind it in the same push: tungstenite
        // takes the request whole without seeing them.
        let pad = 4096 - UPGRADE.len() - "X-Pad: \r\n".len();
        let request = UPGRADE.replacen(
            "\r\n\r\n",
            &format!("\r\nX-Pad: {}\r\n\r\n", "p".repeat(pad)),
            1,
        );
        assert_eq!(request.len(), 4096);
        let sip = b"OPTIONS sip:sbc.example SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let whole = frame(1, sip, [1, 2, 3, 4]);
        let (head, tail) = whole.split_at(4);
        let mut ws = WsConn::new(65536);
        let mut first = request.into_bytes();
        first.extend_from_slice(head);
        let (r, got) = collect(&mut ws, &first);
        assert_eq!(r, Ok(()));
        assert!(ws.is_open());
        assert!(got.is_empty());
        assert!(ws.mid_message(), "the frame begun behind the request");
        let (r, got) = collect(&mut ws, tail);
        assert_eq!((r, got), (Ok(()), vec![Bytes::copy_from_slice(sip)]));
        assert!(!ws.mid_message());
    }

    #[test]
    fn the_sbc_closing_says_going_away_and_carries_nothing_after() {
        let mut ws = WsConn::new(65536);
        assert_eq!(collect(&mut ws, UPGRADE.as_bytes()).0, Ok(()));
        ws.output();
        ws.close();
        // FIN + close, 2 bytes of payload: 1001 (going away).
        assert_eq!(ws.output(), [0x88, 2, 0x03, 0xe9]);
        assert!(!ws.send(Bytes::from_static(b"late")));
        // Not upgraded yet: nothing to say.
        let mut fresh = WsConn::new(65536);
        fresh.close();
        assert!(fresh.output().is_empty());
    }

    #[test]
    fn pings_are_answered_and_a_close_ends_it() {
        let mut ws = WsConn::new(65536);
        assert_eq!(collect(&mut ws, UPGRADE.as_bytes()).0, Ok(()));
        ws.output();
        assert_eq!(
            collect(&mut ws, &frame(9, b"hi", [5, 5, 5, 5])),
            (Ok(()), vec![])
        );
        let pong = ws.output();
        assert_eq!(&pong[..], &[0x8a, 2, b'h', b'i']);
        assert_eq!(
            collect(&mut ws, &frame(8, &[0x03, 0xe8], [1, 1, 1, 1])).0,
            Err(WsEnd::Closed)
        );
        assert_eq!(ws.output().first(), Some(&0x88), "the close is answered");
        assert!(!ws.send(Bytes::from_static(b"late")));
    }

    #[test]
    fn refuses_upgrades_without_sip_and_garbage_and_oversize_messages() {
        let mut ws = WsConn::new(65536);
        let plain = UPGRADE.replace("Sec-WebSocket-Protocol: sip\r\n", "");
        assert_eq!(collect(&mut ws, plain.as_bytes()).0, Err(WsEnd::Upgrade));
        assert!(
            String::from_utf8(ws.output())
                .unwrap()
                .starts_with("HTTP/1.1 400")
        );

        let mut ws = WsConn::new(65536);
        let sip = b"INVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(collect(&mut ws, sip).0, Err(WsEnd::Upgrade));

        let mut ws = WsConn::new(65536);
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST + 1));
        assert_eq!(collect(&mut ws, endless.as_bytes()).0, Err(WsEnd::Upgrade));

        let mut ws = WsConn::new(100);
        assert_eq!(collect(&mut ws, UPGRADE.as_bytes()).0, Ok(()));
        assert_eq!(
            collect(&mut ws, &frame(1, &[b'a'; 101], [0; 4])).0,
            Err(WsEnd::Protocol)
        );
        // An unmasked client frame is a protocol error (RFC 6455 §5.1).
        let mut ws = WsConn::new(65536);
        assert_eq!(collect(&mut ws, UPGRADE.as_bytes()).0, Ok(()));
        assert_eq!(collect(&mut ws, &[0x81, 1, b'x']).0, Err(WsEnd::Protocol));
    }
}
