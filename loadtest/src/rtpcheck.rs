//! SIPp's RTP check, sans-IO: a call's SRTP keys from the SDP it sent and
//! received (RFC 4568), a pattern stream's check of what comes back, and
//! the far end's echo.
//!
//! A caller plays `rtp_stream="apattern"` (every payload byte the
//! pattern's); the callee runs `rtp_echo="startaudio"` and sends each
//! packet back, unprotected with the caller's key and protected with its
//! own when the SDP carried `a=crypto` lines. The caller counts the
//! packets that came back with the pattern; when the call ends, the check
//! fails if the share that did not reaches the tolerance
//! (`-audiotolerance`, `-videotolerance`), and the run exits 253 as
//! SIPp's `EXIT_RTPCHECK_FAILED`.

use crate::srtp::{Context, Sdes, SrtpError};

/// The two SRTP directions of one stream.
#[derive(Debug)]
pub struct Pair {
    /// What we send, with our key.
    pub tx: Context,
    /// What the peer sends, with its key.
    pub rx: Context,
}

/// A call's SDES lines per stream kind (0 audio, 1 video).
#[derive(Debug, Default, Clone)]
pub struct Keys {
    /// The lines of our last SDP with that kind of stream.
    local: [Vec<Sdes>; 2],
    /// The peer's.
    remote: [Vec<Sdes>; 2],
    /// The peer's SDP came after ours: ours was the offer, its the
    /// answer.
    peer_last: [bool; 2],
    /// The last SDP of that kind (either side's) had `a=crypto` lines,
    /// none of them one sbc-load can use.
    unusable: [bool; 2],
}

/// One stream kind's section of an SDP body: the `a=crypto` lines
/// sbc-load can use, and how many it cannot.
#[derive(Debug, Default)]
struct Section {
    lines: Vec<Sdes>,
    unusable: usize,
}

/// Per stream kind (audio, video): the `a=crypto` lines of the first
/// active section of that kind (port not 0, as SIPp reads it) in an SDP
/// body, `None` when it has none.
fn sections(sdp: &[u8]) -> [Option<Section>; 2] {
    let mut found: [Option<Section>; 2] = [None, None];
    // The section being read (its kind), if it is the first of its kind.
    let mut current = None;
    for line in sdp.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(m) = line.strip_prefix(b"m=") {
            let kind = if m.starts_with(b"audio ") {
                Some(0)
            } else if m.starts_with(b"video ") {
                Some(1)
            } else {
                None
            };
            let port = m.split(|&b| b == b' ').nth(1).unwrap_or_default();
            let kind = kind.filter(|_| port != b"0");
            current = kind.filter(|&k: &usize| found[k].is_none());
            if let Some(k) = current {
                found[k] = Some(Section::default());
            }
            continue;
        }
        let (Some(k), Some(value)) = (current, line.strip_prefix(b"a=crypto:")) else {
            continue;
        };
        if let Some(section) = found[k].as_mut() {
            match std::str::from_utf8(value).ok().and_then(Sdes::parse) {
                Some(sdes) => section.lines.push(sdes),
                None => section.unusable += 1,
            }
        }
    }
    found
}

/// The SDP body of a SIP message (after its blank line), if any.
pub fn body(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|at| message.get(at + 4..))
        .unwrap_or_default()
}

/// Whether an SDP body has a crypto line at all (to keep calls without
/// SRTP free of [`Keys`]).
pub fn has_crypto(sdp: &[u8]) -> bool {
    sdp.windows(9).any(|w| w == b"a=crypto:")
}

impl Keys {
    /// Our SDP went out: its sections' lines are ours now.
    pub fn sent(&mut self, sdp: &[u8]) {
        self.take(sdp, false);
    }

    /// The peer's SDP came in.
    pub fn received(&mut self, sdp: &[u8]) {
        self.take(sdp, true);
    }

    /// An SDP of ours or the peer's: each stream kind it has replaces
    /// that side's lines, and it is now the last of that kind.
    fn take(&mut self, sdp: &[u8], peer: bool) {
        for (k, section) in sections(sdp).into_iter().enumerate() {
            if let Some(s) = section {
                self.unusable[k] = s.lines.is_empty() && s.unusable > 0;
                let side = if peer {
                    &mut self.remote
                } else {
                    &mut self.local
                };
                side[k] = s.lines;
                self.peer_last[k] = peer;
            }
        }
    }

