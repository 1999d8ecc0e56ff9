//! Choosing the answer for the caller when no trunk takes the call
//! (RFC 3261 §16.7): the best failure seen so far, kept in the call's
//! routing state.

use bytes::Bytes;

use super::build::render_end_to_end_with;
use super::call::{Call, Failure};
use crate::refusal::{Ending, Refusal};
use crate::sip::Response;

/// The failure the caller hears when `why` ends its INVITE and no trunk
/// answered better.
pub(crate) fn ending_failure(why: Ending) -> Failure {
    let (code, reason) = why.answer();
    Failure {
        code,
        reason: Bytes::from_static(reason),
        headers: Bytes::new(),
        body: Bytes::new(),
        local: false,
    }
}

/// The SBC's own failure answer for `why` (`local`: relayed as it is).
pub(crate) fn local_failure(why: Refusal, local: bool) -> Failure {
    let reason = match why.reason() {
        std::borrow::Cow::Borrowed(r) => Bytes::from_static(r.as_bytes()),
        std::borrow::Cow::Owned(r) => Bytes::from(r),
    };
    Failure {
        code: why.status(),
        reason,
        headers: Bytes::new(),
        body: Bytes::new(),
        local,
    }
}

/// Keeps the best failure so far (RFC 3261 §16.7 step 6).
pub(crate) fn record_failure(call: &mut Call, code: u16, resp: &Response<'_>) {
    // An error response may carry SDP (RFC 3261 §21.4.26): on an anchored
    // call the callee's addresses must not reach the caller with it.
    let strip = call.anchored && super::media::carries_media(&resp.msg);
    let candidate = Failure {
        code,
        reason: Bytes::copy_from_slice(resp.reason),
        headers: render_end_to_end_with(&resp.msg, !strip),
        body: if strip {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(resp.msg.body())
        },
        local: false,
    };
    merge_failure(call, candidate);
}

pub(crate) fn merge_failure(call: &mut Call, candidate: Failure) {
    let Some(routing) = call.routing_mut() else {
        return;
    };
    let better = match &routing.failure {
        None => true,
        Some(old) => better_failure(candidate.code, old.code),
    };
    if better {
        routing.failure = Some(candidate);
    }
}

/// RFC 3261 §16.7: 6xx wins; otherwise the lowest class; within a class
/// 401, 407, 415, 420 and 484 are preferred; otherwise the first one.
pub(crate) fn better_failure(new: u16, old: u16) -> bool {
    let (nc, oc) = (new / 100, old / 100);
    if nc == 6 || oc == 6 {
        return nc == 6 && oc != 6;
    }
    if nc != oc {
        return nc < oc;
    }
    let preferred = |c: u16| matches!(c, 401 | 407 | 415 | 420 | 484);
    preferred(new) && !preferred(old)
}

#[cfg(test)]
mod tests {
    use super::better_failure;

    #[test]
    fn response_selection_follows_rfc3261_16_7() {
        assert!(better_failure(486, 503), "4xx beats 5xx");
        assert!(!better_failure(503, 486));
        assert!(better_failure(603, 486), "6xx beats everything");
        assert!(!better_failure(486, 600));
        assert!(better_failure(407, 404), "preferred within a class");
        assert!(!better_failure(404, 486), "first of a class kept");
    }
}
