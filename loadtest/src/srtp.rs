//! SRTP (RFC 3711) with keys from SDP (SDES, RFC 4568), for SIPp's RTP
//! checks: `rtp_stream="apattern|vpattern"` sends a pattern and checks
//! what comes back, `rtp_echo="startaudio|startvideo"` sends back what
//! arrives, both protected when the SDP carried `a=crypto` lines.
//!
//! Sans-IO: a [`Context`] protects and unprotects RTP packets in memory.
//! Suites: AES_CM_128_HMAC_SHA1_80 and _32 (RFC 4568 §6.2), the same with
//! the NULL cipher (authenticated only, as SIPp's `NULL_HMAC_SHA1_*`), and
//! the `UNENCRYPTED_SRTP` session parameter (RFC 4568 §6.3.2). The key
//! derivation rate is 0 (keys derived once, §4.3.1); no MKI.

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Master key (16 bytes) and master salt (14 bytes), as `inline:` carries
/// them.
pub const MASTER_LEN: usize = 30;
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
const AUTH_KEY_LEN: usize = 20;
const RTP_HEADER: usize = 12;

/// An SDES crypto suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    NullHmacSha1_80,
    NullHmacSha1_32,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::NullHmacSha1_80 => "NULL_HMAC_SHA1_80",
            Suite::NullHmacSha1_32 => "NULL_HMAC_SHA1_32",
        }
    }

    pub fn parse(name: &str) -> Option<Suite> {
        [
            Suite::AesCm128HmacSha1_80,
            Suite::AesCm128HmacSha1_32,
            Suite::NullHmacSha1_80,
            Suite::NullHmacSha1_32,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Bytes of authentication tag on each packet.
    pub fn tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::NullHmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 | Suite::NullHmacSha1_32 => 4,
        }
    }

    fn encrypts(self) -> bool {
        matches!(
            self,
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32
        )
    }
}

/// One `a=crypto` line: `TAG SUITE inline:KEY [PARAMS]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sdes {
    pub tag: u32,
    pub suite: Suite,
    pub master: [u8; MASTER_LEN],
    /// `UNENCRYPTED_SRTP`: packets are authenticated, not encrypted.
    pub unencrypted: bool,
}

/// Never the key: it is a secret.
impl std::fmt::Debug for Sdes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sdes")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("unencrypted", &self.unencrypted)
            .finish_non_exhaustive()
    }
}

impl Sdes {
    /// Reads an `a=crypto:` line's value (after the colon); `None` when
    /// it is not one sbc-load can use (unknown suite, bad key).
    pub fn parse(value: &str) -> Option<Sdes> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next()?.parse().ok()?;
        let suite = Suite::parse(fields.next()?)?;
        // inline:KEY[|LIFETIME][|MKI:LEN]; several keys: the first. An
        // MKI (which every packet would carry) is not sbc-load's.
        let key = fields.next()?.strip_prefix("inline:")?;
        let key = key.split(';').next()?;
        let mut parts = key.split('|');
        let key = parts.next()?;
        if parts.any(|p| p.contains(':')) {
            return None;
        }
        let bytes = BASE64.decode(key).ok()?;
        let master = <[u8; MASTER_LEN]>::try_from(bytes.as_slice()).ok()?;
        let mut unencrypted = false;
        for p in fields {
            match p {
                "UNENCRYPTED_SRTP" => unencrypted = true,
                // A key derivation rate but 0, or no authentication:
                // not sbc-load's.
                "UNAUTHENTICATED_SRTP" => return None,
                p if p.starts_with("KDR=") && p != "KDR=0" => return None,
                _ => {}
            }
        }
        Some(Sdes {
            tag,
            suite,
            master,
            unencrypted,
        })
    }

    /// The master key and salt as `inline:` writes them (base64).
    pub fn inline(master: &[u8; MASTER_LEN]) -> String {
        BASE64.encode(master)
    }

    /// A fresh random master key and salt (`None`: the system has no
    /// randomness to give).
    pub fn random_master() -> Option<[u8; MASTER_LEN]> {
        let mut m = [0u8; MASTER_LEN];
        getrandom::fill(&mut m).ok()?;
        Some(m)
    }
}

/// Why a packet could not be protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Shorter than its RTP header (with CSRCs and extension) and tag.
    Truncated,
    /// Not RTP version 2.
    NotRtp,
    /// The authentication tag does not match.
    Authentication,
}

