//! Digest nonces (RFC 7616 §3.3, §5.4): stateless to issue, so a flood of
//! unauthenticated REGISTERs costs no memory; a nonce names when and by
//! which shard it was issued and carries a MAC, so it cannot be forged or
//! aged. The highest nonce count seen is kept for the last `WINDOW`
//! nonces the shard issued (a fixed table indexed by serial), so a
//! replayed answer is refused; an answer to an older nonce gets
//! `stale=true` and the client answers a fresh one (RFC 7616 §3.3). At
//! 16,000 challenges a second that leaves every nonce 4 s to be answered.

use std::time::{Duration, Instant};

use crate::b2bua::Secrets;
use crate::hex::{parse_hex, write_hex};

/// Nonces whose counts are kept, per shard (the most recent issued).
pub const WINDOW: usize = 65_536;

/// What a received nonce is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this shard and still young: `serial` names it.
    Fresh { serial: u32 },
    /// Ours but older than the lifetime: answer `stale=true` when the
    /// credentials were otherwise right.
    Stale,
    /// Not ours (forged, from another shard or an earlier run).
    Invalid,
}

/// One shard's nonces.
#[derive(Debug, Default)]
pub struct NonceBook {
    /// Issue times are counted from here (the first nonce).
    epoch: Option<Instant>,
    next: u32,
    /// Indexed by serial modulo [`WINDOW`]: (serial, highest nonce count
    /// seen plus one; 0: none). Allocated on the first count.
    seen: Vec<(u32, u32)>,
}

/// Layout, in lowercase hex: issued (ms since the epoch, 12), serial (8),
/// shard (4), MAC (16).
pub const LEN: usize = 40;
const BODY: usize = 24;

impl NonceBook {
    /// A fresh nonce (lowercase hex), held without an allocation.
    pub fn issue(&mut self, now: Instant, shard: u16, secrets: &Secrets) -> [u8; LEN] {
        let epoch = *self.epoch.get_or_insert(now);
        let ms = u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(0);
        let serial = self.next;
        self.next = self.next.wrapping_add(1);
        // `{ms:012x}{serial:08x}{shard:04x}{mac:016x}`, written without
        // the formatting machinery (a nonce per challenge).
        let mut nonce = [0u8; LEN];
        write_hex(&mut nonce[..12], ms & 0xffff_ffff_ffff);
        write_hex(&mut nonce[12..20], u64::from(serial));
        write_hex(&mut nonce[20..BODY], u64::from(shard));
        let mac = secrets.nonce_mac(&nonce[..BODY]);
        write_hex(&mut nonce[BODY..], mac);
        nonce
    }

    /// What `nonce` is, at `now`, for shard `shard`.
    pub fn check(
        &self,
        nonce: &[u8],
        now: Instant,
        lifetime: Duration,
        shard: u16,
        secrets: &Secrets,
    ) -> NonceCheck {
        let (Some(epoch), true) = (self.epoch, nonce.len() == LEN) else {
            return NonceCheck::Invalid;
        };
        let (body, mac) = nonce.split_at(BODY);
        if parse_hex(mac) != Some(secrets.nonce_mac(body)) {
            return NonceCheck::Invalid;
        }
        let (Some(ms), Some(serial), Some(owner)) = (
            parse_hex(&body[..12]),
            parse_hex(&body[12..20]),
            parse_hex(&body[20..24]),
        ) else {
            return NonceCheck::Invalid;
        };
        if owner != u64::from(shard) {
            return NonceCheck::Invalid;
        }
        let issued = epoch + Duration::from_millis(ms);
        if now.saturating_duration_since(issued) >= lifetime {
            return NonceCheck::Stale;
        }
        NonceCheck::Fresh {
            serial: u32::try_from(serial).unwrap_or(u32::MAX),
        }
    }

    /// Records nonce count `nc` for the nonce `serial` (one this book
    /// issued): true when it is higher than any seen with it (RFC 7616
    /// §3.4: a count not higher is a replay). False too for a nonce no
    /// longer among the last `WINDOW` issued: it is stale.
    pub fn count(&mut self, serial: u32, nc: u32) -> bool {
        let age = self.next.wrapping_sub(serial);
        if age == 0 || age > WINDOW as u32 {
            return false;
        }
        if self.seen.is_empty() {
            self.seen = vec![(0, 0); WINDOW];
        }
        let Some(slot) = self.seen.get_mut(serial as usize % WINDOW) else {
            return false;
        };
        if slot.0 != serial {
            // An older cycle's nonce held the slot: it is out of the window.
            *slot = (serial, 0);
        }
        let mark = nc.saturating_add(1);
        if mark <= slot.1 {
            return false;
        }
        slot.1 = mark;
        true
    }

