//! What is left of an ended call for the rest of its 64*T1: a tombstone of
//! well under 256 bytes instead of the call with its stored messages.
//!
//! A call rests once everything that still needs a stored message is done
//! ([`Call::can_rest`]). Its tombstone keeps the dialogs' identifiers (in
//! the table's A-leg index and the slot a B-leg Call-ID names) and answers
//! what can still arrive, without the original messages:
//!
//! - a retransmitted BYE gets the status the BYE was answered with, built
//!   from the retransmission itself (RFC 3261 §17.2.2 asks for the same
//!   response; Via, From, To, Call-ID and CSeq are the request's own);
//! - a retransmitted 2xx to the call's INVITE is ACKed again, the ACK built
//!   from the 2xx (RFC 3261 §13.2.2.4: Request-URI from its Contact, Route
//!   from its Record-Route reversed, the dialog's From, To and Call-ID);
//! - ACKs and other retransmitted responses are absorbed;
//! - any other request in the dialogs gets 481.

use std::sync::Arc;
use std::time::Instant;

use super::build::{LocalParts, Reach, ack_from_2xx};
use super::call::{Call, Side};
use crate::net::Flow;
use crate::policy::{Policy, TrunkId};
use crate::sip::{Method, Request, Response};

/// A tag the SBC minted (16 hex digits), kept inline.
type Tag = [u8; 16];

fn tag_of(bytes: &[u8]) -> Tag {
    // Our own tags are always 16 bytes (ids::IdMinter::tag); anything else
    // cannot match a request's To tag, which is what the zeros give.
    <[u8; 16]>::try_from(bytes).unwrap_or([0; 16])
}

#[derive(Debug)]
pub(crate) struct Tombstone {
    /// Key of the call in the A-leg index (shared with the index).
    pub a_key: Arc<[u8]>,
    /// Our tags in the A and B dialogs.
    tags: [Tag; 2],
    /// The trunk of each leg (only its peer may send in it).
    trunks: [TrunkId; 2],
    /// Where the B leg's requests went (the ACK for a retransmitted 2xx).
    b_flow: Flow,
    /// A phone's address on the A leg (its peer; a trunk's sources say
    /// who a trunk's is).
    a_phone: Option<std::net::IpAddr>,
    /// The BYE that ended the call was answered 2xx: a retransmission of
    /// it gets 200 again.
    bye_ok: bool,
    /// The A leg's transport (its peer is heard only over it).
    a_transport: crate::net::Transport,
    /// When the tombstone goes (the end of the call's 64*T1).
    pub until: Instant,
}

impl Tombstone {
    /// What is left of `call` until `until`.
    pub fn of(call: &Call, until: Instant) -> Self {
        Tombstone {
            a_key: Arc::clone(&call.a_key),
            tags: [tag_of(call.a.local_tag()), tag_of(call.b.local_tag())],
            trunks: [call.a.trunk, call.b.trunk],
            b_flow: call.b.flow,
            a_phone: call
                .policy
                .reached_by_binding(call.a.trunk)
                .then(|| call.a.flow.remote.ip()),
            bye_ok: matches!(call.bye_answer(), Some(200..=299)),
            a_transport: call.a.flow.transport,
            until,
        }
    }

    /// Where the B leg's requests went.
    pub fn b_flow(&self) -> Flow {
        self.b_flow
    }

    /// A phone caller's address.
    pub fn a_phone(&self) -> Option<std::net::IpAddr> {
        self.a_phone
    }

    /// The trunk of `side`'s leg.
    pub fn trunk(&self, side: Side) -> TrunkId {
        self.trunks[side as usize]
    }

    /// Whether a message on `origin` is from `side`'s peer, as
    /// [`super::call::Leg::is_peer`] said while the call lived: over the
    /// leg's transport, from its trunk's sources (a phone: the address it
    /// is reached at).
    pub fn is_peer(&self, side: Side, policy: &Policy, origin: &Flow) -> bool {
        let transport = match side {
            Side::A => self.a_transport,
            Side::B => self.b_flow.transport,
        };
        if origin.transport != transport {
            return false;
        }
        let ip = origin.remote.ip();
        let same = |a: std::net::IpAddr| crate::net::canonical(ip) == crate::net::canonical(a);
        let trunk = self.trunk(side);
        match (policy.reached_by_binding(trunk), side) {
            (true, Side::B) => same(self.b_flow.remote.ip()),
            (true, Side::A) => self.a_phone.is_some_and(same),
            // A callee followed to its Contact (`follow_contact`) is still
            // heard where the dialog went.
            (false, Side::B) => {
                policy.is_source_of(trunk, ip)
                    || (same(self.b_flow.remote.ip())
                        && policy.trunk(trunk).is_some_and(|t| t.follow_contact))
            }
            (false, Side::A) => policy.is_source_of(trunk, ip),
        }
    }

    /// What a request from `side`'s peer in the ended dialog gets.
    pub fn answer(&self, side: Side, req: &Request<'_>) -> TombAnswer {
        let ours = &self.tags[side as usize];
        let in_dialog = req.to_tag().is_some_and(|t| t == &ours[..]);
        match req.method {
            Method::Ack => TombAnswer::Absorb,
            Method::Bye if in_dialog && self.bye_ok => TombAnswer::Ok,
            _ => TombAnswer::NoDialog,
        }
    }

    /// The ACK for a retransmitted 2xx to the call's INVITE, and where it
    /// goes; `None` when the 2xx names no target to ACK.
    pub fn ack_for(
        &self,
        resp: &Response<'_>,
        local: &LocalParts,
        branch: &[u8],
        policy: &Policy,
    ) -> Option<(Flow, bytes::Bytes)> {
        if resp.to_tag().is_none() || resp.from.tag() != Some(&self.tags[Side::B as usize][..]) {
            return None;
        }
        let reach = Reach {
            policy,
            trunk: self.trunk(Side::B),
        };
        ack_from_2xx(resp, local, branch, self.b_flow, reach)
    }
}

/// What a request that reaches a tombstone gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TombAnswer {
    /// Nothing (an ACK): a retransmission absorbed.
    Absorb,
    /// 200 again (a retransmitted BYE, RFC 3261 §17.2.2).
    Ok,
    /// 481: no such dialog any more.
    NoDialog,
}

#[cfg(test)]
mod size_tests {
    /// BRIEF: an ended call keeps at most 256 bytes for its 32 s. (136:
    /// its flow names a connection by a 64-bit id, whose 32-bit
    /// generation never wraps onto another peer's connection.)
    #[test]
    fn a_tombstone_is_small() {
        assert!(
            std::mem::size_of::<super::Tombstone>() <= 136,
            "{}",
            std::mem::size_of::<super::Tombstone>()
        );
    }
}
