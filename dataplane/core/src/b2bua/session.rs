//! Session timers (RFC 4028) as the B2BUA sees them.
//!
//! Refreshes (re-INVITE, UPDATE) are relayed end to end, so the two ends
//! negotiate the interval between themselves through the SBC. The SBC
//! takes the part RFC 4028 gives a proxy (§8): on a call's first INVITE it
//! refuses an interval below its minimum (422) or raises it, lowers one
//! above its own, and inserts its own when the caller asked for none
//! (`session_expires_s`); on a 2xx to a refresh that the answering side
//! did not take part in, it names the requester the refresher when the
//! requester supports timers (§8.2). Whatever the 2xx settles, the SBC
//! holds the call to it: when no refresh arrives in time it ends the call
//! with BYE on both legs, as the non-refreshing UA would (§10), so a call
//! whose ends vanished does not live on.

use std::time::{Duration, Instant};

use crate::policy::CallTimers;
use crate::refusal::Refusal;
use crate::sip::{CommaList, HeaderName, Message, Writer};

/// What a session refresh request (an INVITE or UPDATE) asked for, as it
/// left the SBC: the interval, and whether its sender supports timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    pub interval: u32,
    pub supported: bool,
}

/// What the SBC does with a session refresh request: a call's first
/// INVITE, a re-INVITE or an UPDATE (RFC 4028 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Relayed as it is; what it asked, if anything.
    Unchanged(Option<Asked>),
    /// Session-Expires and Min-SE replaced by these values.
    Rewrite { se: u32, min_se: u32, asked: Asked },
}

impl Plan {
    pub fn asked(self) -> Option<Asked> {
        match self {
            Plan::Unchanged(a) => a,
            Plan::Rewrite { asked, .. } => Some(asked),
        }
    }

    /// The replacement headers, when the INVITE's are replaced.
    pub fn rewrite(self) -> Option<(u32, u32)> {
        match self {
            Plan::Unchanged(_) => None,
            Plan::Rewrite { se, min_se, .. } => Some((se, min_se)),
        }
    }
}

/// The delta-seconds at the start of a Session-Expires or Min-SE value
/// (`1800;refresher=uac`); `None` when it is not a number.
fn delta(value: &[u8]) -> Option<u32> {
    let head = value.split(|&b| b == b';').next()?;
    u32::try_from(crate::sip::scan_decimal(head)?).ok()
}

/// The session interval a message names (its first Session-Expires).
pub(crate) fn session_expires(msg: &Message<'_>) -> Option<u32> {
    msg.value(HeaderName::SessionExpires).and_then(delta)
}

fn min_se(msg: &Message<'_>) -> Option<u32> {
    msg.value(HeaderName::MinSe).and_then(delta)
}

/// Whether the sender lists `timer` in Supported (RFC 4028 §7.1).
pub(crate) fn supports_timer(msg: &Message<'_>) -> bool {
    msg.all(HeaderName::Supported)
        .any(|h| CommaList::new(h.value).any(|t| t.eq_ignore_ascii_case(b"timer")))
}

/// RFC 4028 §8.1, the SBC as a proxy on a session refresh request (the
/// first INVITE, a re-INVITE, an UPDATE): an interval below the SBC's
/// minimum is refused with 422 when the caller
/// supports timers (it retries with the Min-SE the 422 names) and raised
/// otherwise; one above `session_expires_s` is lowered (never below the
/// request's own Min-SE); none at all gets `session_expires_s` when that
/// is set.
pub(crate) fn plan_request(msg: &Message<'_>, timers: &CallTimers) -> Result<Plan, Refusal> {
    let supported = supports_timer(msg);
    let theirs = min_se(msg).unwrap_or(0);
    let floor = timers.min_se.max(theirs);
    let rewrite = |se: u32| Plan::Rewrite {
        se,
        min_se: floor,
        asked: Asked {
            interval: se,
            supported,
        },
    };
    Ok(match (session_expires(msg), timers.session_expires) {
        (None, None) => Plan::Unchanged(None),
        (None, Some(ours)) => rewrite(ours.max(floor)),
        (Some(se), _) if se < timers.min_se => {
            if supported {
                return Err(Refusal::SessionIntervalTooSmall);
            }
            rewrite(floor)
        }
        (Some(se), Some(ours)) if se > ours.max(floor) => rewrite(ours.max(floor)),
        (Some(se), _) => Plan::Unchanged(Some(Asked {
            interval: se,
            supported,
        })),
    })
}

