//! Building the messages the B2BUA sends: responses to a received request
//! (from a template of its headers), requests within a leg, and the header
//! copying policy that decides what crosses from one leg to the other.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::call::{InviteRef, Leg};
use crate::net::{Flow, Transport};
use crate::policy::{Policy, TrunkId};
use crate::sip::{CommaList, HeaderName, Message, Request, Response, Scheme, Uri, Via, Writer};

/// Option tags the SBC lets through Supported and accepts in Require.
/// Session timers work end to end because refreshes are relayed; 100rel is
/// withheld (PRACK relaying needs RSeq/RAck mapping).
pub(crate) const PASS_OPTIONS: &[&[u8]] = &[b"timer"];

pub(crate) use crate::refusal::ALLOW;

/// Per listener: pre-rendered pieces of Via and Contact.
#[derive(Debug, Clone)]
pub(crate) struct LocalParts {
    /// "SIP/2.0/UDP host:port;branch=" (the listener's transport)
    pub via_prefix: Bytes,
    /// "<sip:host:port>", with ";transport=tcp" on a stream listener
    pub contact: Bytes,
    /// "host:port" as advertised, for URIs.
    pub host: Bytes,
    /// ";transport=tcp" (empty for UDP), after the host of a URI that
    /// must be reached over this listener's transport (RFC 3261 §19.1.1).
    pub uri_params: &'static str,
}

impl LocalParts {
    pub fn new(advertise: &str, transport: Transport) -> Self {
        let uri_params = transport.uri_param();
        LocalParts {
            via_prefix: Bytes::from(format!("SIP/2.0/{} {advertise};branch=", transport.token())),
            contact: Bytes::from(format!("<sip:{advertise}{uri_params}>")),
            host: Bytes::copy_from_slice(advertise.as_bytes()),
            uri_params,
        }
    }
}

/// Where to send responses to a request that arrived on `origin`.
///
/// RFC 3261 §18.2.2: over a stream transport, back over the connection
/// the request came on. Over UDP, to the source address (the `received`
/// the SBC would add), at the source port when the client asked for
/// `rport` (RFC 3581 §4), else at the Via sent-by port. `maddr` is not
/// honoured: a forged Via must not aim responses elsewhere.
pub(crate) fn response_dest(req: &Request<'_>, origin: Flow) -> Flow {
    if origin.transport.is_reliable() {
        return origin;
    }
    let port = match req.via.rport() {
        Some(_) => origin.remote.port(),
        None => req.via.port.unwrap_or(5060),
    };
    Flow {
        remote: SocketAddr::new(origin.remote.ip(), port),
        ..origin
    }
}

/// Where a response goes over a stream transport when the connection its
/// request came on (`dest.conn`) is no longer open: RFC 3261 §18.2.2 asks
/// for a new connection to the `received` address (the source address,
/// `dest.remote`'s IP) at the Via's sent-by port, or the transport's
/// default port (5060, or 5061 over TLS).
///
/// Only for a configured trunk that is not reached by registration, as
/// with the Via-port rule over UDP (`response_dest_for`): anyone else
/// could name another port of an address it shares (a NAT, a carrier-grade
/// NAT) and aim the SBC's answer, or a connect whose failure is reported,
/// at someone else's connection. `None` as well when `data` is not a
/// response, its top Via cannot be read, names another transport or port
/// 0, or the transport is a WebSocket (the SBC never opens one: RFC 7118
/// §5).
pub fn reconnect_for_response(dest: &Flow, data: &[u8], policy: &Policy) -> Option<SocketAddr> {
    let default_port = match dest.transport {
        Transport::Tcp => 5060,
        Transport::Tls => 5061,
        Transport::Udp | Transport::Ws | Transport::Wss => return None,
    };
    if dest.conn.is_none() || !data.starts_with(b"SIP/2.0 ") {
        return None;
    }
    let trunk = policy.trunk_on(dest)?;
    if policy.reached_by_binding(trunk) {
        return None;
    }
    let msg = Message::parse(data).ok()?;
    let top = crate::sip::via_values(msg.value(HeaderName::Via)?).next()?;
    let via = Via::parse(top).ok()?;
    if !via
        .transport
        .eq_ignore_ascii_case(dest.transport.token().as_bytes())
    {
        return None;
    }
    let mut to = dest.remote;
    to.set_port(via.port.unwrap_or(default_port));
    (to.port() != 0).then_some(to)
}