/// What the receiver knows of one SSRC (RFC 3711 §3.3.1).
#[derive(Debug, Clone, Copy)]
struct Received {
    ssrc: u32,
    roc: u32,
    highest: u16,
}

/// The session keys of one direction of one media stream.
pub struct Context {
    /// `None`: NULL cipher or `UNENCRYPTED_SRTP`.
    cipher: Option<Aes128>,
    salt: [u8; SALT_LEN],
    mac: HmacSha1,
    tag_len: usize,
    /// Sender: per SSRC, the rollover counter and the last sequence sent.
    sent: Vec<Received>,
    /// Receiver: per SSRC, the rollover counter and highest sequence.
    received: Vec<Received>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("encrypts", &self.cipher.is_some())
            .field("tag_len", &self.tag_len)
            .finish_non_exhaustive()
    }
}

/// The AES-CM key derivation of RFC 3711 §4.3.1 and §4.3.3 with a key
/// derivation rate of 0: the keystream of the master key from the master
/// salt with `label` in its 8th byte.
fn derive(master: &Aes128, salt: &[u8; SALT_LEN], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(salt);
    iv[7] ^= label;
    out.fill(0);
    keystream(master, &iv, out);
}

/// XORs `data` with AES-CM's keystream from `iv` (a 128-bit counter).
fn keystream(cipher: &Aes128, iv: &[u8; 16], data: &mut [u8]) {
    let core =
        ctr::CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(cipher.clone(), iv.into());
    StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
}

/// The RTP header's length (fixed part, CSRCs, extension).
fn header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    let first = *packet.first().ok_or(SrtpError::Truncated)?;
    if first >> 6 != 2 {
        return Err(SrtpError::NotRtp);
    }
    let mut len = RTP_HEADER + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let ext = packet.get(len + 2..len + 4).ok_or(SrtpError::Truncated)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if packet.len() < len {
        return Err(SrtpError::Truncated);
    }
    Ok(len)
}

fn seq_ssrc(packet: &[u8]) -> (u16, u32) {
    let b = |i: usize| packet.get(i).copied().unwrap_or(0);
    (
        u16::from_be_bytes([b(2), b(3)]),
        u32::from_be_bytes([b(8), b(9), b(10), b(11)]),
    )
}

