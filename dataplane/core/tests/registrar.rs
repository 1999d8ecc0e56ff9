//! The registrar on the simulated clock: digest challenges (MD5 and
//! SHA-256), nonces that go stale and cannot be replayed, answers that do
//! not tell whether a user exists, expiry rules, NAT, lockout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sbc_core::b2bua::Event;
use sbc_core::net::{ConnId, Flow, LocalId, Transport};
use sbc_core::policy::Policy;
use sbc_core::registrar::{
    Account, AccountSecret, Accounts, AuthFailure, Change, Location, LockoutSettings,
    RegisterResult, Settings,
};
use sbc_core::sip::HeaderName;
use sbc_core::sip::digest::{self, Algorithm, Challenge, Credentials};
use support::*;

/// The phone, behind a NAT: its REGISTERs arrive from here.
const PHONE: &str = "203.0.113.20:40000";
const REALM: &str = "sbc.test";

fn settings() -> Settings {
    Settings {
        realm: REALM.into(),
        min_expires: 60,
        max_expires: 3600,
        default_expires: 600,
        nonce_lifetime: Duration::from_secs(300),
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        lockout: Some(LockoutSettings {
            failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(600),
        }),
        lockout_exempt: Vec::new(),
        keepalive: Some(sbc_core::registrar::Keepalive::default()),
    }
}

fn registrar_policy() -> Policy {
    let mut p = policy();
    let ha1 = Algorithm::Md5.ha1(b"bob", REALM.as_bytes(), b"bobs-secret");
    p.accounts = Accounts::new(
        Some(settings()),
        vec![
            account("alice", "201", "alices-secret"),
            Account {
                username: "bob".into(),
                extension: "202".into(),
                secret: AccountSecret::Ha1 {
                    md5: Some(ha1.as_bytes().to_vec().into()),
                    sha256: None,
                },
                networks: vec!["203.0.113.0/24".parse().unwrap()],
                transports: Vec::new(),
                trunk: None,
            },
        ],
    );
    // Generous stranger limits: phones are strangers until authenticated.
    p.acl.strangers.per_source = 1000;
    p.acl.strangers.total = 1000;
    p
}

/// A REGISTER for `user` (To and From), with `extra` header lines.
fn register(user: &str, call_id: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:sbc.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.1.1.2:5062;branch=z9hG4bK-{call_id}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@sbc.test>;tag=ph-{call_id}\r\n\
         To: <sip:{user}@sbc.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

struct Phone {
    user: &'static str,
    password: &'static str,
    call_id: &'static str,
    cseq: u32,
    nc: u32,
    challenge: Option<Challenge>,
    /// The Request-URI (and digest `uri`) its REGISTERs carry.
    uri: &'static str,
}

impl Phone {
    /// The `Authorization` line answering the last challenge with this
    /// phone's credentials.
    fn authorization(&self, cnonce: &[u8], nc: u32) -> String {
        let me = Credentials {
            username: self.user.as_bytes(),
            password: self.password.as_bytes(),
        };
        let c = self.challenge.as_ref().unwrap();
        let a = digest::answer(c, &me, b"REGISTER", self.uri.as_bytes(), cnonce, nc).unwrap();
        let mut v = Vec::new();
        a.write(&mut v).unwrap();
        format!("Authorization: {}\r\n", String::from_utf8(v).unwrap())
    }

    fn new(user: &'static str, password: &'static str, call_id: &'static str) -> Self {
        Phone {
            user,
            password,
            call_id,
            cseq: 0,
            nc: 0,
            challenge: None,
            uri: "sip:sbc.test",
        }
    }

    /// Sends a REGISTER (with credentials for the last challenge, if
    /// any) and returns the answer.
    fn send(&mut self, sim: &mut Sim, extra: &str) -> Sent {
        self.send_on(sim, Flow::udp(addr(PHONE), LocalId(0)), extra)
    }

    /// [`Phone::send`] over `flow`.
    fn send_on(&mut self, sim: &mut Sim, flow: Flow, extra: &str) -> Sent {
        self.cseq += 1;
        let mut headers = extra.to_owned();
        if self.challenge.is_some() {
            self.nc += 1;
            headers.push_str(&self.authorization(b"cn0a", self.nc));
        }
        let text = register(self.user, self.call_id, self.cseq, &headers)
            .replace(
                "SIP/2.0/UDP",
                &format!("SIP/2.0/{}", flow.transport.token()),
            )
            .replace("REGISTER sip:sbc.test", &format!("REGISTER {}", self.uri));
        sim.engine.handle_datagram(sim.now, flow, text.as_bytes());
        let answer = sim.one_to(&flow.remote.to_string());
        if answer.code() == Some(401) {
            self.take_challenge(&answer, Algorithm::Md5);
        }
        answer
    }

    fn take_challenge(&mut self, answer: &Sent, algorithm: Algorithm) {
        let msg = answer.msg();
        let c = msg
            .all(HeaderName::WwwAuthenticate)
            .map(|h| Challenge::parse(h.value).unwrap())
            .find(|c| c.algorithm == algorithm)
            .expect("a challenge with the algorithm");
        self.challenge = Some(c);
        self.nc = 0;
    }

    /// Challenge then credentials: the 200 (or whatever comes).
    fn register(&mut self, sim: &mut Sim, extra: &str) -> Sent {
        self.register_on(sim, Flow::udp(addr(PHONE), LocalId(0)), extra)
    }

    /// [`Phone::register`] over `flow`.
    fn register_on(&mut self, sim: &mut Sim, flow: Flow, extra: &str) -> Sent {
        let first = self.send_on(sim, flow, extra);
        if first.code() != Some(401) {
            return first;
        }
        self.send_on(sim, flow, extra)
    }
}

/// Applies the registration events to `loc` (the control plane's view;
/// the engine has applied them to its own bindings already).
fn publish(sim: &mut Sim, loc: &mut Location) -> Vec<Change> {
    let changes: Vec<Change> = sim
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Registration(c) => Some(c),
            _ => None,
        })
        .collect();
    for c in &changes {
        loc.apply(c.clone());
    }
    changes
}