/// [`response_dest`] for a request from whoever `origin` is. A configured
/// trunk is answered by those rules. Anyone else (a phone, a trunk that
/// registers to the SBC, a stranger) is answered where it sent from,
/// whether or not it asked for `rport` (symmetric response routing, RFC
/// 3581 §4): a phone behind NAT is reachable only there, and a stranger's
/// Via cannot aim the SBC's answer at another port of its address.
pub(crate) fn response_dest_for(req: &Request<'_>, origin: Flow, policy: &Policy) -> Flow {
    match policy.trunk_on(&origin) {
        Some(t) => response_dest_on(req, origin, policy, t),
        None => origin,
    }
}

/// [`response_dest_for`] when the request's leg, and so its `trunk`, is
/// already known (no search of the trunks by source).
pub(crate) fn response_dest_on(
    req: &Request<'_>,
    origin: Flow,
    policy: &Policy,
    trunk: TrunkId,
) -> Flow {
    if policy.reached_by_binding(trunk) {
        origin
    } else {
        response_dest(req, origin)
    }
}

/// Copies the end-to-end headers of `msg` that may cross to the other leg,
/// without the headers that describe the body unless `with_body` (when
/// the body is dropped). Everything that describes a hop, a dialog or the
/// topology of the other side is left out (topology hiding, BRIEF §1), as
/// are credentials.
pub(crate) fn copy_end_to_end_with(w: &mut Writer<'_>, msg: &Message<'_>, with_body: bool) {
    copy_headers(w, msg, with_body, false);
}

/// [`copy_end_to_end_with`]; `new_session` leaves out Session-Expires and
/// Min-SE (the SBC writes its own, RFC 4028 §8.1).
fn copy_headers(w: &mut Writer<'_>, msg: &Message<'_>, with_body: bool, new_session: bool) {
    for h in msg.headers() {
        match h.name {
            HeaderName::ContentType | HeaderName::ContentDisposition | HeaderName::ContentEncoding
                if !with_body => {}
            HeaderName::SessionExpires | HeaderName::MinSe if new_session => {}
            HeaderName::Via
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::Contact
            | HeaderName::CallId
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CSeq
            | HeaderName::MaxForwards
            | HeaderName::ContentLength
            | HeaderName::UserAgent
            | HeaderName::Server
            | HeaderName::Authorization
            | HeaderName::ProxyAuthorization
            | HeaderName::ProxyAuthenticate
            | HeaderName::WwwAuthenticate
            | HeaderName::ProxyRequire
            | HeaderName::Path
            | HeaderName::RSeq
            | HeaderName::RAck
            | HeaderName::Replaces
            | HeaderName::Unsupported
            // warn-agent names the host that added it.
            | HeaderName::Warning => {}
            HeaderName::Other if is_topology_header(h.raw_name) => {}
            HeaderName::Supported | HeaderName::Require => {
                let mut tags = CommaList::new(h.value)
                    .filter(|t| is_passed_option(t))
                    .peekable();
                if tags.peek().is_some() {
                    let mut parts: smallvec::SmallVec<[&[u8]; 4]> = smallvec::SmallVec::new();
                    for (i, t) in tags.enumerate() {
                        if i > 0 {
                            parts.push(b", ");
                        }
                        parts.push(t);
                    }
                    w.header(h.name, &parts);
                }
            }
            _ => {
                w.copy(h);
            }
        }
    }
}

/// Headers unknown to the parser that describe the path or the hosts of
/// the other side (RFC 7044 History-Info, RFC 7315 P-headers, RFC 3261
/// Error-Info / Reply-To / In-Reply-To / Authentication-Info, RFC 3608).
const TOPOLOGY_HEADERS: &[&[u8]] = &[
    b"history-info",
    b"p-charging-vector",
    b"p-charging-function-addresses",
    b"p-visited-network-id",
    b"p-access-network-info",
    b"p-associated-uri",
    b"service-route",
    b"error-info",
    b"reply-to",
    b"in-reply-to",
    b"authentication-info",
    b"proxy-authentication-info",
];

