//! The engine's side of transactions outside calls (see `standalone`):
//! requests the SBC sends on its own, out-of-dialog OPTIONS and REGISTER
//! it answers itself, and alarms.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::build::response_dest_for;
use super::context::Engine;
use super::event::Event;
use super::standalone::{Alarm, Outcome, OwnRequest, Timed, TxId};
use crate::net::Flow;
use crate::sip::{HeaderName, Method, Request, Response, Writer};
use crate::stats::ShardStats;

impl Engine {
    /// Sends a request of the SBC's own outside any call (an OPTIONS
    /// health probe, a REGISTER to a provider). Its final response, or its
    /// timeout, comes back as [`Event::Transaction`] with the returned id.
    pub fn send_request(&mut self, now: Instant, req: OwnRequest) -> TxId {
        let ctx = &mut self.ctx;
        let branch = ctx.ids.branch();
        let tag = ctx.ids.tag();
        let call_id = req.call_id.unwrap_or_else(|| ctx.ids.own_call_id());
        let local = ctx.local(req.flow.local).clone();
        let method = req.method.as_str().as_bytes();
        let mut buf = crate::sip::buffer(512);
        let mut w = Writer::new(&mut buf);
        w.request_line(method, &[&req.request_uri]);
        w.header(HeaderName::Via, &[&local.via_prefix, &branch, b";rport"]);
        w.header_u32(HeaderName::MaxForwards, 70);
        w.header(HeaderName::From, &[&req.from, b";tag=", &tag]);
        w.header(HeaderName::To, &[&req.to]);
        w.header(HeaderName::CallId, &[&call_id]);
        let mut n = itoa::Buffer::new();
        w.header(
            HeaderName::CSeq,
            &[n.format(req.cseq).as_bytes(), b" ", method],
        );
        for (name, value) in &req.headers {
            w.header(*name, &[value]);
        }
        w.body(b"");
        let timers = ctx.policy.timers;
        self.standalone.start_client(
            (now, &timers),
            (req.method, Bytes::copy_from_slice(&branch)),
            req.flow,
            crate::sip::seal(buf),
            &mut self.ctx.out,
        )
    }

    /// A Call-ID naming this shard, for a dialog-less exchange that spans
    /// transactions (a registration and its refreshes).
    pub fn own_call_id(&mut self) -> bytes::Bytes {
        self.ctx.ids.own_call_id()
    }

    /// Transactions outside calls held now: (client, server).
    pub fn outside_transactions(&self) -> (usize, usize) {
        self.standalone.len()
    }

    /// Asks for [`Event::Alarm`] with `alarm` at `at` (registration
    /// refresh, probe interval).
    pub fn set_alarm(&mut self, at: Instant, alarm: Alarm) {
        self.standalone.set_alarm(at, alarm);
    }

    /// A response to a request of the SBC's own (its Call-ID says so).
    pub(crate) fn on_own_response(&mut self, now: Instant, resp: &Response<'_>) {
        let timers = self.ctx.policy.timers;
        let branch = resp.via.branch().unwrap_or(b"");
        let bytes = resp.msg.as_bytes();
        match self
            .standalone
            .on_response(now, &timers, branch, resp.cseq.method, resp.code, bytes)
        {
            Some(Some((tx, outcome))) => self.outcome(now, tx, outcome),
            Some(None) => ShardStats::inc(&self.ctx.stats.retransmissions_in),
            None => self.ctx.stats.discard(crate::stats::Discard::StrayResponse),
        }
    }

    /// A retransmission of an out-of-dialog request the SBC answered
    /// itself gets the same answer again (RFC 3261 §17.2.2). True when it
    /// was one.
    /// An OPTIONS of the SBC's own (a health probe, a keepalive) to
    /// `target` over `flow`, from `sip:sbc@` our advertised host.
    pub(crate) fn options_request(&self, flow: Flow, target: Bytes, cseq: u32) -> OwnRequest {
        let mut from = BytesMut::with_capacity(64);
        from.put_slice(b"<sip:sbc@");
        from.put_slice(&self.ctx.local(flow.local).host);
        from.put_u8(b'>');
        OwnRequest {
            method: Method::Options,
            flow,
            to: super::outbound::angle(&target),
            request_uri: target,
            from: from.freeze(),
            call_id: None,
            cseq,
            headers: Vec::new(),
        }
    }

    /// A request of the SBC's own ended: its feature (probes, the SBC's
    /// registrations, keepalives) takes the outcome, else it is reported.
    fn outcome(&mut self, now: Instant, tx: TxId, outcome: Outcome) {
        if !self.probe_outcome(tx, &outcome)
            && !self.upstream_outcome(now, tx, &outcome)
            && !self.keepalive_outcome(tx, &outcome)
        {
            self.ctx.emit(Event::Transaction { tx, outcome });
        }
    }

    pub(crate) fn outside_retransmission(&mut self, req: &Request<'_>) -> bool {
        let branch = req.via.branch().unwrap_or(b"");
        let sent_by = req.via.host;
        if self
            .standalone
            .retransmission(branch, sent_by, req.method, &mut self.ctx.out)
        {
            ShardStats::inc(&self.ctx.stats.retransmissions_in);
            return true;
        }
        false
    }

    /// Answers an out-of-dialog request through a server transaction of
    /// its own (its retransmissions get the same answer).
    pub(crate) fn answer_outside(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        now: Instant,
        (code, reason): (u16, &[u8]),
        headers: &[(HeaderName, &[u8])],
    ) {
        let dest = response_dest_for(req, origin, &self.ctx.policy);
        self.answer_outside_to(req, origin, dest, now, (code, reason), headers);
    }

    /// [`Engine::answer_outside`] with the responses sent to `dest`.
    pub(crate) fn answer_outside_to(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        dest: Flow,
        now: Instant,
        (code, reason): (u16, &[u8]),
        headers: &[(HeaderName, &[u8])],
    ) {
        let response = self.ctx.response_to(req, origin, (code, reason), headers);
        let timers = self.ctx.policy.timers;
        let key = (req.via.branch().unwrap_or(b""), req.via.host, req.method);
        self.standalone
            .answer(now, &timers, key, dest, code, response, &mut self.ctx.out);
        if code >= 200 {
            self.ctx.stats.final_sent(code);
        }
    }

    /// Answers a request without a transaction (RFC 3261 §8.2.7, a
    /// stateless UAS, as for challenges): a retransmission of it is
    /// answered afresh, and nothing is held for it.
    pub(crate) fn answer_stateless(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        dest: Flow,
        (code, reason): (u16, &[u8]),
        headers: &[(HeaderName, &[u8])],
    ) {
        self.ctx
            .send_response(dest, req, origin, (code, reason), headers);
        if code >= 200 {
            self.ctx.stats.final_sent(code);
        }
    }

    /// Runs the timers of transactions outside calls and the alarms.
    pub(crate) fn standalone_timeout(&mut self, now: Instant) {
        let timers = self.ctx.policy.timers;
        let mut due = Vec::new();
        self.standalone
            .on_timeout(now, &timers, &mut self.ctx.out, &mut |t| due.push(t));
        for t in due {
            match t {
                Timed::Alarm(Alarm::ProbeInterval(trunk)) => self.probe_due(now, trunk),
                Timed::Alarm(Alarm::Register(trunk)) => self.upstream_due(now, trunk),
                Timed::Alarm(Alarm::Keepalive) => self.keepalive_due(now),
                Timed::Alarm(a) => self.ctx.emit(Event::Alarm(a)),
                Timed::Outcome(tx, outcome) => self.outcome(now, tx, outcome),
            }
        }
    }
}