fn count(sim: &Sim, r: RegisterResult) -> u64 {
    sim.stats.registrar[r as usize].load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_phone_registers_with_md5_behind_nat() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut loc = Location::default();
    let mut phone = Phone::new("alice", "alices-secret", "reg-1");
    let challenge = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2:5062>\r\n");
    assert_eq!(challenge.code(), Some(401));
    // Both algorithms are offered, SHA-256 first (RFC 8760 §2.4), with
    // the same realm and qop=auth.
    let offered: Vec<Challenge> = challenge
        .msg()
        .all(HeaderName::WwwAuthenticate)
        .map(|h| Challenge::parse(h.value).unwrap())
        .collect();
    assert_eq!(offered.len(), 2);
    assert_eq!(offered[0].algorithm, Algorithm::Sha256);
    assert_eq!(offered[1].algorithm, Algorithm::Md5);
    assert!(
        offered
            .iter()
            .all(|c| c.realm == REALM.as_bytes() && c.qop.len() == 1)
    );
    // RFC 3581: back to the source port even without rport.
    assert_eq!(challenge.to, addr(PHONE));

    let ok = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2:5062>\r\n");
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    assert_eq!(
        ok.header(HeaderName::Contact),
        "<sip:alice@10.1.1.2:5062>;expires=600"
    );
    let changes = publish(&mut sim, &mut loc);
    let [Change::Bound(b)] = changes.as_slice() else {
        panic!("{changes:?}")
    };
    assert_eq!((&*b.account, &*b.extension), ("alice", "201"));
    assert_eq!(b.contact(), b"sip:alice@10.1.1.2:5062");
    // The flow is where it came from, not the private Contact host.
    assert_eq!(b.flow.remote, addr(PHONE));
    assert_eq!(b.expires, sim.now + Duration::from_secs(600));
    assert_eq!(count(&sim, RegisterResult::Challenged), 1);
    assert_eq!(count(&sim, RegisterResult::Registered), 1);
}

