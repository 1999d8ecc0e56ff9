//! A deterministic harness for the sans-IO engine: a simulated clock that
//! jumps to the next deadline, scripted peers, and helpers to read what the
//! SBC sent.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sbc_core::b2bua::{Disposition, Engine, Secrets, ShardId};
use sbc_core::net::{Flow, LocalId};
use sbc_core::policy::{
    Acl, CallTimers, Failover, Listener, NumberPattern, Policy, Route, Target, Trunk, TrunkId,
};
use sbc_core::sip::{HeaderName, Message, Request, Response};
use sbc_core::stats::ShardStats;
use sbc_core::transaction::TimerConfig;

pub const SBC: &str = "192.0.2.1:5060";
pub const PBX: &str = "10.0.0.10:5060";
pub const CARRIER_A: &str = "10.0.0.20:5060";
pub const CARRIER_B: &str = "10.0.0.30:5060";
pub const STRANGER: &str = "203.0.113.9:5060";
pub const DENIED: &str = "198.51.100.66:5060";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn trunk(name: &str, source: &str, address: &str) -> Trunk {
    Trunk {
        name: name.into(),
        sources: vec![source.parse().unwrap()],
        source_port: None,
        address: addr(address),
        transport: sbc_core::net::Transport::Udp,
        media: sbc_core::policy::MediaMode::Anchor,
        codecs: None,
        strict_latch: false,
        probe: None,
        max_calls: None,
        max_cps: None,
        public: false,
        follow_contact: false,
        media_share: None,
        tls_only: false,
        registration: None,
        dynamic: false,
        stats: Arc::default(),
    }
}

/// The ip-trunks topology: pbx routes everything to carrier-a then
/// carrier-b; +39/39 from the carriers goes to the pbx.
pub fn policy() -> Policy {
    policy_at(SBC, PBX, CARRIER_A, CARRIER_B)
}

/// The same topology at other addresses.
pub fn policy_at(sbc: &str, pbx: &str, carrier_a: &str, carrier_b: &str) -> Policy {
    let net = |a: &str| format!("{}/32", addr(a).ip());
    Policy {
        version: 1,
        listeners: vec![Listener {
            transport: sbc_core::net::Transport::Udp,
            bind: addr(sbc),
            advertise: sbc.to_owned(),
        }],
        timers: TimerConfig::default(),
        limits: Default::default(),
        call_timers: CallTimers::default(),
        acl: Acl {
            allow: vec![],
            deny: vec!["198.51.100.0/24".parse().unwrap()],
            ..Acl::default()
        },
        trunks: vec![
            trunk("pbx", &net(pbx), pbx),
            trunk("carrier-a", &net(carrier_a), carrier_a),
            trunk("carrier-b", &net(carrier_b), carrier_b),
        ],
        routes: vec![
            Route {
                name: "pbx-out".into(),
                from: vec![TrunkId(0)],
                numbers: vec![NumberPattern::Prefix(String::new())],
                targets: vec![
                    Target {
                        trunk: TrunkId(1),
                        priority: 1,
                        weight: 1,
                    },
                    Target {
                        trunk: TrunkId(2),
                        priority: 2,
                        weight: 1,
                    },
                ],
                failover: Failover::standard(),
                extension: None,
            },
            Route {
                name: "italy-in".into(),
                from: vec![TrunkId(1), TrunkId(2)],
                numbers: vec![
                    NumberPattern::Prefix("+39".into()),
                    NumberPattern::Prefix("39".into()),
                ],
                targets: vec![Target {
                    trunk: TrunkId(0),
                    priority: 1,
                    weight: 1,
                }],
                failover: Failover::standard(),
                extension: None,
            },
        ],
        media: None,
        accounts: Default::default(),
    }
}

/// The same topology with media anchored on 192.0.2.1, ports 30000-30099,
/// and a 30 s inactivity timeout.
pub fn media_policy() -> Policy {
    let mut p = policy();
    p.media = Some(sbc_core::policy::MediaPolicy {
        bind: "192.0.2.1".parse().unwrap(),
        advertise: "198.51.100.1".parse().unwrap(),
        bind_other: None,
        advertise_other: None,
        first_port: 30000,
        last_port: 30099,
        timeout: Duration::from_secs(30),
        forbidden: Vec::new(),
        xdp: None,
    });
    p
}