    /// Whether the last SDP of a kind asked for SRTP sbc-load cannot do
    /// (a suite, MKI or parameter it lacks): the stream then goes plain,
    /// with a warning.
    pub fn unusable(&self, video: bool) -> bool {
        self.unusable[usize::from(video)]
    }

    /// The master key our last SDP gave line `tag` of a kind (for
    /// `[cryptokeyparams1audio-N]`).
    pub fn local_master(&self, video: bool, tag: u32) -> Option<[u8; crate::srtp::MASTER_LEN]> {
        self.local[usize::from(video)]
            .iter()
            .find(|l| l.tag == tag)
            .map(|l| l.master)
    }

    /// The keys each way for a kind's stream: the answer's first line
    /// says which suite was agreed; our line and the peer's for it are
    /// those with its tag and suite (else its suite, else its tag).
    /// `None` unless both sides gave one: plain RTP.
    pub fn pair(&self, video: bool) -> Option<Box<Pair>> {
        let k = usize::from(video);
        let (local, remote) = (&self.local[k], &self.remote[k]);
        let agreed = if self.peer_last[k] {
            remote.first()
        } else {
            local.first()
        }?;
        let pick = |lines: &'_ [Sdes]| -> Option<Sdes> {
            lines
                .iter()
                .find(|l| l.tag == agreed.tag && l.suite == agreed.suite)
                .or_else(|| lines.iter().find(|l| l.suite == agreed.suite))
                .or_else(|| lines.iter().find(|l| l.tag == agreed.tag))
                .cloned()
        };
        let (ours, theirs) = (pick(local)?, pick(remote)?);
        Some(Box::new(Pair {
            tx: Context::new(&Sdes {
                suite: agreed.suite,
                ..ours
            }),
            rx: Context::new(&Sdes {
                suite: agreed.suite,
                ..theirs
            }),
        }))
    }
}

/// A pattern stream's check: packets sent, and those that came back
/// with the pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Check {
    pub sent: u64,
    pub ok: u64,
}

impl Check {
    /// SIPp's verdict: the check fails when the share of packets that
    /// did not come back right reaches `tolerance`; `None` when nothing
    /// was sent.
    pub fn passed(&self, tolerance: f64) -> Option<bool> {
        if self.sent == 0 {
            return None;
        }
        let bad = self.sent.saturating_sub(self.ok);
        Some((bad as f64 / self.sent as f64) < tolerance)
    }
}

/// Where an RTP packet's payload starts (after CSRCs and extension).
fn payload_at(rtp: &[u8]) -> Option<usize> {
    let first = *rtp.first()?;
    let mut at = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let ext = rtp.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (at <= rtp.len()).then_some(at)
}

/// Whether a packet that came back to a pattern stream carries exactly
/// `expected` (SRTP: once its tag is checked and it is decrypted;
/// `scratch` holds the plain packet).
pub fn came_back(
    pair: Option<&mut Pair>,
    data: &[u8],
    scratch: &mut Vec<u8>,
    expected: &[u8],
) -> Result<bool, SrtpError> {
    let plain = match pair {
        Some(p) => {
            scratch.clear();
            p.rx.unprotect(data, scratch)?;
            scratch.as_slice()
        }
        None => data,
    };
    Ok(payload_at(plain).and_then(|at| plain.get(at..)) == Some(expected))
}