fn is_topology_header(name: &[u8]) -> bool {
    TOPOLOGY_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// [`copy_end_to_end_with`], with the body's headers, into a buffer of its
/// own.
pub(crate) fn render_end_to_end(msg: &Message<'_>) -> Bytes {
    render_end_to_end_with(msg, true)
}

/// The end-to-end headers of a call's first INVITE as they go to the
/// callee, without Session-Expires and Min-SE when the SBC writes its own
/// ([`super::session::Rewrite`]).
pub(crate) fn render_invite_headers(msg: &Message<'_>, own_session: bool) -> Bytes {
    if !own_session {
        return render_end_to_end(msg);
    }
    let mut buf = crate::sip::buffer(288);
    copy_headers(&mut Writer::new(&mut buf), msg, true, true);
    crate::sip::seal(buf)
}

/// [`render_end_to_end`], optionally without the headers that describe the
/// body (see [`copy_end_to_end_with`]).
pub(crate) fn render_end_to_end_with(msg: &Message<'_>, with_body: bool) -> Bytes {
    let mut buf = crate::sip::buffer(256);
    copy_end_to_end_with(&mut Writer::new(&mut buf), msg, with_body);
    crate::sip::seal(buf)
}

pub(crate) fn is_passed_option(tag: &[u8]) -> bool {
    PASS_OPTIONS.iter().any(|o| o.eq_ignore_ascii_case(tag))
}

/// Option tags in Require / Proxy-Require the SBC does not support
/// (RFC 3261 §8.2.2.3: answer 420 listing them in Unsupported).
pub(crate) fn unsupported_options(msg: &Message<'_>) -> Vec<Bytes> {
    let mut v = Vec::new();
    for h in msg
        .headers()
        .filter(|h| matches!(h.name, HeaderName::Require | HeaderName::ProxyRequire))
    {
        for tag in CommaList::new(h.value) {
            if !is_passed_option(tag) {
                v.push(Bytes::copy_from_slice(tag));
            }
        }
    }
    v
}

/// What a request inside a leg needs beyond the leg itself.
#[derive(Debug)]
pub(crate) struct RequestParts<'m, 'a> {
    pub method: &'m [u8],
    pub cseq: u32,
    pub branch: &'m [u8],
    pub max_forwards: u32,
    /// Add our Contact (target-refresh and dialog-creating requests).
    pub contact: bool,
    /// What crosses from the other leg.
    pub relay: Relayed<'m, 'a>,
    /// Session-Expires and Min-SE the SBC sets in a relayed message
    /// (RFC 4028 §8.1), instead of the sender's.
    pub session: Option<(u32, u32)>,
}

/// The end-to-end part of a request crossing legs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Relayed<'m, 'a> {
    Nothing,
    /// Headers filtered by [`copy_end_to_end_with`], and the body, of a message.
    Message(&'m Message<'a>),
    /// Already filtered header lines and a body (kept for failover).
    Rendered {
        headers: &'m [u8],
        body: &'m [u8],
    },
    /// A message's end-to-end headers with another body (rewritten SDP);
    /// `None` drops the body and its Content-* headers.
    MessageBody(&'m Message<'a>, Option<&'m [u8]>),
}

/// Builds a request within `leg` (RFC 3261 §12.2.1.1): Request-URI and
/// Route from the route set and remote target, loose or strict routing.
pub(crate) fn leg_request(leg: &Leg, local: &LocalParts, parts: &RequestParts<'_, '_>) -> Bytes {
    let extra = match parts.relay {
        Relayed::Nothing => 0,
        Relayed::Message(m) | Relayed::MessageBody(m, _) => m.as_bytes().len(),
        Relayed::Rendered { headers, body } => headers.len() + body.len(),
    };
    let mut buf = crate::sip::buffer(640 + extra);
    let mut w = Writer::new(&mut buf);
    let strict = leg.route_set.first().is_some_and(|r| !route_is_loose(r));
    let routes: &[Bytes] = &leg.route_set;
    if strict {
        // §12.2.1.1 strict routing: the first route becomes the Request-URI
        // and the remote target goes last in Route.
        w.request_line(parts.method, &[uri_of_route(&routes[0])]);
    } else {
        w.request_line(parts.method, &[leg.remote_target()]);
    }
    w.header(
        HeaderName::Via,
        &[&local.via_prefix, parts.branch, b";rport"],
    );
    w.header_u32(HeaderName::MaxForwards, parts.max_forwards);
    w.header(HeaderName::From, &[leg.local_party()]);
    w.header(HeaderName::To, &[leg.remote_party()]);
    w.header(HeaderName::CallId, &[leg.call_id()]);
    let mut n = itoa::Buffer::new();
    w.header(
        HeaderName::CSeq,
        &[n.format(parts.cseq).as_bytes(), b" ", parts.method],
    );
    if strict {
        for r in &routes[1..] {
            w.header(HeaderName::Route, &[r]);
        }
        w.header(HeaderName::Route, &[b"<", leg.remote_target(), b">"]);
    } else {
        for r in routes {
            w.header(HeaderName::Route, &[r]);
        }
    }
    if parts.contact {
        w.header(HeaderName::Contact, &[&local.contact]);
    }
    let relayed = |w: &mut Writer<'_>, m: &Message<'_>, with_body: bool| {
        copy_headers(w, m, with_body, parts.session.is_some());
        if let Some(values) = parts.session {
            super::session::write_rewrite(w, values, super::session::params_of(m));
        }
    };
    match parts.relay {
        Relayed::Message(m) => {
            relayed(&mut w, m, true);
            w.body(m.body());
        }
        Relayed::Rendered { headers, body } => {
            w.raw(headers);
            w.body(body);
        }
        Relayed::MessageBody(m, body) => {
            relayed(&mut w, m, body.is_some());
            w.body(body.unwrap_or(b""));
        }
        Relayed::Nothing => w.body(b""),
    }
    crate::sip::seal(buf)
}

/// A CANCEL or non-2xx ACK for an INVITE sent in `leg` (RFC 3261 §9.1,
/// §17.1.1.3): same Request-URI, Call-ID, From, CSeq number, top Via and
/// Route as the INVITE; To as given.
pub(crate) fn invite_sibling(
    leg: &Leg,
    local: &LocalParts,
    method: &[u8],
    invite: InviteRef<'_>,
    to: &[u8],
) -> Bytes {
    let mut buf = crate::sip::buffer(512);
    let mut w = Writer::new(&mut buf);
    w.request_line(method, &[invite.ruri]);
    w.header(
        HeaderName::Via,
        &[&local.via_prefix, invite.branch, b";rport"],
    );
    w.header_u32(HeaderName::MaxForwards, 70);
    w.header(HeaderName::From, &[leg.local_party()]);
    w.header(HeaderName::To, &[to]);
    w.header(HeaderName::CallId, &[leg.call_id()]);
    let mut n = itoa::Buffer::new();
    w.header(
        HeaderName::CSeq,
        &[n.format(invite.cseq).as_bytes(), b" ", method],
    );
    for r in invite.routes {
        w.header(HeaderName::Route, &[r]);
    }
    w.body(b"");
    crate::sip::seal(buf)
}

/// The URI of the first Contact of a message, if it parses as a URI we
/// could put in a request line (it becomes a remote target).
pub(crate) fn contact_uri<'a>(msg: &Message<'a>) -> Option<&'a [u8]> {
    let value = msg.value(HeaderName::Contact)?;
    let first = CommaList::new(value).next()?;
    let n = crate::sip::NameAddr::parse(first).ok()?;
    n.parsed_uri().is_ok().then_some(n.uri)
}