/// A datagram the SBC sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Sent {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap()
    }
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).unwrap()
    }
    pub fn code(&self) -> Option<u16> {
        self.msg().status_line().map(|s| s.code)
    }
    pub fn method(&self) -> Option<String> {
        self.msg()
            .request_line()
            .map(|l| String::from_utf8_lossy(l.method_raw).into_owned())
    }
    pub fn header(&self, name: HeaderName) -> String {
        String::from_utf8_lossy(self.msg().value(name).unwrap_or(b"")).into_owned()
    }
    pub fn request(&self) -> Request<'_> {
        Request::parse(self.msg()).unwrap()
    }
    pub fn response(&self) -> Response<'_> {
        Response::parse(self.msg()).unwrap()
    }
    pub fn branch(&self) -> String {
        let m = self.msg();
        let via = m.value(HeaderName::Via).unwrap();
        let v = sbc_core::sip::Via::parse(sbc_core::sip::via_values(via).next().unwrap()).unwrap();
        String::from_utf8_lossy(v.branch().unwrap()).into_owned()
    }
    pub fn to_tag(&self) -> String {
        let m = self.msg();
        let to = sbc_core::sip::NameAddr::parse(m.value(HeaderName::To).unwrap()).unwrap();
        String::from_utf8_lossy(to.tag().unwrap_or(b"")).into_owned()
    }
    pub fn tag_of_from(&self) -> String {
        let m = self.msg();
        let f = sbc_core::sip::NameAddr::parse(m.value(HeaderName::From).unwrap()).unwrap();
        String::from_utf8_lossy(f.tag().unwrap_or(b"")).into_owned()
    }
    pub fn cseq(&self) -> String {
        self.header(HeaderName::CSeq)
    }
}

pub struct Sim {
    pub engine: Engine,
    pub now: Instant,
    pub start: Instant,
    pub stats: Arc<ShardStats>,
    pub policy: Arc<Policy>,
}

impl Sim {
    pub fn new() -> Self {
        Self::with_policy(policy())
    }

    pub fn with_policy(policy: Policy) -> Self {
        Self::shard(policy, 0, 1)
    }

    /// The secrets every sim's engine is made with.
    pub fn secrets() -> Secrets {
        Secrets::from_bytes(std::array::from_fn(|i| i as u8))
    }

    /// Shard `shard` of `shards`, all made with [`Sim::secrets`].
    pub fn shard(policy: Policy, shard: u16, shards: u16) -> Self {
        let policy = Arc::new(policy);
        let stats = Arc::new(ShardStats::default());
        let engine = Engine::new(
            ShardId(shard),
            shards,
            Self::secrets(),
            Arc::clone(&policy),
            Arc::clone(&stats),
        );
        let now = Instant::now();
        Sim {
            engine,
            now,
            start: now,
            stats,
            policy,
        }
    }

    /// Delivers a media packet from `from` to the SBC's port `port`.
    pub fn media(
        &mut self,
        from: &str,
        port: u16,
        data: &[u8],
    ) -> Option<sbc_core::media::Forward> {
        self.engine.handle_media(self.now, port, addr(from), data)
    }

    /// Delivers a datagram from `from` to the SBC.
    pub fn recv(&mut self, from: &str, bytes: &str) -> Disposition {
        self.engine.handle_datagram(
            self.now,
            Flow::udp(addr(from), LocalId(0)),
            bytes.as_bytes(),
        )
    }

    pub fn recv_bytes(&mut self, from: &str, bytes: &[u8]) -> Disposition {
        self.engine
            .handle_datagram(self.now, Flow::udp(addr(from), LocalId(0)), bytes)
    }

    /// Everything the SBC queued.
    pub fn sent(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Some(t) = self.engine.poll_transmit(&mut buf) {
            out.push(Sent {
                to: t.dest.remote,
                bytes: buf[..t.len].to_vec(),
            });
        }
        out
    }

