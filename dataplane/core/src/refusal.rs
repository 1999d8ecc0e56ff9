//! Every reason the SBC refuses a request itself, with the answer it
//! gives: status code, reason phrase, the headers that answer needs, the
//! metric label it is counted under, and whether it is answered at all.
//! Call sites say *why* ([`Refusal`]); the wire answer follows from it.
//! The same for a request the SBC had taken on and ends itself
//! ([`Ending`]: the caller cancelled, nobody answered in time, ...).

use std::borrow::Cow;

use crate::media::MediaError;
use crate::sip::{HeaderName, RequestError};

/// The methods the SBC answers or relays (RFC 3261 §20.5), for Allow in
/// 405 and in answers to OPTIONS.
pub const ALLOW: &[u8] = b"INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY, MESSAGE";

/// Why a request is refused (or, for the ACL, dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// BRIEF §8: a source the ACL denies is dropped without an answer.
    #[error("source denied by the ACL")]
    AclDenied,
    /// BRIEF §8 default deny: the source is no trunk (403).
    #[error("source matches no trunk")]
    UnknownSource,
    /// No route for the dialled number (404).
    #[error("no route for the dialled number")]
    NoRoute,
    /// RFC 3261 §16.3 step 4: our own call came back (482).
    #[error("the SBC's own call came back")]
    Loop,
    /// RFC 3261 §8.2.2.2: a merged request (482).
    #[error("merged request")]
    Merged,
    /// RFC 3261 §16.3 step 3: Max-Forwards reached zero (483).
    #[error("Max-Forwards exhausted")]
    TooManyHops,
    /// RFC 3261 §8.2: a request that does not parse (400, or 505).
    #[error("malformed request: {0}")]
    Malformed(RequestError),
    /// RFC 3261 §8.2.2.1: a Request-URI scheme we cannot route (416).
    #[error("unsupported Request-URI scheme")]
    UnsupportedScheme,
    /// A SIPS Request-URI (RFC 3261 §26.2.2, RFC 5630: TLS on every hop)
    /// that arrived over a transport that is not TLS (416).
    #[error("SIPS Request-URI over an insecure transport")]
    InsecureSips,
    /// A request that sets where requests back to its sender go (an
    /// INVITE, a target refresh) with a SIPS Contact or next-hop
    /// Record-Route, over a transport that is not TLS: those requests
    /// would need TLS on every hop (RFC 3261 §26.2.2) the sender does not
    /// use with the SBC (400).
    #[error("SIPS Contact or Record-Route over an insecure transport")]
    InsecureSipsTarget,
    /// RFC 3261 §8.2.2.3: Require with options we lack (420, with
    /// Unsupported listing them).
    #[error("unsupported extension required")]
    BadExtension,
    /// RFC 3261 §8.2.1: a known method not offered here (405, with Allow).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// RFC 3261 §8.2.1: an unknown method (501).
    #[error("method not implemented")]
    NotImplemented,
    /// RFC 3261 §12.2.2: an in-dialog request for no dialog we know (481).
    #[error("no such dialog")]
    NoDialog,
    /// RFC 3261 §12.2.2: a CSeq lower than the last one (500).
    #[error("CSeq out of order")]
    OutOfOrder,
    /// RFC 3261 §14.2: an INVITE while one is pending (491).
    #[error("another INVITE is pending")]
    Glare,
    /// SDP inside a body the relay cannot rewrite (415, with Accept).
    #[error("session description in an unsupported body")]
    UnsupportedMedia,
    /// The shard's call table is full (503).
    #[error("call table full")]
    CallTableFull,
    /// Every trunk the route names is down by its health probes (503).
    #[error("every trunk of the route is down")]
    TrunksDown,
    /// The calling trunk is at its `max_calls` or `max_cps` (503 with
    /// Retry-After, before any call state exists).
    #[error("the trunk's call limit is reached")]
    TrunkLimit,
    /// The shard is overloaded: new calls are shed (503 with Retry-After,
    /// before any call state exists).
    #[error("overloaded")]
    Overloaded,
    /// Too many requests of one dialog in flight or held (503 with
    /// Retry-After).
    #[error("too many requests in the dialog")]
    DialogBusy,
    /// SDP the media relay will not carry (488), or no ports (503).
    #[error("{0}")]
    Media(MediaError),
    /// The callee answered with SDP the relay cannot anchor: the INVITE
    /// ends with 488 as if the callee had refused (RFC 3264 §6).
    #[error("the callee's answer cannot be anchored")]
    UnusableAnswer,
    /// A call to an extension none of whose accounts is registered (480,
    /// RFC 3261 §21.4.18).
    #[error("no account of the extension is registered")]
    NotRegistered,
    /// RFC 4028 §8.1: a session interval below the SBC's minimum from a
    /// caller that supports timers (422, with the SBC's Min-SE).
    #[error("session interval too small")]
    SessionIntervalTooSmall,
    /// The SBC's `max_calls` across shards is reached (503 with
    /// Retry-After, before any call state exists).
    #[error("the SBC's call limit is reached")]
    CallLimit,
}