/// True when a Route value's URI carries `lr` (RFC 3261 §16.12.1.1).
fn route_is_loose(route: &[u8]) -> bool {
    Uri::parse(uri_of_route(route)).is_ok_and(|u| u.param(b"lr").is_some())
}

/// The URI inside a Route / Record-Route value.
pub(crate) fn uri_of_route(route: &[u8]) -> &[u8] {
    match crate::sip::NameAddr::parse(route) {
        Ok(n) => n.uri,
        Err(_) => route,
    }
}

/// Whether a URI, or a Contact, Route or Record-Route value, is a SIPS
/// URI.
pub(crate) fn is_sips(value: &[u8]) -> bool {
    is_sips_uri(uri_of_route(value))
}

/// Whether a URI (already taken out of its header value) is a SIPS URI.
pub(crate) fn is_sips_uri(uri: &[u8]) -> bool {
    uri.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"sips:"))
}

/// Whether `sips:` (in any letter case) occurs in a header value.
fn mentions_sips(value: &[u8]) -> bool {
    memchr::memchr_iter(b':', value).any(|i| {
        i.checked_sub(4)
            .and_then(|start| value.get(start..i))
            .is_some_and(|s| s.eq_ignore_ascii_case(b"sips"))
    })
}

/// Whether `msg`, received over `transport`, asks for what that transport
/// cannot give: requests back to its sender would need TLS on every hop
/// (RFC 3261 §26.2.2) and `transport` is not TLS. They would: its Contact
/// (their Request-URI) is a SIPS URI,
/// or, when `msg` sets a dialog's route set (`sets_routes`: a request or
/// response that creates one), the route that would be their next hop:
/// the first Record-Route of a request (RFC 3261 §12.1.1), the last of a
/// response (§12.1.2). Within a dialog the route set does not change
/// (§12.2), so only the Contact counts there.
pub(crate) fn insecure_sips(transport: Transport, msg: &Message<'_>, sets_routes: bool) -> bool {
    if transport.is_secure() {
        return false;
    }
    // Nearly every message names no SIPS URI at all: a scan for `sips:`
    // spares them the parse of the Contact.
    let mentioned = msg.value(HeaderName::Contact).is_some_and(mentions_sips)
        || (sets_routes
            && msg
                .all(HeaderName::RecordRoute)
                .any(|h| mentions_sips(h.value)));
    if !mentioned {
        return false;
    }
    if !sets_routes {
        return contact_uri(msg).is_some_and(is_sips_uri);
    }
    let mut routes = msg
        .all(HeaderName::RecordRoute)
        .flat_map(|h| CommaList::new(h.value));
    let hop = if msg.is_request() {
        routes.next()
    } else {
        routes.last()
    };
    hop.is_some_and(is_sips) || contact_uri(msg).is_some_and(is_sips_uri)
}