/// What a 2xx to a session refresh settles: the interval now in force
/// (`None`: no session timer) and whether the SBC must write it into the
/// relayed 2xx (the answering side did not take part, the requester
/// supports timers: RFC 4028 §8.2).
///
/// An interval below the SBC's `min_se` in a 2xx (a broken peer) is held
/// to `min_se`: the SBC does not end calls sooner than it would accept.
pub(crate) fn settle(
    answer: &Message<'_>,
    asked: Option<Asked>,
    min_se: u32,
) -> (Option<u32>, bool) {
    if let Some(se) = session_expires(answer) {
        return (Some(se.max(min_se)), false);
    }
    match asked {
        Some(a) if a.supported => (Some(a.interval), true),
        _ => (None, false),
    }
}

/// Writes the session interval into a relayed 2xx, with the requester
/// (the UAC of that transaction) as the refresher (RFC 4028 §8.2).
pub(crate) fn write_refresher(w: &mut Writer<'_>, interval: u32) {
    let mut n = itoa::Buffer::new();
    w.header(
        HeaderName::SessionExpires,
        &[n.format(interval).as_bytes(), b";refresher=uac"],
    );
    w.header(HeaderName::Require, &[b"timer"]);
}

/// The parameters of `msg`'s Session-Expires (`;refresher=uac`), kept
/// when the SBC changes its number.
pub(crate) fn params_of<'a>(msg: &Message<'a>) -> &'a [u8] {
    msg.value(HeaderName::SessionExpires)
        .and_then(|v| v.iter().position(|&b| b == b';').map(|i| &v[i..]))
        .unwrap_or(b"")
        .trim_ascii_end()
}

/// Writes the replacement Session-Expires and Min-SE of a rewritten
/// request: only the number changes; the sender's parameters (its
/// `refresher`, [`params_of`]) stay.
pub(crate) fn write_rewrite(w: &mut Writer<'_>, (se, min_se): (u32, u32), params: &[u8]) {
    let mut n = itoa::Buffer::new();
    w.header(
        HeaderName::SessionExpires,
        &[n.format(se).as_bytes(), params],
    );
    w.header_u32(HeaderName::MinSe, min_se);
}

/// The Session-Expires and Min-SE the SBC writes into a call's INVITEs
/// (its attempts), when it changed the caller's.
#[derive(Debug, Clone)]
pub(crate) struct Rewrite {
    pub se: u32,
    pub min_se: u32,
    /// The caller's parameters ([`params_of`]).
    pub params: bytes::Bytes,
    /// Already raised once for a callee's 422 (RFC 4028 §7.3).
    pub raised: bool,
}

impl Rewrite {
    pub fn write(&self, w: &mut Writer<'_>) {
        write_rewrite(w, (self.se, self.min_se), &self.params);
    }

    /// A callee answered 422 with `msg`'s Min-SE: the interval rises to
    /// it, once, as the UAC of the B leg would (RFC 4028 §7.3). False
    /// when there is nothing to raise to.
    pub fn raise_for(&mut self, msg: &Message<'_>, asked: Option<&mut Asked>) -> bool {
        let Some(min) = min_se(msg) else {
            return false;
        };
        if self.raised || min <= self.se || min > MAX_INTERVAL {
            return false;
        }
        self.raised = true;
        self.se = min;
        self.min_se = self.min_se.max(min);
        if let Some(a) = asked {
            a.interval = min;
        }
        true
    }
}

/// The longest session interval the SBC writes (a day).
const MAX_INTERVAL: u32 = 86_400;