/// Why the SBC ends a request it had taken on (a call's INVITE, a
/// relayed request) with a final failure of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// RFC 3261 §9.2: the caller cancelled (487).
    Cancelled,
    /// Nobody answered in time: the attempts' or the relayed request's
    /// transaction timed out, or the call rang past its limit (RFC 3261
    /// §16.6 step 11, §16.7 step 6; 408).
    TimedOut,
    /// The far side accepted a re-offer with SDP the relay cannot carry
    /// (RFC 3264 §8: the originator's session stays as it was; 488).
    Unanchorable,
    /// A trunk's challenge was for the SBC, not for the caller (403).
    ChallengeNotForCaller,
    /// A trunk's 503 (RFC 3261 §16.7: not forwarded, it would name this
    /// hop), or the call ended for a reason of the SBC's own while its
    /// INVITE was unanswered (500).
    Internal,
}

impl Ending {
    /// Status code and reason phrase.
    pub fn answer(self) -> (u16, &'static [u8]) {
        match self {
            Ending::Cancelled => (487, b"Request Terminated"),
            Ending::TimedOut => (408, b"Request Timeout"),
            Ending::Unanchorable => (488, b"Not Acceptable Here"),
            Ending::ChallengeNotForCaller => (403, b"Forbidden"),
            Ending::Internal => (500, b"Server Internal Error"),
        }
    }
}

impl Refusal {
    /// The metric labels of `sbc_requests_rejected_total{reason}`; each
    /// refusal counts under one of them ([`Refusal::counter`]).
    pub const LABELS: [&'static str; 23] = [
        "acl_denied",
        "unknown_source",
        "no_route",
        "too_many_hops",
        "loop_detected",
        "malformed",
        "unsupported_uri_scheme",
        "bad_extension",
        "method_not_allowed",
        "no_dialog",
        "dialog_state",
        "unsupported_media_type",
        "call_table_full",
        "media_ports_exhausted",
        "media_not_acceptable",
        "trunks_down",
        "trunk_limit",
        "overload",
        "dialog_busy",
        "not_registered",
        "insecure_sips",
        "session_interval_too_small",
        "call_limit",
    ];

