//! What the relay reads of an RTP packet: the sequence number, to estimate
//! loss per direction (RFC 3550 §A.1 / §A.3 extended sequence numbers).

/// Sequence tracking of one direction of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqStats {
    started: bool,
    base: u32,
    cycles: u32,
    max_seq: u16,
    pub received: u64,
}

impl SeqStats {
    /// Records a packet if it looks like RTP (version 2, 12-byte header).
    pub fn record(&mut self, packet: &[u8]) {
        let [first, _, hi, lo, ..] = *packet else {
            return;
        };
        if first >> 6 != 2 || packet.len() < 12 {
            return;
        }
        let seq = u16::from_be_bytes([hi, lo]);
        self.received += 1;
        if !self.started {
            self.started = true;
            self.base = u32::from(seq);
            self.max_seq = seq;
            return;
        }
        let delta = seq.wrapping_sub(self.max_seq);
        if delta != 0 && delta < 0x8000 {
            // In order (possibly with a gap); wrapped when it went down.
            if seq < self.max_seq {
                self.cycles += 1;
            }
            self.max_seq = seq;
        }
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let extended = (u64::from(self.cycles) << 16) + u64::from(self.max_seq);
        extended + 1 - u64::from(self.base)
    }

    /// Packets lost (never negative: duplicates are not counted as gains).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16) -> [u8; 12] {
        let s = seq.to_be_bytes();
        [0x80, 0, s[0], s[1], 0, 0, 0, 0, 0, 0, 0, 1]
    }

    #[test]
    fn counts_gaps_across_the_wrap() {
        let mut s = SeqStats::default();
        for seq in (65530u16..=65535).chain(0..10) {
            if seq != 65534 && seq != 3 {
                s.record(&rtp(seq));
            }
        }
        assert_eq!(s.expected(), 16);
        assert_eq!(s.received, 14);
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn ignores_non_rtp_and_late_packets() {
        let mut s = SeqStats::default();
        s.record(b"not rtp at all");
        s.record(&[0x80, 0]);
        assert_eq!(s.expected(), 0);
        s.record(&rtp(100));
        s.record(&rtp(102));
        s.record(&rtp(101));
        assert_eq!((s.expected(), s.lost()), (3, 0));
    }
}
