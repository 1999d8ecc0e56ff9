//! Where a connection's byte stream stands between the units its layers
//! frame: TLS records (RFC 8446 §5.1) and WebSocket frames (RFC 6455
//! §5.2). rustls and tungstenite buffer a unit in part out of our sight;
//! these cursors read only the length fields as the bytes pass, so the
//! shard can tell a peer that stopped in the middle of one from a peer
//! that is merely quiet, and bound the first like a SIP message in part.

/// The TLS record layer: a 5-byte header (type, version, length), then
/// `length` bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RecordCursor {
    /// Header bytes seen of the record under way (0 between records).
    have: u8,
    /// The length field's bytes as they come.
    length: [u8; 2],
    /// Bytes of the record's body still to come.
    left: usize,
}

const RECORD_HEADER: u8 = 5;

impl RecordCursor {
    /// Bytes received, in order.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            let Some((&b, rest)) = data.split_first() else {
                break;
            };
            data = rest;
            match self.have {
                3 => self.length[0] = b,
                4 => self.length[1] = b,
                _ => {}
            }
            self.have += 1;
            if self.have == RECORD_HEADER {
                self.have = 0;
                self.left = usize::from(u16::from_be_bytes(self.length));
            }
        }
    }

    /// A record has begun and not ended.
    pub(crate) fn mid_record(&self) -> bool {
        self.have > 0 || self.left > 0
    }
}

/// WebSocket framing: per frame a 2-byte head, 2 or 8 bytes of extended
/// length, 4 bytes of mask when masked, then the payload. A data message
/// may span frames: it is whole at its final (FIN) frame.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FrameCursor {
    head: [u8; MAX_HEAD],
    /// Head bytes seen of the frame under way.
    have: usize,
    /// Payload bytes of the frame under way still to come.
    left: u64,
    /// A data message was begun in a frame without FIN: its continuation
    /// is due (control frames may come between, RFC 6455 §5.4).
    open: bool,
}

const MAX_HEAD: usize = 14;

impl FrameCursor {
    /// Bytes received after the upgrade, in order.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.left -= n as u64;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            let Some((&b, rest)) = data.split_first() else {
                break;
            };
            data = rest;
            if let Some(slot) = self.head.get_mut(self.have) {
                *slot = b;
            }
            self.have += 1;
            if let Some(payload) = self.head.get(..self.have).and_then(frame_payload) {
                let first = self.head.first().copied().unwrap_or_default();
                // Text, binary or continuation (below 8): FIN ends the
                // message. Control frames leave it as it was.
                if first & 0x0f < 8 {
                    self.open = first & 0x80 == 0;
                }
                self.have = 0;
                self.left = payload;
            }
        }
    }

    /// A frame, or a message of several frames, has begun and not ended.
    pub(crate) fn mid_message(&self) -> bool {
        self.have > 0 || self.left > 0 || self.open
    }
}

/// The payload length once `head` holds a frame's whole head.
fn frame_payload(head: &[u8]) -> Option<u64> {
    let second = *head.get(1)?;
    let short = second & 0x7f;
    let extended = match short {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    if head.len() < 2 + extended + mask {
        return None;
    }
    let length = head.get(2..2 + extended)?;
    Some(match extended {
        0 => u64::from(short),
        _ => length.iter().fold(0u64, |n, &b| n << 8 | u64::from(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: usize) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&u16::try_from(body).unwrap().to_be_bytes());
        r.extend(std::iter::repeat_n(0xaa, body));
        r
    }

    /// A frame: `fin`, `opcode`, masked or not, `payload` bytes long.
    fn frame(fin: bool, opcode: u8, masked: bool, payload: usize) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | opcode];
        let mask = u8::from(masked) << 7;
        match payload {
            n if n < 126 => f.push(mask | n as u8),
            n if n <= 0xffff => {
                f.push(mask | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', payload));
        f
    }

    /// Pushes `stream` in pieces cut at `cuts`, and says after each piece
    /// whether the cursor is mid-unit.
    fn states<C: Default>(
        stream: &[u8],
        cuts: &[usize],
        push: impl Fn(&mut C, &[u8]),
        mid: impl Fn(&C) -> bool,
    ) -> Vec<bool> {
        let mut c = C::default();
        let mut at = 0;
        let mut out = Vec::new();
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            push(&mut c, &stream[at..cut]);
            out.push(mid(&c));
            at = cut;
        }
        out
    }

    #[test]
    fn records_are_whole_only_at_their_ends_however_they_are_cut() {
        let one = record(300);
        let mut stream = one.clone();
        stream.extend(record(0));
        stream.extend(record(16_384));
        let ends = [one.len(), one.len() + 5, stream.len()];
        // Every cut point: mid exactly when the cut is not at a record end.
        for cut in 1..stream.len() {
            let got = states(
                &stream,
                &[cut],
                RecordCursor::push,
                RecordCursor::mid_record,
            );
            assert_eq!(got, vec![!ends.contains(&cut), false], "cut at {cut}");
        }
        // Byte by byte.
        let mut c = RecordCursor::default();
        for (i, b) in stream.iter().enumerate() {
            c.push(std::slice::from_ref(b));
            assert_eq!(c.mid_record(), !ends.contains(&(i + 1)), "byte {i}");
        }
        assert!(!RecordCursor::default().mid_record());
    }

    #[test]
    fn frames_and_messages_of_several_frames_are_whole_only_at_their_ends() {
        // A whole masked text frame; a message in three fragments with a
        // ping between them; a long binary frame with a 16-bit length; an
        // empty frame; a frame with a 64-bit length.
        let parts = [
            (frame(true, 1, true, 40), false),
            (frame(false, 1, true, 10), true),
            (frame(false, 0, true, 10), true),
            (frame(true, 9, true, 2), true),
            (frame(true, 0, true, 5), false),
            (frame(true, 2, true, 300), false),
            (frame(true, 1, false, 0), false),
            (frame(true, 2, true, 70_000), false),
        ];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (f, open_after) in &parts {
            stream.extend_from_slice(f);
            ends.push((stream.len(), *open_after));
        }
        let whole_at = |n: usize| ends.iter().any(|&(e, open)| e == n && !open);
        for cut in (1..stream.len()).step_by(7).chain(ends.iter().map(|e| e.0)) {
            let got = states(&stream, &[cut], FrameCursor::push, FrameCursor::mid_message);
            assert_eq!(got, vec![!whole_at(cut), false], "cut at {cut}");
        }
        let mut c = FrameCursor::default();
        for (i, b) in stream.iter().enumerate().take(2_000) {
            c.push(std::slice::from_ref(b));
            assert_eq!(c.mid_message(), !whole_at(i + 1), "byte {i}");
        }
    }
}
