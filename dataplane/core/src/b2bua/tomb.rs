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

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use super::build::{LocalParts, Reach, ack_from_2xx};
use super::call::{Call, Side};
use crate::hex::{parse_hex, write_hex};
use crate::net::{ConnId, Flow, LocalId, Transport};
use crate::policy::{Policy, TrunkId};
use crate::sip::{Method, Request, Response};

/// An address kept in 16 bytes: IPv4 as its IPv4-mapped IPv6 form, told
/// apart from a real `::ffff:a.b.c.d` peer by the tombstone's flags.
fn pack(ip: IpAddr) -> (Ipv6Addr, bool) {
    match ip {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped(), true),
        IpAddr::V6(v6) => (v6, false),
    }
}

fn unpack(ip: Ipv6Addr, v4: bool) -> IpAddr {
    match ip.to_ipv4_mapped() {
        Some(v4addr) if v4 => IpAddr::V4(v4addr),
        _ => IpAddr::V6(ip),
    }
}

/// A socket address taken apart: the packed address, whether it is IPv4,
/// and an IPv6 one's flow label and scope.
fn split(remote: SocketAddr) -> (Ipv6Addr, bool, u32, u32) {
    match remote {
        SocketAddr::V4(v4) => (v4.ip().to_ipv6_mapped(), true, 0, 0),
        SocketAddr::V6(v6) => (*v6.ip(), false, v6.flowinfo(), v6.scope_id()),
    }
}

/// What [`split`] took apart, with the port.
fn join(ip: Ipv6Addr, v4: bool, port: u16, flowinfo: u32, scope: u32) -> SocketAddr {
    match unpack(ip, v4) {
        IpAddr::V4(v4addr) => SocketAddr::V4(SocketAddrV4::new(v4addr, port)),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, flowinfo, scope)),
    }
}

/// One of our own tags (always 16 lowercase hex digits, `ids::IdMinter`)
/// as the number it writes; `None` for anything else, which then matches
/// no request's tag.
fn tag_of(bytes: &[u8]) -> Option<u64> {
    (bytes.len() == 16).then(|| parse_hex(bytes)).flatten()
}

/// Whether `tag` is the one `ours` names.
fn same_tag(ours: Option<u64>, tag: &[u8]) -> bool {
    let Some(v) = ours else {
        return false;
    };
    let mut hex = [0u8; 16];
    write_hex(&mut hex, v);
    tag == hex
}

/// Every field is a number or a flag (the B leg's flow and the phone's
/// address taken apart), so that a tombstone is 96 bytes: one small
/// allocator size class instead of the 160-byte one a `Flow` and an
/// `Option<IpAddr>` kept it in.
#[derive(Debug)]
pub(crate) struct Tombstone {
    /// Key of the call in the A-leg index (the index finds the
    /// tombstone by it).
    pub a_key: Arc<[u8]>,
    /// Our tags in the A and B dialogs (`tag_ok` says which are ours).
    tags: [u64; 2],
    /// The B leg's flow: where its requests went (the ACK for a
    /// retransmitted 2xx).
    b_conn: Option<ConnId>,
    b_ip: Ipv6Addr,
    b_scope: u32,
    b_flowinfo: u32,
    b_port: u16,
    b_local: LocalId,
    /// A phone's address on the A leg (its peer; a trunk's sources say
    /// who a trunk's is).
    a_ip: Ipv6Addr,
    /// The trunk of each leg (only its peer may send in it).
    trunks: [TrunkId; 2],
    /// Each leg's transport (its peer is heard only over it).
    a_transport: Transport,
    b_transport: Transport,
    b_v4: bool,
    a_v4: bool,
    /// Whether `a_ip` is set (the A leg is a phone).
    a_phone: bool,
    tag_ok: [bool; 2],
    /// The BYE that ended the call was answered 2xx: a retransmission of
    /// it gets 200 again.
    bye_ok: bool,
}

impl Tombstone {
    /// What is left of `call`.
    pub fn of(call: &Call) -> Self {
        let b = call.b.flow;
        let (b_ip, b_v4, b_flowinfo, b_scope) = split(b.remote);
        let phone = call.policy.reached_by_binding(call.a.trunk);
        let (a_ip, a_v4) = pack(call.a.flow.remote.ip());
        let a_tag = tag_of(call.a.local_tag());
        let b_tag = tag_of(call.b.local_tag());
        Tombstone {
            a_key: Arc::clone(&call.a_key),
            tags: [a_tag.unwrap_or(0), b_tag.unwrap_or(0)],
            b_conn: b.conn,
            b_ip,
            b_scope,
            b_flowinfo,
            b_port: b.remote.port(),
            b_local: b.local,
            a_ip: if phone { a_ip } else { Ipv6Addr::UNSPECIFIED },
            trunks: [call.a.trunk, call.b.trunk],
            a_transport: call.a.flow.transport,
            b_transport: b.transport,
            b_v4,
            a_v4: phone && a_v4,
            a_phone: phone,
            tag_ok: [a_tag.is_some(), b_tag.is_some()],
            bye_ok: matches!(call.bye_answer(), Some(200..=299)),
        }
    }