    /// Index of this refusal's label in [`Refusal::LABELS`].
    pub fn counter(self) -> usize {
        match self {
            Refusal::AclDenied => 0,
            Refusal::UnknownSource => 1,
            Refusal::NoRoute => 2,
            Refusal::TooManyHops => 3,
            Refusal::Loop | Refusal::Merged => 4,
            Refusal::Malformed(_) => 5,
            Refusal::UnsupportedScheme => 6,
            Refusal::BadExtension => 7,
            Refusal::MethodNotAllowed | Refusal::NotImplemented => 8,
            Refusal::NoDialog => 9,
            Refusal::OutOfOrder | Refusal::Glare => 10,
            Refusal::UnsupportedMedia => 11,
            Refusal::CallTableFull => 12,
            Refusal::Media(MediaError::PoolExhausted | MediaError::ShareExhausted) => 13,
            Refusal::Media(_) | Refusal::UnusableAnswer => 14,
            Refusal::TrunksDown => 15,
            Refusal::TrunkLimit => 16,
            Refusal::Overloaded => 17,
            Refusal::DialogBusy => 18,
            Refusal::NotRegistered => 19,
            Refusal::InsecureSips | Refusal::InsecureSipsTarget => 20,
            Refusal::SessionIntervalTooSmall => 21,
            Refusal::CallLimit => 22,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        Self::LABELS[self.counter()]
    }

    /// False when the request is dropped without an answer.
    pub fn is_answered(self) -> bool {
        self != Refusal::AclDenied
    }

    /// The status code of the answer.
    pub fn status(self) -> u16 {
        match self {
            Refusal::AclDenied | Refusal::UnknownSource => 403,
            Refusal::NoRoute => 404,
            Refusal::Loop | Refusal::Merged => 482,
            Refusal::TooManyHops => 483,
            Refusal::Malformed(e) => e.status(),
            Refusal::UnsupportedScheme | Refusal::InsecureSips => 416,
            Refusal::InsecureSipsTarget => 400,
            Refusal::BadExtension => 420,
            Refusal::MethodNotAllowed => 405,
            Refusal::NotImplemented => 501,
            Refusal::NoDialog => 481,
            Refusal::OutOfOrder => 500,
            Refusal::Glare => 491,
            Refusal::UnsupportedMedia => 415,
            Refusal::CallTableFull
            | Refusal::TrunksDown
            | Refusal::TrunkLimit
            | Refusal::CallLimit
            | Refusal::Overloaded
            | Refusal::DialogBusy => 503,
            Refusal::Media(e) => e.status().0,
            Refusal::UnusableAnswer => 488,
            Refusal::NotRegistered => 480,
            Refusal::SessionIntervalTooSmall => 422,
        }
    }

    /// The reason phrase of the answer (RFC 3261 §21).
    pub fn reason(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Refusal::AclDenied | Refusal::UnknownSource => "Forbidden",
            Refusal::NoRoute => "Not Found",
            Refusal::Loop | Refusal::Merged => "Loop Detected",
            Refusal::TooManyHops => "Too Many Hops",
            Refusal::Malformed(e) => return Cow::Owned(e.reason()),
            Refusal::UnsupportedScheme | Refusal::InsecureSips => "Unsupported URI Scheme",
            Refusal::InsecureSipsTarget => "SIPS Contact Needs TLS",
            Refusal::BadExtension => "Bad Extension",
            Refusal::MethodNotAllowed => "Method Not Allowed",
            Refusal::NotImplemented => "Not Implemented",
            Refusal::NoDialog => "Call/Transaction Does Not Exist",
            Refusal::OutOfOrder => "Server Internal Error",
            Refusal::Glare => "Request Pending",
            Refusal::UnsupportedMedia => "Unsupported Media Type",
            Refusal::CallTableFull
            | Refusal::TrunksDown
            | Refusal::TrunkLimit
            | Refusal::CallLimit
            | Refusal::Overloaded
            | Refusal::DialogBusy => "Service Unavailable",
            Refusal::Media(MediaError::PoolExhausted | MediaError::ShareExhausted) => {
                "Service Unavailable"
            }
            Refusal::Media(_) | Refusal::UnusableAnswer => "Not Acceptable Here",
            Refusal::NotRegistered => "Temporarily Unavailable",
            Refusal::SessionIntervalTooSmall => "Session Interval Too Small",
        })
    }

    /// Headers the answer must carry (RFC 3261 §8.2.1: Allow with 405;
    /// §21.4.13: Accept with 415). 420's Unsupported lists the request's
    /// own options, so its caller adds it.
    pub fn headers(self) -> &'static [(HeaderName, &'static [u8])] {
        match self {
            Refusal::MethodNotAllowed => &[(HeaderName::Allow, ALLOW)],
            Refusal::UnsupportedMedia => &[(HeaderName::Accept, b"application/sdp")],
            // RFC 3261 §21.5.4: when to try again.
            Refusal::TrunkLimit
            | Refusal::CallLimit
            | Refusal::Overloaded
            | Refusal::DialogBusy => &[(HeaderName::RetryAfter, b"1")],
            _ => &[],
        }
    }

    /// A header whose value the policy gives: RFC 4028 §6, 422 names the
    /// smallest session interval the SBC accepts (Min-SE).
    pub fn policy_header(self, timers: &crate::policy::CallTimers) -> Option<(HeaderName, u32)> {
        (self == Refusal::SessionIntervalTooSmall).then_some((HeaderName::MinSe, timers.min_se))
    }

    /// Whether the next trunk may be tried after this refusal of an
    /// attempt (BRIEF §3): SDP one trunk cannot take may suit another.
    pub fn may_fail_over(self) -> bool {
        matches!(
            self,
            Refusal::Media(MediaError::NoCodec | MediaError::ShareExhausted)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::ParseError;

    const ALL: [Refusal; 31] = [
        Refusal::AclDenied,
        Refusal::UnknownSource,
        Refusal::NoRoute,
        Refusal::Loop,
        Refusal::Merged,
        Refusal::TooManyHops,
        Refusal::Malformed(RequestError::Missing("Call-ID")),
        Refusal::Malformed(RequestError::Parse(ParseError::Version)),
        Refusal::UnsupportedScheme,
        Refusal::InsecureSips,
        Refusal::InsecureSipsTarget,
        Refusal::BadExtension,
        Refusal::MethodNotAllowed,
        Refusal::NotImplemented,
        Refusal::NoDialog,
        Refusal::OutOfOrder,
        Refusal::Glare,
        Refusal::UnsupportedMedia,
        Refusal::CallTableFull,
        Refusal::TrunksDown,
        Refusal::TrunkLimit,
        Refusal::Overloaded,
        Refusal::DialogBusy,
        Refusal::Media(MediaError::PoolExhausted),
        Refusal::Media(MediaError::ShareExhausted),
        Refusal::Media(MediaError::NoCodec),
        Refusal::Media(MediaError::BadAddress),
        Refusal::UnusableAnswer,
        Refusal::NotRegistered,
        Refusal::SessionIntervalTooSmall,
        Refusal::CallLimit,
    ];

    #[test]
    fn every_refusal_has_an_error_answer_and_a_label() {
        for r in ALL {
            assert!((400..700).contains(&r.status()), "{r:?}");
            assert!(!r.reason().is_empty(), "{r:?}");
            assert!(Refusal::LABELS.contains(&r.label()), "{r:?}");
        }
        // Every label is used by some refusal.
        for l in Refusal::LABELS {
            assert!(ALL.iter().any(|r| r.label() == l), "{l}");
        }
    }

    #[test]
    fn answers_follow_the_rfc() {
        assert_eq!(
            (
                Refusal::UnknownSource.status(),
                &*Refusal::UnknownSource.reason()
            ),
            (403, "Forbidden")
        );
        assert_eq!(Refusal::NoDialog.status(), 481);
        assert_eq!(
            Refusal::Malformed(RequestError::Parse(ParseError::Version)).status(),
            505
        );
        assert_eq!(
            &*Refusal::Malformed(RequestError::Missing("Call-ID")).reason(),
            "Bad Request (missing Call-ID header)"
        );
        assert_eq!(Refusal::Media(MediaError::PoolExhausted).status(), 503);
        assert_eq!(Refusal::Media(MediaError::BadAddress).status(), 488);
        assert_eq!(Refusal::MethodNotAllowed.headers()[0].0, HeaderName::Allow);
        assert_eq!(Refusal::UnsupportedMedia.headers()[0].0, HeaderName::Accept);
        assert!(!Refusal::AclDenied.is_answered() && Refusal::NoRoute.is_answered());
        assert!(Refusal::Media(MediaError::NoCodec).may_fail_over());
        assert!(!Refusal::Media(MediaError::PoolExhausted).may_fail_over());
        // Another trunk may have share left.
        assert!(Refusal::Media(MediaError::ShareExhausted).may_fail_over());
        assert_eq!(Refusal::Media(MediaError::ShareExhausted).status(), 503);
    }
}
