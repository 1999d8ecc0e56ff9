//! Responses arriving at the SBC, matched to the client transaction that
//! sent the request (RFC 3261 §17.1.3: by top Via branch and CSeq method).

use std::net::IpAddr;
use std::time::Instant;

use super::build::Reach;
use super::call::{Call, Side};
use super::context::{Ctx, Engine};
use super::ids::CallRef;
use crate::net::Flow;
use crate::sip::{Method, Response};
use crate::stats::{Discard, ShardStats};

impl Engine {
    pub(crate) fn on_response(&mut self, now: Instant, resp: Response<'_>, origin: Flow) {
        if self
            .ctx
            .ids
            .secrets()
            .decode_own_call_id(resp.call_id)
            .is_some()
        {
            return self.on_own_response(now, &resp);
        }
        let branch = resp.via.branch().unwrap_or(b"");
        let Some((r, side)) = self.response_call(&resp) else {
            // A request of ours sent with a Call-ID of another's choice.
            if self.standalone.has_branch(branch) {
                return self.on_own_response(now, &resp);
            }
            self.ctx.stats.discard(Discard::StrayResponse);
            return;
        };
        let src = origin.remote.ip();
        if self.calls.tomb(r).is_some() {
            return self.on_resting_response(r, side, &resp, src);
        }
        let Some(call) = self.calls.get_mut(r) else {
            self.ctx.stats.discard(Discard::StrayResponse);
            return;
        };
        if side == Side::B && call.b.call_id() != resp.call_id {
            self.ctx.stats.discard(Discard::StrayResponse);
            return;
        }
        let is_invite_or_cancel = matches!(resp.cseq.method, Method::Invite | Method::Cancel);
        let attempt = if side == Side::B && is_invite_or_cancel {
            call.attempts.iter().position(|a| a.branch[..] == *branch)
        } else {
            None
        };
        if !answerer_admitted(call, side, attempt, branch, src)
            || !deliver(&mut self.ctx, call, side, attempt, (&resp, origin), now)
        {
            self.ctx.stats.discard(Discard::StrayResponse);
            return;
        }
        self.after(r);
    }

    /// The call a response belongs to, and the leg it came from: B-leg
    /// responses carry a Call-ID we minted; A-leg responses the caller's
    /// Call-ID and the caller's tag in To.
    fn response_call(&mut self, resp: &Response<'_>) -> Option<(CallRef, Side)> {
        match self.ctx.ids.secrets().decode_call_id(resp.call_id) {
            Some((_, r)) => Some((r, Side::B)),
            None => resp
                .to_tag()
                .and_then(|t| self.calls.find_a(resp.call_id, t))
                .map(|r| (r, Side::A)),
        }
    }

    /// A response for an ended call that rests (its tombstone `r`): a
    /// retransmitted 2xx of its INVITE is ACKed again (RFC 3261
    /// §13.2.2.4); the rest is absorbed. Only the leg's peer is heard.
    fn on_resting_response(&mut self, r: CallRef, side: Side, resp: &Response<'_>, src: IpAddr) {
        let Some(tomb) = self.calls.tomb(r) else {
            return;
        };
        let reach = Reach {
            policy: &self.ctx.policy,
            trunk: tomb.trunk(side),
        };
        if !reach.admits(src, tomb_peer(tomb, side)) {
            self.ctx.stats.discard(Discard::StrayResponse);
            return;
        }
        ShardStats::inc(&self.ctx.stats.retransmissions_in);
        if side == Side::B && resp.cseq.method == Method::Invite && (200..300).contains(&resp.code)
        {
            let local = self.ctx.local(tomb.b_flow().local).clone();
            let branch = self.ctx.ids.branch();
            if let Some((dest, ack)) = tomb.ack_for(resp, &local, &branch, &self.ctx.policy) {
                self.ctx.send(dest, &ack);
            }
        }
    }
}

/// Whether `src` may answer the request a response is for: only the peer
/// it went to may, its trunk's sources or the address it was sent to. A
/// request of the SBC's own (a BYE to a stray answer) went where it went,
/// which may not be the leg's peer.
fn answerer_admitted(
    call: &Call,
    side: Side,
    attempt: Option<usize>,
    branch: &[u8],
    src: IpAddr,
) -> bool {
    let own_dest = call
        .extra
        .as_deref()
        .and_then(|e| e.own.iter().find(|o| o.branch[..] == *branch))
        .map(|o| o.tx.dest().remote.ip());
    let (trunk, sent_to) = match attempt.and_then(|i| call.attempts.get(i)) {
        Some(a) => (
            a.target.trunk,
            Some(
                call.policy
                    .fixed_address(a.target.trunk)
                    .map_or(a.tx.dest().remote.ip(), |a| a.ip()),
            ),
        ),
        None => (
            call.leg(side).trunk,
            own_dest.or(Some(call.leg(side).flow.remote.ip())),
        ),
    };
    Reach {
        policy: &call.policy,
        trunk,
    }
    .admits(src, sent_to)
}

/// Hands a response to the transaction of `call` that sent its request:
/// an attempt's INVITE or CANCEL, a relayed request, or one of the SBC's
/// own. False when none did (a stray).
fn deliver(
    ctx: &mut Ctx,
    call: &mut Call,
    side: Side,
    attempt: Option<usize>,
    (resp, origin): (&Response<'_>, Flow),
    now: Instant,
) -> bool {
    let branch = resp.via.branch().unwrap_or(b"");
    if let Some(i) = attempt {
        super::outbound::on_attempt_response(ctx, call, i, (resp, origin), now);
    } else if let Some(i) = call.relays.iter().position(|x| {
        x.from == side.other()
            && x.client_branch[..] == *branch
            && resp.cseq.seq == x.client_cseq
            && resp.cseq.method == x.method
    }) {
        super::dialog::on_relay_response(ctx, call, i, resp, now);
    } else if let Some(own) = call.extra.as_deref_mut().and_then(|e| {
        e.own
            .iter_mut()
            .find(|o| o.side == side && o.branch[..] == *branch)
    }) {
        let timers = call.policy.timers;
        if own.tx.on_response(now, &timers, resp.code) == crate::transaction::ResponseAction::Absorb
        {
            ShardStats::inc(&ctx.stats.retransmissions_in);
        }
    } else {
        return false;
    }
    true
}

/// Where a resting call's requests on `side` went (the tombstone keeps a
/// trunk caller's address: there the trunk's sources decide).
fn tomb_peer(tomb: &super::tomb::Tombstone, side: Side) -> Option<IpAddr> {
    match side {
        Side::B => Some(tomb.b_flow().remote.ip()),
        Side::A => tomb.a_phone(),
    }
}