/// Whom a leg's requests may reach: the peer's trunk, whose sources it
/// may name, and the address already known for it (the fallback).
#[derive(Clone, Copy)]
pub(crate) struct Reach<'p> {
    pub policy: &'p Policy,
    pub trunk: TrunkId,
}

impl Reach<'_> {
    /// Whether `ip` is the peer's: the address already known for it, or
    /// one of its trunk's sources. Requests go only there, and responses
    /// are taken only from there.
    pub fn admits(self, ip: IpAddr, known: Option<IpAddr>) -> bool {
        known == Some(ip) || self.policy.is_source_of(self.trunk, ip)
    }

    /// The trunk lets a Contact or Record-Route outside its sources move
    /// the leg's requests (`follow_contact`) to `ip`: a unicast address
    /// that is not one of the SBC's own.
    pub fn follows_contact_to(self, ip: IpAddr) -> bool {
        let ip = crate::net::canonical(ip);
        let unicast = match ip {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_multicast(),
        };
        unicast
            && !self
                .policy
                .listeners
                .iter()
                .any(|l| crate::net::canonical(l.bind.ip()) == ip)
            && self
                .policy
                .trunk(self.trunk)
                .is_some_and(|t| t.follow_contact)
    }
}

/// The next hop for a request in a leg: the first route, or the remote
/// target, when it names an IP address within the peer's trunk (or
/// `fallback` itself); otherwise `fallback`, the trunk's address or the
/// address the peer's request came from. A Contact or Record-Route naming
/// any other host does not move the SBC's requests there.
pub(crate) fn next_hop(
    remote_target: &[u8],
    route_set: &[Bytes],
    fallback: SocketAddr,
    reach: Reach<'_>,
) -> SocketAddr {
    let uri = match route_set.first() {
        Some(r) => uri_of_route(r),
        None => remote_target,
    };
    Uri::parse(uri)
        .ok()
        .and_then(|u| u.socket_addr(5060))
        .filter(|hop| {
            reach.admits(hop.ip(), Some(fallback.ip())) || reach.follows_contact_to(hop.ip())
        })
        .unwrap_or(fallback)
}

/// Whether every Record-Route entry of `msg` is a route the SBC can use:
/// a name-addr (RFC 3261 §20.30: in angle brackets, or a bare URI as
/// lenient peers write it) whose URI parses as a SIP or SIPS URI. Anything
/// else would end up, as it stands, in the Request-URI or a Route header
/// of the SBC's own requests in the dialog (a strict-routing first hop is
/// the Request-URI), where a stray control character breaks the message.
pub(crate) fn routes_usable(msg: &Message<'_>) -> bool {
    msg.all(HeaderName::RecordRoute)
        .flat_map(|h| CommaList::new(h.value))
        .all(|entry| {
            crate::sip::NameAddr::parse(entry)
                .ok()
                .and_then(|n| Uri::parse(n.uri).ok())
                .is_some_and(|u| matches!(u.scheme, Scheme::Sip | Scheme::Sips))
        })
}