    /// Our tag in `side`'s dialog.
    fn tag(&self, side: Side) -> Option<u64> {
        let i = side as usize;
        self.tag_ok[i].then_some(self.tags[i])
    }

    /// Where the B leg's requests went.
    pub fn b_flow(&self) -> Flow {
        Flow {
            transport: self.b_transport,
            remote: join(
                self.b_ip,
                self.b_v4,
                self.b_port,
                self.b_flowinfo,
                self.b_scope,
            ),
            local: self.b_local,
            conn: self.b_conn,
        }
    }

    /// A phone caller's address.
    pub fn a_phone(&self) -> Option<IpAddr> {
        self.a_phone.then(|| unpack(self.a_ip, self.a_v4))
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
            Side::B => self.b_transport,
        };
        if origin.transport != transport {
            return false;
        }
        let ip = origin.remote.ip();
        let same = |a: IpAddr| crate::net::canonical(ip) == crate::net::canonical(a);
        let trunk = self.trunk(side);
        match (policy.reached_by_binding(trunk), side) {
            (true, Side::B) => same(self.b_flow().remote.ip()),
            (true, Side::A) => self.a_phone().is_some_and(same),
            // A callee followed to its Contact (`follow_contact`) is still
            // heard where the dialog went.
            (false, Side::B) => {
                policy.is_source_of(trunk, ip)
                    || (same(self.b_flow().remote.ip())
                        && policy.trunk(trunk).is_some_and(|t| t.follow_contact))
            }
            (false, Side::A) => policy.is_source_of(trunk, ip),
        }
    }

    /// What a request from `side`'s peer in the ended dialog gets.
    pub fn answer(&self, side: Side, req: &Request<'_>) -> TombAnswer {
        let in_dialog = req.to_tag().is_some_and(|t| same_tag(self.tag(side), t));
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
        if resp.to_tag().is_none()
            || !resp
                .from
                .tag()
                .is_some_and(|t| same_tag(self.tag(Side::B), t))
        {
            return None;
        }
        let reach = Reach {
            policy,
            trunk: self.trunk(Side::B),
        };
        ack_from_2xx(resp, local, branch, self.b_flow(), reach)
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            // IPv4-mapped IPv6 peers stay IPv6.
            any::<[u8; 4]>().prop_map(|o| IpAddr::V6(std::net::Ipv4Addr::from(o).to_ipv6_mapped())),
        ]
    }

    proptest! {
        /// The B leg's address and a phone's come back exactly as kept:
        /// family, port, and an IPv6 one's flow label and scope.
        #[test]
        fn kept_addresses_come_back(ip in any_ip(), port: u16, flowinfo: u32, scope: u32) {
            let remote = match ip {
                IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, flowinfo, scope)),
            };
            let (packed, v4, f, s) = split(remote);
            prop_assert_eq!(join(packed, v4, port, f, s), remote);
            let (packed, v4) = pack(ip);
            prop_assert_eq!(unpack(packed, v4), ip);
        }

        /// A kept tag matches exactly the bytes it was kept from.
        #[test]
        fn a_kept_tag_matches_only_itself(v: u64, other in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut ours = [0u8; 16];
            write_hex(&mut ours, v);
            let kept = tag_of(&ours);
            prop_assert!(same_tag(kept, &ours));
            prop_assert_eq!(same_tag(kept, &other), other == ours);
        }
    }

    /// Tags that are not ours (no 16 lowercase hex digits) are kept as
    /// none and match nothing, not even themselves.
    #[test]
    fn a_tag_not_minted_here_matches_nothing() {
        for bad in [
            &b""[..],
            b"0123456789ABCDEF",
            b"0123456789abcde",
            b"0123456789abcdef0",
        ] {
            assert_eq!(tag_of(bad), None);
            assert!(!same_tag(tag_of(bad), bad));
        }
        assert!(!same_tag(None, b"0000000000000000"));
    }
}

#[cfg(test)]
mod size_tests {
    /// BRIEF: an ended call keeps at most 256 bytes for its 32 s. 96 is
    /// one of jemalloc's size classes (the sbc's allocator; 136 bytes
    /// took a 160-byte block).
    #[test]
    fn a_tombstone_is_small() {
        assert!(
            std::mem::size_of::<super::Tombstone>() <= 96,
            "{}",
            std::mem::size_of::<super::Tombstone>()
        );
    }
}