/// When the SBC gives up on a refresh: at the interval's end less a third
/// of it, at most 32 s (RFC 4028 §10, the non-refresher's BYE).
pub(crate) fn deadline(now: Instant, interval: u32) -> Instant {
    let margin = (interval / 3).min(32);
    now + Duration::from_secs(u64::from(interval - margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn plan(extra: &str, session_expires: Option<u32>) -> Result<Plan, Refusal> {
        let raw = invite(extra);
        let msg = Message::parse(&raw).expect("parses");
        let timers = CallTimers {
            session_expires,
            ..CallTimers::default()
        };
        plan_request(&msg, &timers)
    }

    #[test]
    fn deltas_are_read_before_their_parameters() {
        assert_eq!(delta(b"1800;refresher=uac"), Some(1800));
        assert_eq!(delta(b" 90 "), Some(90));
        assert_eq!(delta(b"abc"), None);
        assert_eq!(delta(b""), None);
        assert_eq!(delta(b"99999999999999"), None);
        assert_eq!(delta(b"-5"), None);
    }

    #[test]
    fn the_first_invite_is_held_to_the_sbc_minimum_and_maximum() {
        let asked = |interval, supported| Asked {
            interval,
            supported,
        };
        // Nothing asked, nothing imposed.
        assert_eq!(plan("", None), Ok(Plan::Unchanged(None)));
        // Nothing asked: the SBC's own interval goes in.
        assert_eq!(
            plan("", Some(1800)),
            Ok(Plan::Rewrite {
                se: 1800,
                min_se: 90,
                asked: asked(1800, false)
            })
        );
        // Too small from a caller that supports timers: 422.
        assert_eq!(
            plan("Supported: timer\r\nSession-Expires: 60\r\n", None),
            Err(Refusal::SessionIntervalTooSmall)
        );
        // Too small from one that does not: raised.
        assert_eq!(
            plan("Session-Expires: 60\r\n", None),
            Ok(Plan::Rewrite {
                se: 90,
                min_se: 90,
                asked: asked(90, false)
            })
        );
        // Above the SBC's interval: lowered, but never below the caller's
        // own Min-SE.
        assert_eq!(
            plan("Supported: timer\r\nSession-Expires: 7200\r\n", Some(1800)),
            Ok(Plan::Rewrite {
                se: 1800,
                min_se: 90,
                asked: asked(1800, true)
            })
        );
        assert_eq!(
            plan(
                "Supported: 100rel, timer\r\nSession-Expires: 7200\r\nMin-SE: 3600\r\n",
                Some(1800)
            ),
            Ok(Plan::Rewrite {
                se: 3600,
                min_se: 3600,
                asked: asked(3600, true)
            })
        );
        // Within bounds: as it is (compact form x).
        assert_eq!(
            plan("k: timer\r\nx: 600;refresher=uac\r\n", Some(1800)),
            Ok(Plan::Unchanged(Some(asked(600, true))))
        );
    }

    #[test]
    fn a_2xx_without_the_header_names_a_supporting_requester_the_refresher() {
        let ok = |extra: &str| {
            format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        let with = ok("Session-Expires: 900;refresher=uas\r\nRequire: timer\r\n");
        let without = ok("");
        let with = Message::parse(&with).expect("parses");
        let without = Message::parse(&without).expect("parses");
        let supporting = Some(Asked {
            interval: 1800,
            supported: true,
        });
        let not = Some(Asked {
            interval: 1800,
            supported: false,
        });
        assert_eq!(settle(&with, supporting, 90), (Some(900), false));
        assert_eq!(settle(&with, None, 90), (Some(900), false));
        assert_eq!(settle(&with, None, 1000), (Some(1000), false), "floored");
        assert_eq!(settle(&without, supporting, 90), (Some(1800), true));
        assert_eq!(settle(&without, not, 90), (None, false));
        assert_eq!(settle(&without, None, 90), (None, false));
    }

    #[test]
    fn the_sbc_gives_up_a_third_early_at_most_32_seconds() {
        let t0 = Instant::now();
        assert_eq!(deadline(t0, 90), t0 + Duration::from_secs(60));
        assert_eq!(deadline(t0, 1800), t0 + Duration::from_secs(1768));
    }
}