#[test]
fn sha256_works_and_ha1_only_accounts_refuse_it() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut alice = Phone::new("alice", "alices-secret", "reg-sha");
    let c = alice.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    alice.take_challenge(&c, Algorithm::Sha256);
    assert_eq!(
        alice
            .send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n")
            .code(),
        Some(200)
    );
    // bob has only an MD5 HA1: SHA-256 cannot be checked, MD5 can.
    let mut bob = Phone::new("bob", "bobs-secret", "reg-bob");
    let c = bob.send(&mut sim, "Contact: <sip:bob@10.1.1.3>\r\n");
    bob.take_challenge(&c, Algorithm::Sha256);
    assert_eq!(
        bob.send(&mut sim, "Contact: <sip:bob@10.1.1.3>\r\n").code(),
        Some(401)
    );
    let mut bob = Phone::new("bob", "bobs-secret", "reg-bob2");
    assert_eq!(
        bob.register(&mut sim, "Contact: <sip:bob@10.1.1.3>\r\n")
            .code(),
        Some(200)
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer() {
    let mut sim = Sim::with_policy(registrar_policy());
    let wrong =
        Phone::new("alice", "guess", "reg-w").register(&mut sim, "Contact: <sip:a@10.1.1.2>\r\n");
    let unknown =
        Phone::new("mallory", "guess", "reg-u").register(&mut sim, "Contact: <sip:m@10.1.1.2>\r\n");
    // Both challenged again, alike but for the fresh nonce.
    assert_eq!(wrong.code(), Some(401));
    assert_eq!(unknown.code(), Some(401));
    let strip = |s: &Sent| {
        s.text()
            .lines()
            .filter(|l| {
                !l.starts_with("Via")
                    && !l.starts_with("From")
                    && !l.starts_with("To")
                    && !l.starts_with("Call-ID")
                    && !l.starts_with("CSeq")
            })
            .map(|l| match l.find("nonce=\"") {
                Some(i) => {
                    let rest = &l[i + 7..];
                    let end = rest.find('"').unwrap();
                    format!("{}nonce=\"N\"{}", &l[..i], &rest[end + 1..])
                }
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&wrong), strip(&unknown));
    assert!(sim.events().is_empty(), "nothing registered");
    assert_eq!(count(&sim, RegisterResult::AuthFailed), 2);
    // The operator's counters tell them apart.
    let why = |r: AuthFailure| {
        sim.stats.auth_failures[r as usize].load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(why(AuthFailure::WrongPassword), 1);
    assert_eq!(why(AuthFailure::UnknownUser), 1);
}

#[test]
fn a_stale_nonce_gets_stale_true_and_a_replay_is_refused() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut phone = Phone::new("alice", "alices-secret", "reg-s");
    assert_eq!(
        phone
            .register(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n")
            .code(),
        Some(200)
    );
    // The same nonce, next count: accepted without a new challenge.
    assert_eq!(
        phone
            .send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n")
            .code(),
        Some(200)
    );
    // A replay: the same nonce count again (a new branch and CSeq, as an
    // attacker who captured the request would send it).
    phone.nc -= 1;
    let replay = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    assert_eq!(replay.code(), Some(401));
    let c = Challenge::parse(replay.msg().value(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    assert!(c.stale);
    // After the nonce's lifetime: stale=true, then a fresh nonce works.
    sim.advance(Duration::from_secs(301));
    let stale = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    assert_eq!(stale.code(), Some(401));
    let c = Challenge::parse(stale.msg().value(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    assert!(c.stale);
    assert_eq!(
        phone
            .send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n")
            .code(),
        Some(200)
    );
    assert_eq!(count(&sim, RegisterResult::Stale), 2);
}

#[test]
fn expiry_rules() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut loc = Location::default();
    let mut phone = Phone::new("alice", "alices-secret", "reg-e");
    // Under the minimum: 423 with Min-Expires.
    let brief = phone.register(&mut sim, "Contact: <sip:alice@10.1.1.2>;expires=30\r\n");
    assert_eq!(brief.code(), Some(423));
    assert_eq!(brief.header(HeaderName::MinExpires), "60");
    // Over the maximum (from the Expires header): cut.
    let long = phone.send(
        &mut sim,
        "Contact: <sip:alice@10.1.1.2>\r\nExpires: 86400\r\n",
    );
    assert_eq!(
        long.header(HeaderName::Contact),
        "<sip:alice@10.1.1.2>;expires=3600"
    );
    publish(&mut sim, &mut loc);
    // A query (no Contact) shows the binding with what is left.
    sim.advance(Duration::from_secs(100));
    let query = phone.send(&mut sim, "");
    assert_eq!(query.code(), Some(200));
    assert_eq!(
        query.header(HeaderName::Contact),
        "<sip:alice@10.1.1.2>;expires=3500"
    );
    // It expires on time.
    assert!(loc.get("alice", sim.now).is_some());
    assert!(
        loc.get("alice", sim.now + Duration::from_secs(3500))
            .is_none()
    );
    // Expires: 0 unregisters.
    let gone = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\nExpires: 0\r\n");
    assert_eq!(gone.code(), Some(200));
    assert_eq!(
        publish(&mut sim, &mut loc),
        vec![Change::Removed {
            account: "alice".into()
        }]
    );
    // `*` needs Expires: 0.
    let bad = phone.send(&mut sim, "Contact: *\r\n");
    assert_eq!(bad.code(), Some(400));
    let star = phone.send(&mut sim, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(star.code(), Some(200));
    assert_eq!(count(&sim, RegisterResult::TooBrief), 1);
    assert_eq!(count(&sim, RegisterResult::Unregistered), 2);
}

#[test]
fn a_malformed_register_gets_400_naming_what_is_wrong_and_binds_nothing() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut phone = Phone::new("alice", "alices-secret", "reg-m");
    let cases = [
        (
            "Contact: <sip:alice@10.1.1.2>\r\nExpires: soon\r\n",
            "Invalid Expires",
        ),
        (
            "Contact: *, <sip:alice@10.1.1.2>\r\nExpires: 0\r\n",
            "Wildcard Contact Needs Expires: 0",
        ),
        ("Contact: <sip:alice@10.1.1.2\r\n", "Invalid Contact"),
        (
            "Contact: <sip:alice@10.1.1.2>;expires=later\r\n",
            "Invalid Contact expires",
        ),
        (
            "Contact: <sip:alice@10.1.1.2>;expires\r\n",
            "Invalid Contact expires",
        ),
    ];
    for (i, (headers, reason)) in cases.iter().enumerate() {
        let answer = phone.register(&mut sim, headers);
        assert_eq!(answer.code(), Some(400), "{headers}: {}", answer.text());
        assert!(
            answer
                .text()
                .starts_with(&format!("SIP/2.0 400 {reason}\r\n")),
            "{headers}: {}",
            answer.text()
        );
        assert_eq!(count(&sim, RegisterResult::BadRequest), i as u64 + 1);
    }
    assert!(sim.events().is_empty(), "nothing bound");
    // The same phone, its request well formed, registers.
    let ok = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
}

#[test]
fn an_older_cseq_of_the_same_call_id_is_out_of_order() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut loc = Location::default();
    let mut phone = Phone::new("alice", "alices-secret", "reg-o");
    phone.cseq = 10;
    assert_eq!(
        phone
            .register(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n")
            .code(),
        Some(200)
    );
    publish(&mut sim, &mut loc);
    phone.cseq = 5;
    let old = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.9>\r\n");
    assert_eq!(old.code(), Some(500));
    assert!(sim.events().is_empty());
}

#[test]
fn networks_and_the_address_of_record_are_enforced() {
    // bob may register only from 203.0.113.0/24.
    let mut sim = Sim::with_policy(registrar_policy());
    let mut bob = Phone::new("bob", "bobs-secret", "reg-n");
    let first = bob.send(&mut sim, "Contact: <sip:bob@10.1.1.3>\r\n");
    assert_eq!(first.code(), Some(401));
    bob.cseq += 1;
    bob.nc += 1;
    let req = register(
        "bob",
        "reg-n",
        bob.cseq,
        &format!(
            "Contact: <sip:bob@10.1.1.3>\r\n{}",
            bob.authorization(b"x", 1)
        ),
    );
    // From outside the account's networks: as if the password were wrong.
    sim.recv("100.64.0.50:5060", &req);
    assert_eq!(sim.one_to("100.64.0.50:5060").code(), Some(401));
    // alice may not register as extension 202 (bob's).
    let mut alice = Phone::new("alice", "alices-secret", "reg-aor");
    alice.user = "alice";
    let c = alice.send(&mut sim, "");
    assert_eq!(c.code(), Some(401));
    let req = register(
        "202",
        "reg-aor",
        5,
        &format!(
            "Contact: <sip:alice@10.1.1.2>\r\n{}",
            alice.authorization(b"x", 1)
        ),
    );
    sim.recv(PHONE, &req);
    assert_eq!(sim.one_to(PHONE).code(), Some(403));
    // Her own extension number is her address of record too.
    let req = register("201", "reg-aor", 6, "Contact: <sip:alice@10.1.1.2>\r\n");
    sim.recv(PHONE, &req);
    let c = sim.one_to(PHONE);
    alice.take_challenge(&c, Algorithm::Md5);
    let req = register(
        "201",
        "reg-aor",
        7,
        &format!(
            "Contact: <sip:alice@10.1.1.2>\r\n{}",
            alice.authorization(b"y", 1)
        ),
    );
    sim.recv(PHONE, &req);
    assert_eq!(sim.one_to(PHONE).code(), Some(200));
}

#[test]
fn a_source_that_keeps_failing_is_locked_out_for_a_while() {
    let mut sim = Sim::with_policy(registrar_policy());
    for i in 0..3 {
        let call_id: &'static str = Box::leak(format!("reg-l{i}").into_boxed_str());
        let answer = Phone::new("alice", "guess", call_id)
            .register(&mut sim, "Contact: <sip:a@10.1.1.2>\r\n");
        assert_eq!(answer.code(), Some(401));
    }
    // Blocked: even the right password gets no answer at all.
    sim.recv(
        PHONE,
        &register("alice", "reg-l9", 1, "Contact: <sip:a@10.1.1.2>\r\n"),
    );
    assert!(sim.sent().is_empty());
    assert_eq!(count(&sim, RegisterResult::Blocked), 1);
    // Another source is not affected.
    sim.recv("203.0.113.21:5060", &register("alice", "reg-other", 1, ""));
    assert_eq!(sim.one_to("203.0.113.21:5060").code(), Some(401));
    // After the block, the right password works again.
    sim.advance(Duration::from_secs(601));
    let ok = Phone::new("alice", "alices-secret", "reg-l10")
        .register(&mut sim, "Contact: <sip:a@10.1.1.2>\r\n");
    assert_eq!(ok.code(), Some(200));
}

/// A source in a `lockout.exempt` network (an office LAN, say) is never
/// locked out, however often it fails; failures are still counted.
#[test]
fn an_exempt_network_is_never_locked_out() {
    let mut policy = registrar_policy();
    let mut settings = settings();
    settings.lockout_exempt = vec!["203.0.113.0/24".parse().unwrap()];
    policy.accounts = Accounts::new(Some(settings), policy.accounts.all().to_vec());
    let mut sim = Sim::with_policy(policy);
    for i in 0..6 {
        let call_id: &'static str = Box::leak(format!("reg-x{i}").into_boxed_str());
        let answer = Phone::new("alice", "guess", call_id)
            .register(&mut sim, "Contact: <sip:a@10.1.1.2>\r\n");
        assert_eq!(answer.code(), Some(401));
    }
    assert_eq!(count(&sim, RegisterResult::Blocked), 0);
    assert_eq!(count(&sim, RegisterResult::AuthFailed), 6);
    let ok = Phone::new("alice", "alices-secret", "reg-x9")
        .register(&mut sim, "Contact: <sip:a@10.1.1.2>\r\n");
    assert_eq!(ok.code(), Some(200));
}

/// A configured trunk's address is never locked out (issue 10: trunks
/// are exempt): phones registering through a PBX trunk, one of which
/// keeps guessing, must not cut the trunk off. Failures are still counted.
#[test]
fn a_trunks_address_is_never_locked_out() {
    let mut sim = Sim::with_policy(registrar_policy());
    let pbx = Flow::udp(addr(PBX), LocalId(0));
    for i in 0..6 {
        let call_id: &'static str = Box::leak(format!("reg-t{i}").into_boxed_str());
        let answer = Phone::new("alice", "guess", call_id).register_on(
            &mut sim,
            pbx,
            "Contact: <sip:a@10.1.1.2>\r\n",
        );
        assert_eq!(answer.code(), Some(401));
    }
    assert_eq!(count(&sim, RegisterResult::Blocked), 0);
    assert_eq!(count(&sim, RegisterResult::AuthFailed), 6);
    let ok = Phone::new("alice", "alices-secret", "reg-t9").register_on(
        &mut sim,
        pbx,
        "Contact: <sip:a@10.1.1.2>\r\n",
    );
    assert_eq!(ok.code(), Some(200));
    // The same from a phone's address: locked out after three.
    for i in 0..3 {
        let call_id: &'static str = Box::leak(format!("reg-p{i}").into_boxed_str());
        Phone::new("alice", "guess", call_id).register(&mut sim, "Contact: <sip:a@10.1.1.2>\r\n");
    }
    sim.recv(
        PHONE,
        &register("alice", "reg-p9", 1, "Contact: <sip:a@10.1.1.2>\r\n"),
    );
    assert!(sim.sent().is_empty());
    assert_eq!(count(&sim, RegisterResult::Blocked), 1);
}

#[test]
fn a_retransmitted_register_gets_the_same_answer_and_binds_once() {
    let mut sim = Sim::with_policy(registrar_policy());
    let mut phone = Phone::new("alice", "alices-secret", "reg-r");
    phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    let ok = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(sim.events().len(), 1);
    // The same request again (same branch): the same 200, no new binding.
    let again = register(
        "alice",
        "reg-r",
        2,
        &format!(
            "Contact: <sip:alice@10.1.1.2>\r\n{}",
            phone.authorization(b"cn0a", 1)
        ),
    );
    sim.recv(PHONE, &again);
    assert_eq!(sim.one_to(PHONE).bytes, ok.bytes);
    assert!(sim.events().is_empty());
}

/// A REGISTER's challenge leaves no transaction behind (RFC 3261 §8.2.7,
/// a stateless UAS): the same request again is challenged afresh, with a
/// new nonce, and only the 200 is kept to answer retransmissions.
#[test]
fn a_register_is_challenged_statelessly() {
    let mut sim = Sim::with_policy(registrar_policy());
    let first = register("alice", "reg-s", 1, "Contact: <sip:alice@10.1.1.2>\r\n");
    sim.recv(PHONE, &first);
    let a = sim.one_to(PHONE);
    assert_eq!(a.code(), Some(401));
    assert_eq!(sim.engine.outside_transactions(), (0, 0), "nothing kept");
    sim.recv(PHONE, &first);
    let b = sim.one_to(PHONE);
    assert_eq!(b.code(), Some(401));
    let nonce = |s: &Sent| {
        Challenge::parse(
            s.msg()
                .all(HeaderName::WwwAuthenticate)
                .next()
                .unwrap()
                .value,
        )
        .unwrap()
        .nonce
        .to_vec()
    };
    assert_ne!(nonce(&a), nonce(&b), "a fresh challenge");
    assert_eq!(count(&sim, RegisterResult::Challenged), 2);
    let mut phone = Phone::new("alice", "alices-secret", "reg-s2");
    phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    let ok = phone.send(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(sim.engine.outside_transactions(), (0, 1), "the 200's");
    // Wrong credentials are refused through a transaction: a copy of the
    // request gets the same 401 and counts (towards the lockout) once.
    let contact = "Contact: <sip:alice@10.1.1.2>\r\n";
    let mut wrong = Phone::new("alice", "not-the-secret", "reg-w");
    wrong.send(&mut sim, contact);
    let refused = wrong.send(&mut sim, contact);
    assert_eq!(refused.code(), Some(401));
    let again = register(
        "alice",
        "reg-w",
        2,
        &format!("{contact}{}", wrong.authorization(b"cn0a", 1)),
    );
    sim.recv(PHONE, &again);
    assert_eq!(sim.one_to(PHONE).bytes, refused.bytes);
    assert_eq!(count(&sim, RegisterResult::AuthFailed), 1);
    assert_eq!(sim.engine.outside_transactions(), (0, 2));
}

#[test]
fn without_a_registrar_register_is_refused_as_before() {
    let mut sim = Sim::new();
    sim.recv(PBX, &register("alice", "reg-x", 1, ""));
    // (Answered at the Via's port: this REGISTER asks for no rport.)
    assert_eq!(sim.one_to("10.0.0.10:5062").code(), Some(405));
    // And strangers get the default-deny 403, where they sent from
    // (not a trunk: symmetric, whatever the Via says).
    sim.recv(PHONE, &register("alice", "reg-y", 1, ""));
    assert_eq!(sim.one_to(PHONE).code(), Some(403));
}

#[test]
fn shards_count_a_sources_failures_together() {
    // Two shards sharing one table: a source's REGISTERs reach either
    // (their Call-IDs pick it); 3 failures between them block it on both.
    let shared = Arc::new(sbc_core::registrar::Lockout::default());
    let mut a = Sim::with_policy(registrar_policy());
    let mut b = Sim::with_policy(registrar_policy());
    a.engine.set_lockout(Arc::clone(&shared));
    b.engine.set_lockout(Arc::clone(&shared));
    for (on_a, call_id) in [(true, "reg-s1"), (false, "reg-s2"), (true, "reg-s3")] {
        let sim = if on_a { &mut a } else { &mut b };
        let answer =
            Phone::new("alice", "guess", call_id).register(sim, "Contact: <sip:a@10.1.1.2>\r\n");
        assert_eq!(answer.code(), Some(401));
    }
    for sim in [&mut a, &mut b] {
        sim.recv(
            PHONE,
            &register("alice", "reg-s9", 1, "Contact: <sip:a@10.1.1.2>\r\n"),
        );
        assert!(sim.sent().is_empty());
        assert_eq!(count(sim, RegisterResult::Blocked), 1);
    }
}

#[test]
fn an_account_held_to_tls_is_refused_over_udp_and_registers_over_tls() {
    let mut p = registrar_policy();
    p.listeners.push(sbc_core::policy::Listener {
        transport: Transport::Tls,
        bind: addr("192.0.2.1:5061"),
        advertise: "192.0.2.1:5061".into(),
    });
    p.accounts = Accounts::new(
        Some(settings()),
        vec![Account {
            transports: vec![Transport::Tls, Transport::Wss],
            ..account("alice", "201", "alices-secret")
        }],
    );
    let mut sim = Sim::with_policy(p);
    let mut alice = Phone::new("alice", "alices-secret", "reg-tls");
    // Over UDP the right password is refused as if it were wrong.
    let udp = alice.register(&mut sim, "Contact: <sip:alice@10.1.1.2>\r\n");
    assert_eq!(udp.code(), Some(401), "{}", udp.text());
    let transport = sim.stats.auth_failures[AuthFailure::Transport as usize]
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(transport, 1);
    assert!(sim.events().is_empty(), "nothing registered");
    // Over TLS it registers.
    let tls = Flow {
        transport: Transport::Tls,
        remote: addr(PHONE),
        local: LocalId(1),
        conn: Some(ConnId(std::num::NonZeroU64::new(7).unwrap())),
    };
    let first = alice.send_on(
        &mut sim,
        tls,
        "Contact: <sip:alice@10.1.1.2;transport=tls>\r\n",
    );
    let ok = if first.code() == Some(401) {
        alice.send_on(
            &mut sim,
            tls,
            "Contact: <sip:alice@10.1.1.2;transport=tls>\r\n",
        )
    } else {
        first
    };
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
}

#[test]
fn a_sips_contact_binds_only_for_a_sips_request_uri_over_tls() {
    let mut p = registrar_policy();
    p.listeners.push(sbc_core::policy::Listener {
        transport: Transport::Tls,
        bind: addr("192.0.2.1:5061"),
        advertise: "192.0.2.1:5061".into(),
    });
    let mut sim = Sim::with_policy(p);
    let tls = Flow {
        transport: Transport::Tls,
        remote: addr(PHONE),
        local: LocalId(1),
        conn: Some(ConnId(std::num::NonZeroU64::new(9).unwrap())),
    };
    let sips_contact = "Contact: <sips:alice@10.1.1.2>\r\n";
    // RFC 5630 §5.2: a SIPS Contact under a SIP Request-URI is refused
    // with 400, even over TLS and with the right password.
    let mut alice = Phone::new("alice", "alices-secret", "reg-sips");
    let first = alice.send_on(&mut sim, tls, sips_contact);
    assert_eq!(first.code(), Some(401), "{}", first.text());
    let refused = alice.send_on(&mut sim, tls, sips_contact);
    assert_eq!(refused.code(), Some(400), "{}", refused.text());
    assert!(
        refused.text().contains("SIPS Contact"),
        "{}",
        refused.text()
    );
    assert!(sim.events().is_empty(), "nothing registered");
    assert_eq!(count(&sim, RegisterResult::BadRequest), 1);
    // Also when the SIPS Contact is not the first one, or its scheme is
    // written in capitals.
    for contacts in [
        "Contact: <sip:alice@10.1.1.2>, <sips:alice@10.1.1.2>\r\n",
        "Contact: <SIPS:alice@10.1.1.2>\r\n",
    ] {
        let again = alice.send_on(&mut sim, tls, contacts);
        assert_eq!(again.code(), Some(400), "{contacts}: {}", again.text());
    }
    // A SIPS Request-URI over UDP is refused before anything else (a
    // SIPS URI asks for TLS on every hop).
    let mut bob = Phone::new("alice", "alices-secret", "reg-sips-udp");
    bob.uri = "sips:sbc.test";
    let udp = bob.send(&mut sim, sips_contact);
    assert_eq!(udp.code(), Some(416), "{}", udp.text());
    // Both SIPS, over TLS: bound.
    let mut carol = Phone::new("alice", "alices-secret", "reg-sips-ok");
    carol.uri = "sips:sbc.test";
    let first = carol.send_on(&mut sim, tls, sips_contact);
    let ok = if first.code() == Some(401) {
        carol.send_on(&mut sim, tls, sips_contact)
    } else {
        first
    };
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    assert!(ok.text().contains("<sips:alice@10.1.1.2>"), "{}", ok.text());
    // A SIP Contact under a SIP Request-URI over TLS stays fine.
    let mut dave = Phone::new("alice", "alices-secret", "reg-sip-tls");
    let first = dave.send_on(
        &mut sim,
        tls,
        "Contact: <sip:alice@10.1.1.2;transport=tls>\r\n",
    );
    assert_eq!(first.code(), Some(401));
    let ok = dave.send_on(
        &mut sim,
        tls,
        "Contact: <sip:alice@10.1.1.2;transport=tls>\r\n",
    );
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    // Removing a binding is never refused for its scheme.
    let gone = dave.send_on(
        &mut sim,
        tls,
        "Contact: <sips:alice@10.1.1.2>;expires=0\r\n",
    );
    assert_eq!(gone.code(), Some(200), "{}", gone.text());
}

/// The registrar's one-second tick rests while the shard holds no
/// binding (an idle shard does not wake every second for nothing), starts
/// again with the first binding, which then expires on time, and rests
/// again once nothing is left.
#[test]
fn the_registrars_ticks_rest_while_nothing_is_bound() {
    let mut sim = Sim::with_policy(registrar_policy());
    // Installed as the shard does: the ticks start, the first rests.
    let now = sim.now;
    sim.engine
        .set_policy(now, std::sync::Arc::new(registrar_policy()));
    assert_eq!(
        sim.engine.poll_timeout(),
        Some(now + Duration::from_secs(1))
    );
    sim.advance(Duration::from_secs(3));
    assert_eq!(
        sim.engine.poll_timeout(),
        None,
        "nothing bound, nothing due"
    );
    let mut phone = Phone::new("alice", "alices-secret", "reg-rest");
    let ok = phone.register(&mut sim, "Contact: <sip:alice@10.1.1.2>;expires=60\r\n");
    assert_eq!(ok.code(), Some(200));
    let due = sim.engine.poll_timeout().expect("ticking once bound");
    assert!(
        due <= sim.now + Duration::from_secs(1),
        "{:?}",
        due - sim.now
    );
    sim.advance(Duration::from_secs(59));
    assert_eq!(sim.engine.location().len(), 1);
    sim.advance(Duration::from_secs(2));
    assert!(sim.engine.location().is_empty(), "expired on time");
    // Its keepalive's turn comes within the 30 s interval (the account is
    // forgotten then), and the last unanswered OPTIONS ends by timer F
    // (32 s): after that nothing is left to wake for.
    sim.advance(Duration::from_secs(65));
    assert_eq!(sim.engine.poll_timeout(), None);
    // Bound again, it ticks again.
    let again = phone.register(&mut sim, "Contact: <sip:alice@10.1.1.2>;expires=60\r\n");
    assert_eq!(again.code(), Some(200));
    assert!(sim.engine.poll_timeout().is_some());
}