/// The route set a UAC takes from a response that creates a dialog: its
/// Record-Route values in reverse order (RFC 3261 §12.1.2). None at all
/// when any of them is not a usable route ([`routes_usable`]): the dialog's
/// requests then go to the remote target, within the peer's trunk.
pub(crate) fn uac_route_set(msg: &Message<'_>) -> Vec<Bytes> {
    if !routes_usable(msg) {
        return Vec::new();
    }
    let mut routes: Vec<Bytes> = msg
        .all(HeaderName::RecordRoute)
        .flat_map(|h| CommaList::new(h.value))
        .map(Bytes::copy_from_slice)
        .collect();
    routes.reverse();
    routes
}

/// The ACK for a 2xx to an INVITE, built from the 2xx itself (RFC 3261
/// §13.2.2.4, §12.1.2): Request-URI from its Contact, Route from its
/// Record-Route reversed, its From, To and Call-ID, CSeq number with ACK;
/// sent towards the next hop on `flow`'s transport. `None` when the 2xx
/// names no target. What is left of a dialog ACKs a retransmitted 2xx with
/// it, so no ACK needs keeping. A SIPS target or route that `flow`'s
/// transport cannot reach securely is not followed (RFC 3261 §26.2.2): the
/// ACK's Request-URI is then the 2xx's To URI (a `sip:` URI of the called
/// party, which the ACK's dialog identifiers make unambiguous), without
/// routes; it goes to `flow`'s peer.
pub(crate) fn ack_from_2xx(
    resp: &Response<'_>,
    local: &LocalParts,
    branch: &[u8],
    flow: Flow,
    reach: Reach<'_>,
) -> Option<(Flow, Bytes)> {
    let contact = contact_uri(&resp.msg)?;
    let (target, routes) = if insecure_sips(flow.transport, &resp.msg, true) {
        let to = crate::sip::NameAddr::parse(resp.msg.value(HeaderName::To)?).ok()?;
        (to.uri, Vec::new())
    } else {
        (contact, uac_route_set(&resp.msg))
    };
    let mut buf = crate::sip::buffer(512);
    let mut w = Writer::new(&mut buf);
    w.request_line(b"ACK", &[target]);
    w.header(HeaderName::Via, &[&local.via_prefix, branch, b";rport"]);
    w.header_u32(HeaderName::MaxForwards, 70);
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        w.header(name, &[resp.msg.value(name).unwrap_or(b"")]);
    }
    let mut n = itoa::Buffer::new();
    w.header(
        HeaderName::CSeq,
        &[n.format(resp.cseq.seq).as_bytes(), b" ACK"],
    );
    for r in &routes {
        w.header(HeaderName::Route, &[r]);
    }
    w.body(b"");
    let dest = flow.towards(next_hop(target, &routes, flow.remote, reach));
    Some((dest, crate::sip::seal(buf)))
}

#[cfg(test)]
mod tests {
    use super::super::template::Template;
    use super::*;
    use crate::sip::Message;

    #[test]
    fn top_via_gets_received_and_rport() {
        // RFC 3581 §4: fill rport with the source port; add received when
        // the sent-by host differs from the source address.
        let raw = b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bKa, SIP/2.0/UDP p.example\r\nVia: SIP/2.0/UDP q.example\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let req = Request::parse(Message::parse(raw).unwrap()).unwrap();
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let t = Template::new(&req, src, false);
        let resp = t.simple(200, b"OK", Some(b"xyz"));
        let text = std::str::from_utf8(&resp).unwrap();
        assert!(text.contains("Via: SIP/2.0/UDP 10.0.0.1:5070;rport=40000;branch=z9hG4bKa;received=192.0.2.7, SIP/2.0/UDP p.example\r\n"), "{text}");
        assert!(text.contains("Via: SIP/2.0/UDP q.example\r\n"));
        assert!(text.contains("To: <sip:c@d>;tag=xyz\r\n"));
        let origin = Flow::udp(src, crate::net::LocalId(0));
        assert_eq!(response_dest(&req, origin), origin);
        let trying = t.simple(100, b"Trying", Some(b"xyz"));
        assert!(!std::str::from_utf8(&trying).unwrap().contains("tag=xyz"));
    }