/// The far end's echo of one packet, appended to `out`: as it came
/// (plain RTP), or unprotected with the peer's key and protected with
/// ours.
pub fn echo(
    pair: Option<&mut Pair>,
    data: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), SrtpError> {
    match pair {
        Some(p) => {
            scratch.clear();
            // Sent back under the rollover counter it came with.
            let roc = p.rx.unprotect(data, scratch)?;
            p.tx.protect_as(scratch, roc, out)
        }
        None => {
            out.extend_from_slice(data);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::srtp::Suite;

    fn line(tag: u32, suite: Suite, master: &[u8; 30], ue: bool) -> String {
        format!(
            "a=crypto:{tag} {} inline:{}{}\r\n",
            suite.name(),
            Sdes::inline(master),
            if ue { " UNENCRYPTED_SRTP" } else { "" }
        )
    }

    fn sdp(audio: &[String], video: &[String]) -> Vec<u8> {
        let mut s =
            String::from("v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/SAVP 0\r\n");
        s.extend(audio.iter().cloned());
        s.push_str("m=video 6002 RTP/SAVP 96\r\n");
        s.extend(video.iter().cloned());
        s.into_bytes()
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0xca, 0x11, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    fn key() -> [u8; 30] {
        Sdes::random_master().unwrap()
    }

    #[test]
    fn offer_and_answer_pair_each_sides_key_for_the_agreed_suite() {
        let (a1, a2, b1) = (key(), key(), key());
        // The caller offers 80 (tag 1) and 32 (tag 2); the callee takes
        // 32, under its tag 2 (RFC 4568) or, as SIPp's scenarios do, 1.
        let offer = sdp(
            &[
                line(1, Suite::AesCm128HmacSha1_80, &a1, false),
                line(2, Suite::AesCm128HmacSha1_32, &a2, false),
            ],
            &[],
        );
        for tag in [2, 1] {
            let answer = sdp(&[line(tag, Suite::AesCm128HmacSha1_32, &b1, false)], &[]);
            let (mut caller, mut callee) = (Keys::default(), Keys::default());
            caller.sent(&offer);
            callee.received(&offer);
            callee.sent(&answer);
            caller.received(&answer);
            let mut c = caller.pair(false).unwrap();
            let mut s = callee.pair(false).unwrap();
            assert!(caller.pair(true).is_none(), "no video lines: plain RTP");
            // Caller -> callee -> caller, through the echo.
            let sent = rtp(7, &[0xaa; 160]);
            let mut wire = Vec::new();
            c.tx.protect(&sent, &mut wire).unwrap();
            assert_eq!(wire.len(), sent.len() + 4, "tag {tag}: the 32-bit tag");
            let (mut scratch, mut back) = (Vec::new(), Vec::new());
            echo(Some(&mut s), &wire, &mut scratch, &mut back).unwrap();
            assert!(came_back(Some(&mut c), &back, &mut scratch, &[0xaa; 160]).unwrap());
            assert!(!came_back(Some(&mut c), &back, &mut scratch, &[0xbb; 160]).unwrap());
        }
    }

    #[test]
    fn a_wrong_key_fails_authentication_and_plain_rtp_echoes_as_is() {
        let (a, b) = (key(), key());
        let offer = sdp(&[line(1, Suite::AesCm128HmacSha1_80, &a, false)], &[]);
        let answer = sdp(&[line(1, Suite::AesCm128HmacSha1_80, &b, false)], &[]);
        let mut caller = Keys::default();
        caller.sent(&offer);
        caller.received(&answer);
        // The callee believes another offer: its echo cannot be read.
        let mut callee = Keys::default();
        callee.received(&sdp(
            &[line(1, Suite::AesCm128HmacSha1_80, &key(), false)],
            &[],
        ));
        callee.sent(&answer);
        let (mut c, mut s) = (caller.pair(false).unwrap(), callee.pair(false).unwrap());
        let mut wire = Vec::new();
        c.tx.protect(&rtp(1, &[0xcc; 20]), &mut wire).unwrap();
        let (mut scratch, mut back) = (Vec::new(), Vec::new());
        assert_eq!(
            echo(Some(&mut s), &wire, &mut scratch, &mut back),
            Err(SrtpError::Authentication)
        );
        // Without crypto lines on one side: plain RTP.
        let mut plain = Keys::default();
        plain.sent(&offer);
        plain.received(&sdp(&[], &[]));
        assert!(plain.pair(false).is_none());
        let p = rtp(2, &[0xdd; 20]);
        back.clear();
        echo(None, &p, &mut scratch, &mut back).unwrap();
        assert_eq!(back, p);
        assert!(came_back(None, &p, &mut scratch, &[0xdd; 20]).unwrap());
    }

    #[test]
    fn unencrypted_srtp_and_video_lines_are_read_per_section() {
        let (a, b) = (key(), key());
        let offer = sdp(
            &[line(1, Suite::AesCm128HmacSha1_80, &key(), false)],
            &[line(1, Suite::AesCm128HmacSha1_80, &a, true)],
        );
        let answer = sdp(&[], &[line(1, Suite::AesCm128HmacSha1_80, &b, true)]);
        let (mut caller, mut callee) = (Keys::default(), Keys::default());
        caller.sent(&offer);
        callee.received(&offer);
        callee.sent(&answer);
        caller.received(&answer);
        assert!(caller.pair(false).is_none(), "the answer took no audio key");
        let (mut c, mut s) = (caller.pair(true).unwrap(), callee.pair(true).unwrap());
        let sent = rtp(9, &[0xee; 40]);
        let mut wire = Vec::new();
        c.tx.protect(&sent, &mut wire).unwrap();
        assert_eq!(
            &wire[..sent.len()],
            &sent[..],
            "UNENCRYPTED_SRTP: not encrypted"
        );
        let (mut scratch, mut back) = (Vec::new(), Vec::new());
        echo(Some(&mut s), &wire, &mut scratch, &mut back).unwrap();
        assert!(came_back(Some(&mut c), &back, &mut scratch, &[0xee; 40]).unwrap());
        assert_eq!(caller.local_master(true, 1), Some(a));
        assert_eq!(caller.local_master(true, 2), None);
    }

    proptest::proptest! {
        /// Any SDP body is read without a panic, and plain RTP of any
        /// bytes echoes as it came.
        #[test]
        fn any_sdp_is_read_and_plain_packets_echo_as_they_came(
            sdp in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            packet in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
        ) {
            let mut k = Keys::default();
            k.received(&sdp);
            k.sent(&sdp);
            let _ = (k.pair(false), k.pair(true), k.unusable(false));
            let (mut scratch, mut out) = (Vec::new(), Vec::new());
            echo(None, &packet, &mut scratch, &mut out).unwrap();
            proptest::prop_assert_eq!(&out, &packet);
            let _ = came_back(None, &packet, &mut scratch, &[0xaa; 4]);
        }
    }

    #[test]
    fn the_verdict_follows_the_tolerance() {
        let c = Check { sent: 100, ok: 0 };
        assert_eq!(c.passed(1.0), Some(false), "none came back");
        let c = Check { sent: 100, ok: 1 };
        assert_eq!(c.passed(1.0), Some(true), "SIPp's default: one is enough");
        assert_eq!(c.passed(0.5), Some(false));
        let c = Check { sent: 100, ok: 95 };
        assert_eq!(c.passed(0.1), Some(true));
        assert_eq!(c.passed(0.05), Some(false));
        assert_eq!(Check::default().passed(1.0), None);
    }

    #[test]
    fn sdp_bodies_are_found_and_the_first_active_section_of_a_kind_counts() {
        let msg = b"INVITE sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nv=0";
        assert_eq!(body(msg), b"v=0");
        assert_eq!(body(b"no body"), b"");
        let a = key();
        let s = format!(
            "m=audio 0 RTP/SAVP 0\r\n{}m=audio 7000 RTP/SAVP 0\r\n{}m=audio 7002 RTP/SAVP 0\r\n{}",
            line(1, Suite::AesCm128HmacSha1_80, &key(), false),
            line(1, Suite::NullHmacSha1_32, &a, false),
            line(1, Suite::AesCm128HmacSha1_32, &key(), false)
        );
        assert!(has_crypto(s.as_bytes()));
        let found = sections(s.as_bytes());
        let audio = &found[0].as_ref().unwrap().lines;
        assert_eq!((audio.len(), audio[0].suite), (1, Suite::NullHmacSha1_32));
        assert!(found[1].is_none());
        // Lines sbc-load cannot use are told apart from none at all.
        let mut k = Keys::default();
        k.received(
            b"m=audio 7000 RTP/SAVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAAA\r\n",
        );
        assert!(k.unusable(false) && !k.unusable(true));
        k.received(b"m=audio 7000 RTP/AVP 0\r\n");
        assert!(!k.unusable(false));
    }
}
