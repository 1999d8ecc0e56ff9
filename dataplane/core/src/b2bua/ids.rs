//! Identifiers the SBC mints (Call-ID, tags, branches) and shard ownership.
//!
//! A B-leg Call-ID carries the owner shard and the call's slot, protected by
//! a MAC, so any shard can tell who owns a message for a call it did not
//! create and the owner finds the call without hashing. A-leg messages carry
//! the caller's Call-ID; their owner is a keyed hash of it, the same on every
//! shard, so retransmissions, CANCEL, ACK and in-dialog requests from the
//! caller land where the call lives.

use std::hash::Hasher;

use bytes::{BufMut, Bytes, BytesMut};
use siphasher::sip::SipHasher13;

use crate::hex::parse_hex;

/// Index of a shard (thread) in the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// A call's slot in its shard's table; `generation` tells reuses apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef {
    pub index: u32,
    pub generation: u16,
}

/// Process-wide secret keys, shared by all shards. Its `Debug` output
/// never shows the keys.
#[derive(Clone, Copy)]
pub struct Secrets {
    owner: (u64, u64),
    mac: (u64, u64),
    ids: (u64, u64),
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Keys from 48 bytes: random ones from the operating system in the
    /// I/O layer (`sbc_dataplane::shard::os_secrets`), fixed ones in tests.
    pub fn from_bytes(k: [u8; 48]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&k[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Secrets {
            owner: (word(0), word(1)),
            mac: (word(2), word(3)),
            ids: (word(4), word(5)),
        }
    }

    fn hash(key: (u64, u64), parts: &[&[u8]]) -> u64 {
        let mut h = SipHasher13::new_with_keys(key.0, key.1);
        for p in parts {
            h.write(p);
        }
        h.finish()
    }

    /// A keyed hash of a source address (for tables attackers fill).
    pub fn source_slot(&self, ip: std::net::IpAddr) -> u64 {
        match ip {
            std::net::IpAddr::V4(a) => Self::hash(self.ids, &[&a.octets()]),
            std::net::IpAddr::V6(a) => Self::hash(self.ids, &[&a.octets()]),
        }
    }

    /// A keyed hash of `key` for spreading work (which tick of an
    /// interval an account's keepalive goes in).
    pub fn spread(&self, key: &[u8]) -> u64 {
        Self::hash(self.ids, &[b"spread\0", key])
    }

    /// A keyed MAC over a nonce's body (the registrar's digest nonces):
    /// only this process can make one that verifies.
    pub fn nonce_mac(&self, body: &[u8]) -> u64 {
        Self::hash(self.mac, &[b"nonce\0", body])
    }

    /// The shard that owns a message with this Call-ID.
    pub fn owner(&self, call_id: &[u8], shards: u16) -> ShardId {
        if let Some((shard, _)) = self.decode_call_id(call_id) {
            return shard;
        }
        if let Some(shard) = self.decode_own_call_id(call_id) {
            return shard;
        }
        let shards = u64::from(shards.max(1));
        ShardId(u16::try_from(Self::hash(self.owner, &[call_id]) % shards).unwrap_or(0))
    }

    /// Decodes a Call-ID minted by [`IdMinter::put_call_id`]: `Some` only when
    /// its MAC verifies.
    pub fn decode_call_id(&self, call_id: &[u8]) -> Option<(ShardId, CallRef)> {
        // Layout (hex): shard(2) index(6) generation(4) random(12) mac(8).
        if call_id.len() != 32 {
            return None;
        }
        let (body, mac) = call_id.split_at(24);
        let mac = parse_hex(mac)?;
        if mac != Self::hash(self.mac, &[body]) & 0xffff_ffff {
            return None;
        }
        let shard = u16::try_from(parse_hex(&body[0..2])?).ok()?;
        let index = u32::try_from(parse_hex(&body[2..8])?).ok()?;
        let generation = u16::try_from(parse_hex(&body[8..12])?).ok()?;
        Some((ShardId(shard), CallRef { index, generation }))
    }
}

impl Secrets {
    /// Decodes a Call-ID minted by [`IdMinter::own_call_id`] (requests the
    /// SBC sends outside calls): `Some` with the shard when its MAC
    /// verifies.
    pub fn decode_own_call_id(&self, call_id: &[u8]) -> Option<ShardId> {
        // Layout: 'o', shard(2 hex), random(21 hex), mac(8 hex).
        let rest = call_id.strip_prefix(b"o")?;
        if rest.len() != 31 {
            return None;
        }
        let (body, mac) = call_id.split_at(24);
        if parse_hex(mac)? != Self::hash(self.mac, &[body]) & 0xffff_ffff {
            return None;
        }
        let shard = u16::try_from(parse_hex(&rest[0..2])?).ok()?;
        Some(ShardId(shard))
    }
}

/// Appends the low `digits` hex digits of `value` (at most 16) in one
/// write.
fn put_hex(buf: &mut impl BufMut, value: u64, digits: usize) {
    let mut text = [0u8; 16];
    let out = &mut text[..digits.min(16)];
    crate::hex::write_hex(out, value);
    buf.put_slice(out);
}

/// Length of a minted tag.
pub const TAG_LEN: usize = 16;
/// Length of a minted B-leg Call-ID.
pub const CALL_ID_LEN: usize = 32;

/// Length of a minted branch: the RFC 3261 cookie and 16 hex digits.
pub const BRANCH_LEN: usize = 23;

/// A Via branch the SBC minted: fixed length, so kept inline (no
/// allocation for each transaction the SBC starts).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Branch([u8; BRANCH_LEN]);

impl std::ops::Deref for Branch {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Mints unpredictable identifiers for one shard: a keyed PRF over a counter.
#[derive(Debug)]
pub struct IdMinter {
    secrets: Secrets,
    shard: ShardId,
    counter: u64,
}

impl IdMinter {
    pub fn new(secrets: Secrets, shard: ShardId) -> Self {
        IdMinter {
            secrets,
            shard,
            counter: 0,
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// 64 unpredictable bits.
    pub fn random(&mut self) -> u64 {
        self.counter += 1;
        Secrets::hash(
            self.secrets.ids,
            &[&self.shard.0.to_le_bytes(), &self.counter.to_le_bytes()],
        )
    }

    /// A Call-ID for a request the SBC sends outside calls (OPTIONS,
    /// REGISTER): it names this shard, so responses come back here.
    pub fn own_call_id(&mut self) -> Bytes {
        let mut b = BytesMut::with_capacity(32);
        b.put_u8(b'o');
        put_hex(&mut b, u64::from(self.shard.0) & 0xff, 2);
        let r = self.random();
        put_hex(&mut b, r & 0x1f_ffff_ffff_ffff, 13);
        let r = self.random();
        put_hex(&mut b, r & 0xff_ffff_ffff, 8);
        let mac = Secrets::hash(self.secrets.mac, &[&b[..]]) & 0xffff_ffff;
        put_hex(&mut b, mac, 8);
        b.freeze()
    }

    /// A B-leg Call-ID naming this shard and the call's slot (calls
    /// write theirs into their own buffer: [`IdMinter::put_call_id`]).
    #[cfg(test)]
    pub fn call_id(&mut self, call: CallRef) -> Bytes {
        let mut b = BytesMut::with_capacity(CALL_ID_LEN);
        self.put_call_id(call, &mut b);
        b.freeze()
    }

    /// Appends a B-leg Call-ID (`CALL_ID_LEN` bytes) to `buf`, e.g. a
    /// call's own buffer.
    pub fn put_call_id(&mut self, call: CallRef, buf: &mut BytesMut) {
        let start = buf.len();
        put_hex(buf, u64::from(self.shard.0) & 0xff, 2);
        put_hex(buf, u64::from(call.index) & 0xff_ffff, 6);
        put_hex(buf, u64::from(call.generation), 4);
        let r = self.random();
        put_hex(buf, r & 0xffff_ffff_ffff, 12);
        let mac = Secrets::hash(self.secrets.mac, &[&buf[start..]]) & 0xffff_ffff;
        put_hex(buf, mac, 8);
    }

    /// A From/To tag.
    pub fn tag(&mut self) -> Bytes {
        let mut b = BytesMut::with_capacity(TAG_LEN);
        self.put_tag(&mut b);
        b.freeze()
    }

    /// Appends a From/To tag (`TAG_LEN` bytes) to `buf`.
    pub fn put_tag(&mut self, buf: &mut impl BufMut) {
        let r = self.random();
        put_hex(buf, r, TAG_LEN);
    }

    /// A Via branch with the RFC 3261 cookie.
    pub fn branch(&mut self) -> Branch {
        let mut b = [0u8; BRANCH_LEN];
        let (cookie, hex) = b.split_at_mut(crate::sip::BRANCH_COOKIE.len());
        cookie.copy_from_slice(crate::sip::BRANCH_COOKIE);
        let r = self.random();
        put_hex(&mut &mut hex[..], r, 16);
        Branch(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_bytes(std::array::from_fn(|i| u8::try_from(i).unwrap()))
    }

    #[test]
    fn minted_call_id_round_trips_and_names_owner() {
        let s = secrets();
        let mut m = IdMinter::new(s, ShardId(3));
        let call = CallRef {
            index: 0x12345,
            generation: 7,
        };
        let id = m.call_id(call);
        assert_eq!(id.len(), 32);
        assert_eq!(s.decode_call_id(&id), Some((ShardId(3), call)));
        assert_eq!(s.owner(&id, 8), ShardId(3));
    }

    #[test]
    fn own_call_ids_name_their_shard_and_are_no_call() {
        let s = secrets();
        let mut m = IdMinter::new(s, ShardId(5));
        let id = m.own_call_id();
        assert_eq!(id.len(), 32);
        assert_eq!(s.decode_own_call_id(&id), Some(ShardId(5)));
        assert_eq!(s.decode_call_id(&id), None, "not a call's");
        assert_eq!(s.owner(&id, 8), ShardId(5));
        assert_ne!(m.own_call_id(), id, "fresh each time");
        let mut forged = id.to_vec();
        forged[2] = if forged[2] == b'1' { b'2' } else { b'1' };
        assert_eq!(s.decode_own_call_id(&forged), None);
        let call = m.call_id(CallRef {
            index: 1,
            generation: 1,
        });
        assert_eq!(s.decode_own_call_id(&call), None);
    }

    #[test]
    fn forged_or_foreign_call_ids_do_not_decode() {
        let s = secrets();
        let mut m = IdMinter::new(s, ShardId(1));
        let mut id = m
            .call_id(CallRef {
                index: 1,
                generation: 1,
            })
            .to_vec();
        id[5] = if id[5] == b'0' { b'1' } else { b'0' };
        assert_eq!(s.decode_call_id(&id), None);
        assert_eq!(s.decode_call_id(b"a84b4c76e66710@pc33.atlanta.com"), None);
        let other = Secrets::from_bytes([9; 48]);
        let id = m.call_id(CallRef {
            index: 1,
            generation: 1,
        });
        assert_eq!(other.decode_call_id(&id), None);
    }

    #[test]
    fn foreign_call_ids_spread_over_shards() {
        let s = secrets();
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let id = format!("{i}-12345@192.0.2.1");
            counts[usize::from(s.owner(id.as_bytes(), 4).0)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn tags_and_branches_are_distinct() {
        let mut m = IdMinter::new(secrets(), ShardId(0));
        let a = m.branch();
        let b = m.branch();
        assert_ne!(a, b);
        assert!(a.starts_with(b"z9hG4bK"));
        assert_ne!(m.tag(), m.tag());
    }
}