    /// RFC 3261 §18.2.2 and RFC 3581 §4: where a response goes, by the
    /// transport the request came on.
    #[test]
    fn responses_follow_the_transport_rules() {
        use crate::net::{ConnId, LocalId, Transport};
        let parse = |via: &str| {
            let raw = format!(
                "OPTIONS sip:x@y SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
            );
            raw.into_bytes()
        };
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let udp = Flow::udp(src, LocalId(1));
        // UDP without rport: the source IP (received), the Via port.
        let raw = parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa");
        let req = Request::parse(Message::parse(&raw).unwrap()).unwrap();
        let d = response_dest(&req, udp);
        assert_eq!(d.remote, "192.0.2.7:5070".parse().unwrap());
        assert_eq!(d.local, LocalId(1));
        // ... and 5060 when the Via has no port; maddr is never honoured.
        let raw = parse("SIP/2.0/UDP 10.0.0.1;maddr=198.51.100.1;branch=z9hG4bKa");
        let req = Request::parse(Message::parse(&raw).unwrap()).unwrap();
        assert_eq!(
            response_dest(&req, udp).remote,
            "192.0.2.7:5060".parse().unwrap()
        );
        // UDP with rport: exactly where it came from.
        let raw = parse("SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bKa");
        let req = Request::parse(Message::parse(&raw).unwrap()).unwrap();
        assert_eq!(response_dest(&req, udp), udp);
        // A stream transport: back over the same connection, whatever Via says.
        let tcp = Flow {
            transport: Transport::Tcp,
            conn: std::num::NonZeroU64::new(9).map(ConnId),
            ..udp
        };
        let raw = parse("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKa");
        let req = Request::parse(Message::parse(&raw).unwrap()).unwrap();
        assert_eq!(response_dest(&req, tcp), tcp);
    }

    /// Record-Route entries the SBC would write into its own requests
    /// must be SIP or SIPS URIs (a strict-routing first hop becomes the
    /// Request-URI as it stands); anything else makes the set unusable.
    #[test]
    fn only_sip_uris_make_a_usable_route_set() {
        let with = |rr: &str| {
            let raw = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\n{rr}From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n"
            );
            let msg = Message::parse(raw.as_bytes()).unwrap();
            (routes_usable(&msg), uac_route_set(&msg).len())
        };
        assert_eq!(with(""), (true, 0));
        assert_eq!(
            with(
                "Record-Route: <sip:p1.example;lr>, <sips:p2.example;lr>\r\nRecord-Route: \"P3\" <sip:10.0.0.3;lr>\r\n"
            ),
            (true, 3)
        );
        // A bare URI, as lenient peers write it.
        assert_eq!(with("Record-Route: sip:p1.example\r\n"), (true, 1));
        // Not a URI, another scheme, empty brackets: the whole set goes.
        // (A bare CR inside one no longer parses at all.)
        for bad in [
            "application/sdp",
            "<sip:p1.example;lr>, application/sdp",
            "<http://p1.example/>",
            "<tel:+15551234>",
            "<>",
        ] {
            let raw = format!("Record-Route: {bad}\r\n");
            assert_eq!(with(&raw), (false, 0), "{bad:?}");
        }
    }

    #[test]
    fn copy_policy_hides_topology_and_filters_options() {
        let raw = b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nRecord-Route: <sip:10.0.0.2;lr>\r\nContact: <sip:a@10.0.0.1>\r\nUser-Agent: PBX 1.0\r\nSupported: 100rel, timer\r\nX-Custom: kept\r\nWarning: 399 pbx.internal \"x\"\r\nHistory-Info: <sip:a@10.0.0.7>;index=1\r\nP-Charging-Vector: icid-value=1;icid-generated-at=10.0.0.8\r\nP-Asserted-Identity: <sip:+15551234@pbx>\r\nContent-Type: application/sdp\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 3\r\n\r\nv=0";
        let msg = Message::parse(raw).unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut w = Writer::new(&mut buf);
        copy_end_to_end_with(&mut w, &msg, true);
        let text = std::str::from_utf8(&buf).unwrap();
        assert_eq!(
            text,
            "Supported: timer\r\nX-Custom: kept\r\nP-Asserted-Identity: <sip:+15551234@pbx>\r\nContent-Type: application/sdp\r\n"
        );
    }
}