    /// Nonces whose counts are held.
    pub fn counted(&self) -> usize {
        self.seen.iter().filter(|(_, mark)| *mark > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_bytes([7; 48])
    }

    const LIFE: Duration = Duration::from_secs(300);

    #[test]
    fn a_nonce_is_fresh_then_stale() {
        let mut book = NonceBook::default();
        let t0 = Instant::now();
        let n = book.issue(t0, 1, &secrets());
        assert_eq!(n.len(), LEN);
        assert!(matches!(
            book.check(&n[..], t0 + Duration::from_secs(299), LIFE, 1, &secrets()),
            NonceCheck::Fresh { serial: 0 }
        ));
        assert_eq!(
            book.check(&n[..], t0 + LIFE, LIFE, 1, &secrets()),
            NonceCheck::Stale
        );
    }

    #[test]
    fn a_nonce_reads_time_serial_shard_and_mac_in_hex() {
        let mut book = NonceBook::default();
        let t0 = Instant::now();
        book.issue(t0, 0xbeef, &secrets());
        let n = book.issue(t0 + Duration::from_millis(0x1234), 0xbeef, &secrets());
        // 12 digits of milliseconds, 8 of serial, 4 of shard.
        let body = "000000001234".to_owned() + "00000001" + "beef";
        let mac = secrets().nonce_mac(body.as_bytes());
        assert_eq!(&n[..], format!("{body}{mac:016x}").as_bytes());
    }

    #[test]
    fn forged_foreign_or_other_shard_nonces_are_invalid() {
        let mut book = NonceBook::default();
        let t0 = Instant::now();
        let n = book.issue(t0, 1, &secrets());
        assert_eq!(
            book.check(&n[..], t0, LIFE, 0, &secrets()),
            NonceCheck::Invalid,
            "another shard's nonce"
        );
        let other = Secrets::from_bytes([8; 48]);
        assert_eq!(
            book.check(&n[..], t0, LIFE, 1, &other),
            NonceCheck::Invalid,
            "an earlier run's nonce"
        );
        // Making it look younger breaks the MAC.
        let mut aged = n;
        aged[11] = if aged[11] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            book.check(&aged, t0, LIFE, 1, &secrets()),
            NonceCheck::Invalid
        );
        for junk in [&b""[..], b"abc", &[b'z'; LEN]] {
            assert_eq!(
                book.check(junk, t0, LIFE, 1, &secrets()),
                NonceCheck::Invalid
            );
        }
        assert_eq!(
            NonceBook::default().check(&n[..], t0, LIFE, 1, &secrets()),
            NonceCheck::Invalid,
            "a book that issued nothing knows no nonce"
        );
    }

    #[test]
    fn nonce_counts_must_rise() {
        let mut book = NonceBook::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            book.issue(t0, 0, &secrets());
        }
        assert!(book.count(3, 1));
        assert!(!book.count(3, 1), "replayed");
        assert!(book.count(3, 2));
        assert!(!book.count(3, 1), "older");
        assert!(book.count(4, 1), "another nonce has its own count");
        assert!(book.count(2, 0), "RFC 2069 form: no count, once");
        assert!(!book.count(2, 0), "replayed");
        assert!(!book.count(5, 1), "not issued yet");
        assert_eq!(book.counted(), 3);
    }

    #[test]
    fn only_the_latest_nonces_are_counted_in_fixed_memory() {
        let mut book = NonceBook::default();
        let t0 = Instant::now();
        for _ in 0..(WINDOW + 10) {
            book.issue(t0, 0, &secrets());
        }
        // The first ten have left the window: stale.
        assert!(!book.count(9, 1));
        assert!(book.count(10, 1));
        assert!(book.count((WINDOW + 9) as u32, 1));
        // Its slot was serial 9's; 9 is still refused.
        assert!(!book.count(9, 2));
        assert_eq!(book.seen.len(), WINDOW);
    }
}