impl Context {
    /// The context of an `a=crypto` line: its suite, key and whether
    /// packets are encrypted.
    pub fn new(sdes: &Sdes) -> Self {
        let (key, salt) = sdes.master.split_at(KEY_LEN);
        let master = Aes128::new(key.into());
        let mut master_salt = [0u8; SALT_LEN];
        master_salt.copy_from_slice(salt);
        let mut session_key = [0u8; KEY_LEN];
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        let mut session_salt = [0u8; SALT_LEN];
        derive(&master, &master_salt, 0x00, &mut session_key);
        derive(&master, &master_salt, 0x01, &mut auth_key);
        derive(&master, &master_salt, 0x02, &mut session_salt);
        let encrypts = sdes.suite.encrypts() && !sdes.unencrypted;
        Context {
            cipher: encrypts.then(|| Aes128::new(&session_key.into())),
            salt: session_salt,
            // HMAC takes a key of any length: this cannot fail.
            mac: <HmacSha1 as Mac>::new_from_slice(&auth_key)
                .unwrap_or_else(|_| <HmacSha1 as Mac>::new(&Default::default())),
            tag_len: sdes.suite.tag_len(),
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// AES-CM over `data` for the packet of `ssrc` at `index` (§4.1.1).
    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let Some(cipher) = &self.cipher else {
            return;
        };
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        keystream(cipher, &iv, data);
    }

    /// HMAC-SHA1 of the packet and the rollover counter (§4.2).
    fn tag(&self, packet: &[u8], roc: u32) -> [u8; 20] {
        let mut mac = self.mac.clone();
        mac.update(packet);
        mac.update(&roc.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Appends the SRTP packet of the RTP packet `rtp` to `out`, its
    /// rollover counter kept per SSRC as the receiver's (§3.3.1).
    pub fn protect(&mut self, rtp: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        header_len(rtp)?;
        let (seq, ssrc) = seq_ssrc(rtp);
        let (roc, at) = estimate(&self.sent, ssrc, seq);
        self.protect_as(rtp, roc, out)?;
        advance(&mut self.sent, at, ssrc, roc, seq);
        Ok(())
    }

    /// [`Context::protect`] under a rollover counter given: an echo sends
    /// each packet back under the one it came with.
    pub fn protect_as(&self, rtp: &[u8], roc: u32, out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = header_len(rtp)?;
        let (seq, ssrc) = seq_ssrc(rtp);
        let start = out.len();
        out.extend_from_slice(rtp);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        self.crypt(ssrc, index, &mut out[start + header..]);
        let tag = self.tag(&out[start..], roc);
        out.extend_from_slice(&tag[..self.tag_len]);
        Ok(())
    }

    /// Appends the RTP packet of the SRTP packet `srtp` to `out`, once
    /// its tag is checked; returns the rollover counter it came under.
    pub fn unprotect(&mut self, srtp: &[u8], out: &mut Vec<u8>) -> Result<u32, SrtpError> {
        let body = srtp
            .len()
            .checked_sub(self.tag_len)
            .ok_or(SrtpError::Truncated)?;
        let (packet, tag) = srtp.split_at(body);
        let header = header_len(packet)?;
        let (seq, ssrc) = seq_ssrc(packet);
        let (roc, at) = estimate(&self.received, ssrc, seq);
        let mut mac = self.mac.clone();
        mac.update(packet);
        mac.update(&roc.to_be_bytes());
        // Compared in constant time.
        mac.verify_truncated_left(tag)
            .map_err(|_| SrtpError::Authentication)?;
        advance(&mut self.received, at, ssrc, roc, seq);
        let start = out.len();
        out.extend_from_slice(packet);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        self.crypt(ssrc, index, &mut out[start + header..]);
        Ok(roc)
    }
}

/// The rollover counter of a packet of `ssrc` with sequence `seq`: RFC
/// 3711's index estimate (§3.3.1) from what `states` know of that SSRC
/// (its first packet: 0), and where that SSRC's state is.
fn estimate(states: &[Received], ssrc: u32, seq: u16) -> (u32, Option<usize>) {
    let at = states.iter().position(|r| r.ssrc == ssrc);
    let roc = match at.and_then(|i| states.get(i)) {
        Some(r) if r.highest < 0x8000 => {
            if seq > r.highest && seq - r.highest > 0x8000 {
                r.roc.wrapping_sub(1)
            } else {
                r.roc
            }
        }
        Some(r) if r.highest - 0x8000 > seq => r.roc.wrapping_add(1),
        Some(r) => r.roc,
        None => 0,
    };
    (roc, at)
}

/// An SSRC's state after a packet of `roc` and `seq` (§3.3.1: it only
/// moves forward).
fn advance(states: &mut Vec<Received>, at: Option<usize>, ssrc: u32, roc: u32, seq: u16) {
    match at.and_then(|i| states.get_mut(i)) {
        Some(r) if roc == r.roc.wrapping_add(1) => (r.roc, r.highest) = (roc, seq),
        Some(r) if roc == r.roc && seq > r.highest => r.highest = seq,
        Some(_) => {}
        None => states.push(Received {
            ssrc,
            roc,
            highest: seq,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sdes(suite: Suite, master: &[u8]) -> Sdes {
        Sdes {
            tag: 1,
            suite,
            master: master.try_into().unwrap(),
            unencrypted: false,
        }
    }

    const MASTER: &str = "E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6";

    #[test]
    fn session_keys_are_derived_as_rfc_3711_appendix_b3_lists_them() {
        let m = hex(MASTER);
        let master = Aes128::new(m[..16].into());
        let salt: [u8; 14] = m[16..].try_into().unwrap();
        let mut key = [0u8; 16];
        let mut auth = [0u8; 20];
        let mut session_salt = [0u8; 14];
        derive(&master, &salt, 0, &mut key);
        derive(&master, &salt, 1, &mut auth);
        derive(&master, &salt, 2, &mut session_salt);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    #[test]
    fn the_keystream_is_rfc_3711_appendix_b2s() {
        // Session key and salt given, SSRC 0, index 0: a zero payload
        // encrypts to the keystream itself.
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let ctx = Context {
            cipher: Some(Aes128::new(&key.into())),
            salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            mac: <HmacSha1 as Mac>::new_from_slice(b"k").unwrap(),
            tag_len: 10,
            sent: Vec::new(),
            received: Vec::new(),
        };
        let mut data = vec![0u8; 48];
        ctx.crypt(0, 0, &mut data);
        assert_eq!(
            data,
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
        // The first block is AES of the IV (salt shifted by 16 bits).
        let mut block: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        aes::cipher::BlockEncrypt::encrypt_block(&Aes128::new(&key.into()), (&mut block).into());
        assert_eq!(block.to_vec(), data[..16].to_vec());
    }

    #[test]
    fn a_packet_is_protected_as_libsrtps_reference_packet() {
        let rtp = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let want =
            hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb");
        let key = sdes(Suite::AesCm128HmacSha1_80, &hex(MASTER));
        let mut out = Vec::new();
        Context::new(&key).protect(&rtp, &mut out).unwrap();
        assert_eq!(out, want);
        let mut back = Vec::new();
        Context::new(&key).unprotect(&want, &mut back).unwrap();
        assert_eq!(back, rtp);
    }

    #[test]
    fn a_changed_byte_or_another_key_fails_authentication() {
        let m = Sdes::random_master().unwrap();
        let key = sdes(Suite::AesCm128HmacSha1_32, &m);
        let rtp = hex("8000 0001 00000010 00000042 aaaaaaaaaaaaaaaa");
        let mut srtp = Vec::new();
        Context::new(&key).protect(&rtp, &mut srtp).unwrap();
        assert_eq!(srtp.len(), rtp.len() + 4);
        assert_ne!(&srtp[12..rtp.len()], &rtp[12..], "the payload is encrypted");
        let mut out = Vec::new();
        let mut tampered = srtp.clone();
        tampered[13] ^= 1;
        assert_eq!(
            Context::new(&key).unprotect(&tampered, &mut out),
            Err(SrtpError::Authentication)
        );
        let other = sdes(Suite::AesCm128HmacSha1_32, &Sdes::random_master().unwrap());
        assert_eq!(
            Context::new(&other).unprotect(&srtp, &mut out),
            Err(SrtpError::Authentication)
        );
        assert_eq!(
            Context::new(&key).unprotect(&srtp[..5], &mut out),
            Err(SrtpError::Truncated)
        );
        assert!(out.is_empty(), "nothing is written for a refused packet");
    }

    #[test]
    fn null_cipher_and_unencrypted_srtp_authenticate_without_encrypting() {
        let m = Sdes::random_master().unwrap();
        let rtp = hex("8000 0001 00000010 00000042 bbbbbbbb");
        for key in [
            sdes(Suite::NullHmacSha1_80, &m),
            Sdes {
                unencrypted: true,
                ..sdes(Suite::AesCm128HmacSha1_80, &m)
            },
        ] {
            let mut srtp = Vec::new();
            Context::new(&key).protect(&rtp, &mut srtp).unwrap();
            assert_eq!(&srtp[..rtp.len()], &rtp[..], "{key:?}");
            assert_eq!(srtp.len(), rtp.len() + 10);
            let mut back = Vec::new();
            Context::new(&key).unprotect(&srtp, &mut back).unwrap();
            assert_eq!(back, rtp);
        }
    }

    #[test]
    fn the_rollover_counter_follows_a_sequence_wrap_on_both_sides() {
        let key = sdes(Suite::AesCm128HmacSha1_80, &Sdes::random_master().unwrap());
        let (mut tx, mut rx) = (Context::new(&key), Context::new(&key));
        for seq in [0xfffdu16, 0xfffe, 0xffff, 0, 1, 2] {
            let mut rtp = hex("8000 0000 00000010 00000042 cccccccc");
            rtp[2..4].copy_from_slice(&seq.to_be_bytes());
            let (mut srtp, mut back) = (Vec::new(), Vec::new());
            tx.protect(&rtp, &mut srtp).unwrap();
            rx.unprotect(&srtp, &mut back).unwrap();
            assert_eq!(back, rtp, "seq {seq}");
        }
        assert_eq!(rx.received[0].roc, 1);
        assert_eq!(tx.sent[0].roc, 1);
        // A late packet from before the wrap still authenticates.
        let mut tx2 = Context::new(&key);
        let mut late = hex("8000 fffc 00000010 00000042 cccccccc");
        let mut srtp = Vec::new();
        tx2.protect(&late, &mut srtp).unwrap();
        let mut back = Vec::new();
        rx.unprotect(&srtp, &mut back).unwrap();
        late.truncate(back.len());
        assert_eq!(back, late);
    }

    #[test]
    fn an_echo_keeps_each_packets_rollover_counter_across_a_reordered_wrap() {
        let (a, b) = (
            sdes(Suite::AesCm128HmacSha1_80, &Sdes::random_master().unwrap()),
            sdes(Suite::AesCm128HmacSha1_80, &Sdes::random_master().unwrap()),
        );
        // Caller -> echo (rx a, tx b) -> caller (rx b); 0xFFFF arrives
        // after 0x0000.
        let (mut tx, mut echo_rx, echo_tx, mut rx) = (
            Context::new(&a),
            Context::new(&a),
            Context::new(&b),
            Context::new(&b),
        );
        let packet = |seq: u16| {
            let mut p = hex("8000 0000 00000010 00000042 dddddddd");
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p
        };
        let mut wire = Vec::new();
        for seq in [0xfffe, 0x0000, 0xffff, 0x0001, 0x0002] {
            wire.push((seq, Vec::new()));
            tx.protect(&packet(seq), &mut wire.last_mut().unwrap().1)
                .unwrap();
        }
        // The sender's own order was 0xfffe, 0, 0xffff...: its counter
        // follows the estimate, not each backward step.
        assert_eq!(tx.sent[0].roc, 1);
        for (seq, srtp) in &wire {
            let mut plain = Vec::new();
            let roc = echo_rx.unprotect(srtp, &mut plain).unwrap();
            let mut back = Vec::new();
            echo_tx.protect_as(&plain, roc, &mut back).unwrap();
            let mut got = Vec::new();
            rx.unprotect(&back, &mut got).unwrap();
            assert_eq!(got, packet(*seq), "seq {seq:#x}");
        }
    }

    proptest::proptest! {
        /// Whatever arrives, unprotecting neither panics nor writes a
        /// refused packet; and any RTP packet (CSRCs, extension, any
        /// payload) comes back from protect and unprotect as it was.
        #[test]
        fn hostile_packets_are_refused_and_any_rtp_round_trips(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            csrcs in 0u8..4,
            ext_words in proptest::option::of(0u16..4),
            seq in proptest::prelude::any::<u16>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            suite in 0usize..4,
        ) {
            let suites = [
                Suite::AesCm128HmacSha1_80,
                Suite::AesCm128HmacSha1_32,
                Suite::NullHmacSha1_80,
                Suite::NullHmacSha1_32,
            ];
            let key = sdes(suites[suite], &[7u8; MASTER_LEN]);
            let mut out = Vec::new();
            if Context::new(&key).unprotect(&junk, &mut out).is_err() {
                proptest::prop_assert!(out.is_empty());
            }
            let mut rtp = vec![0x80 | csrcs | if ext_words.is_some() { 0x10 } else { 0 }, 0];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&[0, 0, 0, 9, 1, 2, 3, 4]);
            rtp.extend(std::iter::repeat_n(0xcc, 4 * usize::from(csrcs)));
            if let Some(words) = ext_words {
                rtp.extend_from_slice(&[0xbe, 0xde]);
                rtp.extend_from_slice(&words.to_be_bytes());
                rtp.extend(std::iter::repeat_n(0xee, 4 * usize::from(words)));
            }
            rtp.extend_from_slice(&payload);
            let (mut srtp, mut back) = (Vec::new(), Vec::new());
            Context::new(&key).protect(&rtp, &mut srtp).unwrap();
            Context::new(&key).unprotect(&srtp, &mut back).unwrap();
            proptest::prop_assert_eq!(back, rtp);
        }

        /// Any text after `a=crypto:` is read or refused, never a panic.
        #[test]
        fn any_crypto_line_is_read_or_refused(line in ".{0,120}") {
            let _ = Sdes::parse(&line);
        }
    }

    #[test]
    fn crypto_lines_are_read_and_written() {
        let m = Sdes::random_master().unwrap();
        let line = format!(
            "2 AES_CM_128_HMAC_SHA1_32 inline:{}|2^31 UNENCRYPTED_SRTP",
            Sdes::inline(&m)
        );
        let s = Sdes::parse(&line).unwrap();
        assert_eq!(
            (s.tag, s.suite, s.master, s.unencrypted),
            (2, Suite::AesCm128HmacSha1_32, m, true)
        );
        assert!(
            !format!("{s:?}").contains(&Sdes::inline(&m)),
            "no key in Debug"
        );
        let key = Sdes::inline(&m);
        assert!(Sdes::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} KDR=0")).is_some());
        for bad in [
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} KDR=24"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNAUTHENTICATED_SRTP"),
        ] {
            assert!(Sdes::parse(&bad).is_none(), "{bad}");
        }
        for bad in [
            "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            "1 F8_128_HMAC_SHA1_80 inline:AAAA",
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            "1 AES_CM_128_HMAC_SHA1_80 key:AAAA",
            "1",
        ] {
            assert!(Sdes::parse(bad).is_none(), "{bad}");
        }
    }
}