    /// The one message queued for `to`; panics if there is not exactly one.
    pub fn one_to(&mut self, to: &str) -> Sent {
        let sent = self.sent();
        let mut matching: Vec<Sent> = sent.iter().filter(|s| s.to == addr(to)).cloned().collect();
        assert_eq!(
            matching.len(),
            1,
            "expected one message to {to}, got: {:#?}",
            sent.iter()
                .map(|s| (s.to, s.text().lines().next().unwrap_or("").to_owned()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            sent.len(),
            1,
            "unexpected extra messages: {:#?}",
            sent.iter()
                .map(|s| (s.to, s.text().lines().next().unwrap_or("").to_owned()))
                .collect::<Vec<_>>()
        );
        matching.remove(0)
    }

    /// Advances the clock by `d`, firing every timer on the way; returns
    /// what was sent, with the time it was sent at.
    pub fn advance(&mut self, d: Duration) -> Vec<(Duration, Sent)> {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            match self.engine.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.engine.handle_timeout(self.now);
                    let at = self.now - self.start;
                    out.extend(self.sent().into_iter().map(|s| (at, s)));
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    /// The first message sent to `to` since the last look (the others are
    /// taken too).
    pub fn first_to(&mut self, to: &str) -> Sent {
        self.sent()
            .into_iter()
            .find(|s| s.to == addr(to))
            .unwrap_or_else(|| panic!("nothing sent to {to}"))
    }

    /// Every event the engine reported since the last look.
    pub fn events(&mut self) -> Vec<sbc_core::b2bua::Event> {
        std::iter::from_fn(|| self.engine.poll_event()).collect()
    }

    /// Requests refused for `r` so far.
    pub fn rejected(&self, r: sbc_core::refusal::Refusal) -> u64 {
        self.stats.rejected[r.counter()].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// An INVITE from a peer. `n` makes identifiers unique.
pub fn invite(from_host: &str, number: &str, call_id: &str, branch: &str, cseq: u32) -> String {
    invite_with_body(from_host, number, call_id, branch, cseq, OFFER_SDP)
}

/// An INVITE from a peer with the given SDP body.
pub fn invite_with_body(
    from_host: &str,
    number: &str,
    call_id: &str,
    branch: &str,
    cseq: u32,
    body: &str,
) -> String {
    format!(
        "INVITE sip:{number}@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from_host};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@{from_host}>;tag=caller-tag\r\n\
         To: <sip:{number}@192.0.2.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} INVITE\r\n\
         Contact: <sip:alice@{from_host}>\r\n\
         Record-Route: <sip:edge.pbx.internal;lr>\r\n\
         User-Agent: InternalPBX/1.0\r\n\
         X-Account: 42\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A response to a request the SBC sent, built from it (RFC 3261 §8.2.6).
pub fn reply(
    req: &Sent,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact: Option<&str>,
    body: &str,
) -> String {
    // Parsed once: the fuzz target answers with this for every input.
    let m = req.msg();
    let value = |name| String::from_utf8_lossy(m.value(name).unwrap_or(b"")).into_owned();
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for h in m.all(HeaderName::Via) {
        s.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(h.value)));
    }
    s.push_str(&format!("From: {}\r\n", value(HeaderName::From)));
    let to = value(HeaderName::To);
    match to_tag {
        Some(t) if !to.contains("tag=") => s.push_str(&format!("To: {to};tag={t}\r\n")),
        _ => s.push_str(&format!("To: {to}\r\n")),
    }
    s.push_str(&format!("Call-ID: {}\r\n", value(HeaderName::CallId)));
    s.push_str(&format!("CSeq: {}\r\n", value(HeaderName::CSeq)));
    if let Some(c) = contact {
        s.push_str(&format!("Contact: <{c}>\r\n"));
    }
    s.push_str("Server: CarrierSwitch/9\r\n");
    if !body.is_empty() {
        s.push_str("Content-Type: application/sdp\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

/// An in-dialog request from a peer, from the dialog identifiers it saw.
#[allow(clippy::too_many_arguments)]
pub fn in_dialog(
    method: &str,
    ruri: &str,
    via_host: &str,
    branch: &str,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via_host};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:peer@{via_host}>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The PBX's offer in `invite`.
pub const OFFER_SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

pub const ANSWER_SDP: &str = "v=0\r\no=- 2 2 IN IP4 10.0.0.20\r\ns=-\r\nc=IN IP4 10.0.0.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

/// The From of the PBX's requests in calls from [`invite`] with
/// `from_host` "10.0.0.10:5060".
pub const CALLER_FROM: &str = "\"Alice\" <sip:alice@10.0.0.10:5060>;tag=caller-tag";

/// The callee's 200 with [`ANSWER_SDP`] to the INVITE it got, with its
/// tag and Contact.
pub fn answer_200(invite: &Sent, tag: &str, contact: &str) -> String {
    reply(invite, 200, "OK", Some(tag), Some(contact), ANSWER_SDP)
}

/// The PBX's ACK in call `call_id` with the given To value (the 200's,
/// or a made-up one).
pub fn ack_from_pbx(call_id: &str, to: &str) -> String {
    in_dialog(
        "ACK",
        "sip:192.0.2.1:5060",
        "10.0.0.10:5060",
        "z9hG4bKpbxack",
        CALLER_FROM,
        to,
        call_id,
        1,
        "",
    )
}

/// The callee's BYE in the B dialog of `b_invite` (the INVITE it got,
/// answered with tag "carrier-tag").
pub fn carrier_bye(b_invite: &Sent, branch: &str, cseq: u32) -> String {
    in_dialog(
        "BYE",
        "sip:192.0.2.1:5060",
        "10.0.0.20:5060",
        branch,
        "<sip:callee@10.0.0.20>;tag=carrier-tag",
        &b_invite.header(HeaderName::From),
        &b_invite.header(HeaderName::CallId),
        cseq,
        "",
    )
}

/// A phone's account of `extension` with the password `secret`, from any
/// network, no trunk's.
pub fn account(username: &str, extension: &str, secret: &str) -> sbc_core::registrar::Account {
    sbc_core::registrar::Account {
        username: username.into(),
        extension: extension.into(),
        secret: sbc_core::registrar::AccountSecret::Password(secret.as_bytes().to_vec().into()),
        networks: vec![],
        transports: Vec::new(),
        trunk: None,
    }
}

/// `account` of `extension` registered with `contact`, reached over
/// `flow` until `expires` (REGISTER Call-ID `call_id`, CSeq 1).
pub fn bound(
    account: &str,
    extension: &str,
    contact: &str,
    flow: Flow,
    expires: Instant,
    call_id: &'static str,
) -> sbc_core::registrar::Change {
    sbc_core::registrar::Change::bound(sbc_core::registrar::Binding::new(
        (account.into(), extension.into()),
        (contact.as_bytes(), call_id.as_bytes()),
        flow,
        expires,
        1,
    ))
}

/// The `Proxy-Authorization` header line (with its CRLF) answering the
/// 407 `challenge` for an INVITE to `uri` as `username` with `password`
/// (client nonce `cnonce`, nonce count 1).
pub fn proxy_authorization(
    challenge: &Sent,
    username: &str,
    password: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    proxy_authorization_for(challenge, "INVITE", username, password, uri, cnonce)
}

/// [`proxy_authorization`] for a request of `method`.
pub fn proxy_authorization_for(
    challenge: &Sent,
    method: &str,
    username: &str,
    password: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    use sbc_core::sip::digest::{self, Challenge, Credentials};
    let c = Challenge::parse(
        challenge
            .msg()
            .value(HeaderName::ProxyAuthenticate)
            .unwrap(),
    )
    .unwrap();
    let me = Credentials {
        username: username.as_bytes(),
        password: password.as_bytes(),
    };
    let a = digest::answer(
        &c,
        &me,
        method.as_bytes(),
        uri.as_bytes(),
        cnonce.as_bytes(),
        1,
    )
    .unwrap();
    let mut v = Vec::new();
    a.write(&mut v).unwrap();
    format!("Proxy-Authorization: {}\r\n", String::from_utf8(v).unwrap())
}
