//! The SBC registering itself to a trunk (BRIEF §2), and answering a
//! trunk's challenge to its INVITE, on the simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sbc_core::b2bua::{Event, Upstream};
use sbc_core::policy::Registration;
use sbc_core::sip::HeaderName;
use sbc_core::sip::digest::{Authorization, Challenge, Secret, verify};
use sbc_core::stats::Registered;
use support::*;

const CHALLENGE: &str =
    "Digest realm=\"itsp.example\", nonce=\"n0nce-1\", qop=\"auth\", algorithm=MD5";

/// carrier-a (index 1) wants the SBC registered as sbc-user.
fn registering_sim(expires_s: u64) -> Sim {
    sim_of(registering_policy(expires_s))
}

/// The SBC registers to carrier-a for `expires_s`.
fn registering_policy(expires_s: u64) -> sbc_core::policy::Policy {
    let mut policy = policy();
    policy.trunks[1].registration = Some(Arc::new(Registration {
        registrar: addr(CARRIER_A),
        domain: "itsp.example".into(),
        user: "sbc-user".into(),
        auth_user: "sbc-user".into(),
        secret: "sbc-secret".into(),
        realm: None,
        contact_user: "sbc-contact".into(),
        expires: Duration::from_secs(expires_s),
        retry_min: Duration::from_secs(10),
        retry_max: Duration::from_secs(60),
    }));
    policy
}

/// A sim with `policy` installed (its registrations start).
fn sim_of(policy: sbc_core::policy::Policy) -> Sim {
    let mut sim = Sim::with_policy(policy);
    let policy = Arc::clone(&sim.policy);
    sim.engine.set_policy(sim.now, policy);
    sim
}

/// The REGISTER the policy starts.
fn first_register(sim: &mut Sim) -> Sent {
    let sent = sim.advance(Duration::ZERO);
    assert_eq!(sent.len(), 1, "{sent:?}");
    sent.into_iter().next().unwrap().1
}

fn state(sim: &Sim) -> (Registered, u16) {
    let stats = &sim.policy.trunks[1].stats;
    (
        stats.registered(),
        stats.registration_status.load(Ordering::Relaxed),
    )
}

fn with_header(resp: String, line: &str) -> String {
    resp.replacen("Content-Length", &format!("{line}\r\nContent-Length"), 1)
}

/// Checks the credentials in `register` against [`CHALLENGE`].
fn assert_answers(register: &Sent, header: HeaderName, method: &[u8], password: &[u8]) {
    let value = register.header(header);
    let creds = Authorization::parse(value.as_bytes()).unwrap();
    assert_eq!(&*creds.username, b"sbc-user");
    let challenge = Challenge::parse(CHALLENGE.as_bytes()).unwrap();
    verify(&challenge, &creds, method, Secret::Password(password)).unwrap();
}

/// The registration string's optional parts: a registrar at its own
/// address (not the trunk's), an auth user other than the user, and a
/// realm. The REGISTER goes to the registrar, To and From name the user,
/// the credentials the auth user; a challenge only for another realm is
/// not answered (the round fails with its code).
#[test]
fn a_registrar_apart_an_auth_user_and_a_realm_are_each_used() {
    const REGISTRAR: &str = "10.0.0.40:5070";
    let with = |realm: &str| {
        let mut policy = registering_policy(60);
        let r = policy.trunks[1].registration.as_mut().unwrap();
        *r = Arc::new(Registration {
            registrar: addr(REGISTRAR),
            auth_user: "auth-1".into(),
            realm: Some(realm.into()),
            ..(**r).clone()
        });
        sim_of(policy)
    };
    let mut sim = with("itsp.example");
    let sent = sim.advance(Duration::ZERO);
    let (_, first) = &sent[0];
    assert_eq!(first.to, addr(REGISTRAR));
    assert_eq!(first.header(HeaderName::To), "<sip:sbc-user@itsp.example>");
    let challenge = with_header(
        reply(first, 401, "Unauthorized", Some("reg"), None, ""),
        &format!("WWW-Authenticate: {CHALLENGE}"),
    );
    sim.recv(REGISTRAR, &challenge);
    let second = sim.one_to(REGISTRAR);
    let value = second.header(HeaderName::Authorization);
    let creds = Authorization::parse(value.as_bytes()).unwrap();
    assert_eq!(&*creds.username, b"auth-1");
    let c = Challenge::parse(CHALLENGE.as_bytes()).unwrap();
    verify(&c, &creds, b"REGISTER", Secret::Password(b"sbc-secret")).unwrap();
    assert!(
        second
            .text()
            .contains("From: <sip:sbc-user@itsp.example>;tag=")
    );

    // Configured for realm "voice.example": the challenge for
    // "itsp.example" is not answered.
    let mut sim = with("voice.example");
    let sent = sim.advance(Duration::ZERO);
    let (_, first) = &sent[0];
    let challenge = with_header(
        reply(first, 401, "Unauthorized", Some("reg"), None, ""),
        &format!("WWW-Authenticate: {CHALLENGE}"),
    );
    sim.recv(REGISTRAR, &challenge);
    assert!(sim.sent().is_empty(), "answered another realm's challenge");
    assert_eq!(state(&sim), (Registered::Failed, 401));
}

#[test]
fn registers_answering_the_challenge_and_refreshes_at_half_the_granted_expiry() {
    let mut sim = registering_sim(60);
    assert_eq!(state(&sim), (Registered::Trying, 0));
    let first = first_register(&mut sim);
    assert!(
        first
            .text()
            .starts_with("REGISTER sip:itsp.example SIP/2.0\r\n")
    );
    assert_eq!(first.header(HeaderName::To), "<sip:sbc-user@itsp.example>");
    assert!(
        first
            .header(HeaderName::From)
            .starts_with("<sip:sbc-user@itsp.example>;tag=")
    );
    assert_eq!(
        first.header(HeaderName::Contact),
        "<sip:sbc-contact@192.0.2.1:5060>"
    );
    assert_eq!(first.header(HeaderName::Expires), "60");
    assert_eq!(first.cseq(), "1 REGISTER");
    assert!(first.header(HeaderName::Authorization).is_empty());

    let challenge = with_header(
        reply(&first, 401, "Unauthorized", Some("reg"), None, ""),
        &format!("WWW-Authenticate: {CHALLENGE}"),
    );
    sim.recv(CARRIER_A, &challenge);
    let second = sim.one_to(CARRIER_A);
    assert_eq!(second.cseq(), "2 REGISTER");
    assert_eq!(
        second.header(HeaderName::CallId),
        first.header(HeaderName::CallId)
    );
    assert_answers(
        &second,
        HeaderName::Authorization,
        b"REGISTER",
        b"sbc-secret",
    );

    // The registrar grants 40 s to our Contact.
    let ok = with_header(
        reply(&second, 200, "OK", Some("reg"), None, ""),
        "Contact: <sip:other@198.51.100.7>;expires=3600, <sip:sbc-contact@192.0.2.1:5060>;expires=40",
    );
    sim.recv(CARRIER_A, &ok);
    assert_eq!(
        sim.events(),
        [Event::Upstream {
            trunk: "carrier-a".into(),
            state: Upstream::Registered {
                expires: Duration::from_secs(40)
            }
        }]
    );
    assert_eq!(state(&sim), (Registered::Yes, 200));

    // Nothing until about half of it: then the refresh, same Call-ID.
    assert!(sim.advance(Duration::from_secs(19)).is_empty());
    let refresh = sim.advance(Duration::from_secs(1));
    assert_eq!(refresh.len(), 1, "{refresh:?}");
    let (at, refresh) = &refresh[0];
    assert_eq!(*at, Duration::from_secs(20));
    assert_eq!(refresh.cseq(), "3 REGISTER");
    assert_eq!(
        refresh.header(HeaderName::CallId),
        first.header(HeaderName::CallId)
    );
    sim.recv(
        CARRIER_A,
        &reply(refresh, 200, "OK", Some("reg"), None, "")
            .replace("Content-Length", "Expires: 30\r\nContent-Length"),
    );
    // Still registered: no new event; the next refresh at 15 s.
    assert!(sim.events().is_empty());
    assert_eq!(
        sim.policy.trunks[1].stats.registrations[0].load(Ordering::Relaxed),
        2
    );
    assert!(sim.advance(Duration::from_secs(14)).is_empty());
    assert_eq!(sim.advance(Duration::from_secs(1)).len(), 1);
}

#[test]
fn a_wrong_password_fails_and_retries_with_a_growing_backoff() {
    let mut sim = registering_sim(60);
    let mut retry_at = Vec::new();
    let mut first = first_register(&mut sim);
    for _ in 0..3 {
        let challenge = with_header(
            reply(&first, 401, "Unauthorized", Some("reg"), None, ""),
            &format!("WWW-Authenticate: {CHALLENGE}"),
        );
        sim.recv(CARRIER_A, &challenge);
        let second = sim.one_to(CARRIER_A);
        // The same nonce challenged again: the password is wrong.
        let again = with_header(
            reply(&second, 401, "Unauthorized", Some("reg"), None, ""),
            &format!("WWW-Authenticate: {CHALLENGE}"),
        );
        sim.recv(CARRIER_A, &again);
        assert!(sim.sent().is_empty(), "no third try in the round");
        let retry = match sim.events().as_slice() {
            [
                Event::Upstream {
                    state: Upstream::Failed { status, retry_in },
                    ..
                },
            ] => {
                assert_eq!(*status, Some(401));
                *retry_in
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(state(&sim), (Registered::Failed, 401));
        retry_at.push(retry.as_secs());
        // Nothing before the backoff is over, then a new round.
        assert!(sim.advance(retry - Duration::from_millis(1)).is_empty());
        let next = sim.advance(Duration::from_millis(1));
        first = next
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.to == addr(CARRIER_A))
            .unwrap();
        assert!(first.header(HeaderName::Authorization).is_empty());
    }
    assert_eq!(retry_at, [10, 20, 40]);
}

#[test]
fn no_answer_is_a_failure_and_the_next_round_starts_after_the_backoff() {
    let mut sim = registering_sim(60);
    let first = first_register(&mut sim);
    // Retransmitted over UDP, then timer F (64*T1 = 32 s).
    let resent = sim.advance(Duration::from_secs(33));
    assert!(resent.iter().all(|(_, s)| s.bytes == first.bytes));
    assert!(matches!(
        sim.events().as_slice(),
        [Event::Upstream {
            state: Upstream::Failed { status: None, .. },
            ..
        }]
    ));
    assert_eq!(state(&sim), (Registered::Failed, 0));
    let next = sim.advance(Duration::from_secs(10));
    let (_, again) = next.first().expect("a new round");
    assert_eq!(again.cseq(), "2 REGISTER");
}

#[test]
fn interval_too_brief_asks_again_with_min_expires() {
    let mut sim = registering_sim(60);
    let first = first_register(&mut sim);
    let brief = with_header(
        reply(&first, 423, "Interval Too Brief", Some("reg"), None, ""),
        "Min-Expires: 300",
    );
    sim.recv(CARRIER_A, &brief);
    let second = sim.one_to(CARRIER_A);
    assert_eq!(second.header(HeaderName::Expires), "300");
    sim.recv(CARRIER_A, &reply(&second, 200, "OK", Some("reg"), None, ""));
    // No expiry in the answer: what we asked for.
    assert!(matches!(
        sim.events().as_slice(),
        [Event::Upstream { state: Upstream::Registered { expires }, .. }] if expires.as_secs() == 300
    ));
}

#[test]
fn calls_for_the_contact_user_from_a_shared_address_belong_to_the_registration() {
    let mut policy = policy();
    // A second account with carrier-a's provider, from the same address.
    let mut second = trunk(
        "carrier-a2",
        &format!("{}/32", addr(CARRIER_A).ip()),
        CARRIER_A,
    );
    second.registration = Some(Arc::new(Registration {
        registrar: addr(CARRIER_A),
        domain: "itsp.example".into(),
        user: "acct-2".into(),
        auth_user: "acct-2".into(),
        secret: "x".into(),
        realm: None,
        contact_user: "acct-2".into(),
        expires: Duration::from_secs(60),
        retry_min: Duration::from_secs(10),
        retry_max: Duration::from_secs(60),
    }));
    policy.trunks.push(second);
    let ip = sbc_core::net::Flow::udp(addr(CARRIER_A), sbc_core::net::LocalId(0));
    assert_eq!(
        policy.trunk_for_request(&ip, Some(b"acct-2")).map(|t| t.0),
        Some(3)
    );
    assert_eq!(
        policy.trunk_for_request(&ip, Some(b"+3906")).map(|t| t.0),
        Some(1)
    );
}

/// Carrier-a's 407 to `invite`, with its tag and [`CHALLENGE`].
fn challenge_407(invite: &Sent, tag: &str) -> String {
    with_header(
        reply(
            invite,
            407,
            "Proxy Authentication Required",
            Some(tag),
            None,
            "",
        ),
        &format!("Proxy-Authenticate: {CHALLENGE}"),
    )
}

/// The INVITE resent with credentials is the same call: it spends no
/// second token of the trunk's max_cps (it would be skipped otherwise).
#[test]
fn the_resent_invite_spends_no_second_call_token() {
    let mut policy = registering_policy(60);
    policy.trunks[1].max_cps = Some(1);
    let mut sim = sim_of(policy);
    let _register = first_register(&mut sim);
    sim.recv(PBX, &invite(PBX, "+441234", "cps-1", "z9hG4bKcps", 1));
    let b_invite = sim.first_to(CARRIER_A);
    let challenge = challenge_407(&b_invite, "t1");
    sim.recv(CARRIER_A, &challenge);
    let sent = sim.sent();
    let again = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("INVITE"))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(again.to, addr(CARRIER_A), "not skipped to carrier-b");
    assert!(!again.header(HeaderName::ProxyAuthorization).is_empty());
}

#[test]
fn an_invite_challenged_by_the_trunk_goes_again_once_with_credentials() {
    let mut sim = registering_sim(60);
    let _register = first_register(&mut sim);
    sim.recv(PBX, &invite(PBX, "+441234", "chal-1", "z9hG4bKc1", 1));
    let b_invite = sim.first_to(CARRIER_A);
    assert!(b_invite.header(HeaderName::ProxyAuthorization).is_empty());
    let challenge = challenge_407(&b_invite, "t1");
    sim.recv(CARRIER_A, &challenge);
    let sent = sim.sent();
    let to_carrier: Vec<&Sent> = sent.iter().filter(|s| s.to == addr(CARRIER_A)).collect();
    assert_eq!(to_carrier.len(), 2, "{sent:?}");
    assert_eq!(to_carrier[0].method().as_deref(), Some("ACK"));
    let again = to_carrier[1];
    assert_eq!(again.method().as_deref(), Some("INVITE"));
    assert_eq!(
        again.cseq(),
        format!(
            "{} INVITE",
            b_invite
                .cseq()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u32>()
                .unwrap()
                + 1
        )
    );
    assert_eq!(
        again.header(HeaderName::CallId),
        b_invite.header(HeaderName::CallId)
    );
    assert_eq!(again.tag_of_from(), b_invite.tag_of_from());
    assert_answers(
        again,
        HeaderName::ProxyAuthorization,
        b"INVITE",
        b"sbc-secret",
    );
    // Nothing went to the caller but the 100 it already had.
    assert!(
        sent.iter()
            .all(|s| s.to != addr(PBX) || s.code() == Some(100))
    );

    // Challenged again: a failure like any other (no third INVITE); the
    // caller hears 403, as for any challenge it could not answer.
    let twice = challenge_407(again, "t2");
    sim.recv(CARRIER_A, &twice);
    let sent = sim.sent();
    assert!(
        !sent.iter().any(|s| s.method().as_deref() == Some("INVITE")),
        "{sent:?}"
    );
    let to_caller: Vec<u16> = sent
        .iter()
        .filter(|s| s.to == addr(PBX))
        .filter_map(Sent::code)
        .collect();
    assert_eq!(to_caller, [403]);
}

/// A provider that delivers calls to the Contact the SBC registered
/// (`sip:sbc-contact@sbc`) names the number called in the To header: the
/// call is routed on that number, which the PBX gets as its Request-URI.
#[test]
fn a_call_to_the_registrations_contact_is_routed_on_the_number_in_to() {
    let mut sim = registering_sim(60);
    let _register = first_register(&mut sim);
    let to_contact = invite(CARRIER_A, "sbc-contact", "to-reg-1", "z9hG4bKtoreg1", 1).replacen(
        "To: <sip:sbc-contact@192.0.2.1>",
        "To: <sip:+390212345100@itsp.example>",
        1,
    );
    sim.recv(CARRIER_A, &to_contact);
    let b = sim.first_to(PBX);
    assert!(
        b.text().starts_with("INVITE sip:+390212345100@"),
        "{}",
        b.text()
    );
    // A call to any other user of the SBC is routed on its Request-URI
    // as before: here no route takes it.
    let other = invite(CARRIER_A, "someone", "to-reg-2", "z9hG4bKtoreg2", 1).replacen(
        "To: <sip:someone@192.0.2.1>",
        "To: <sip:+390212345100@itsp.example>",
        1,
    );
    sim.recv(CARRIER_A, &other);
    let refused = sim.first_to(CARRIER_A);
    assert!(
        refused.text().starts_with("SIP/2.0 404 "),
        "{}",
        refused.text()
    );
}

/// A trunk that challenges an INVITE as a registrar would (401 with
/// WWW-Authenticate, RFC 3261 §22.2) gets the INVITE again with an
/// Authorization header, not a Proxy-Authorization one.
#[test]
fn an_invite_challenged_with_401_goes_again_with_authorization() {
    let mut sim = registering_sim(60);
    let _register = first_register(&mut sim);
    sim.recv(PBX, &invite(PBX, "+441234", "chal-401", "z9hG4bKc401", 1));
    let b_invite = sim.first_to(CARRIER_A);
    let challenge = with_header(
        reply(&b_invite, 401, "Unauthorized", Some("t1"), None, ""),
        &format!("WWW-Authenticate: {CHALLENGE}"),
    );
    sim.recv(CARRIER_A, &challenge);
    let sent = sim.sent();
    let again = sent
        .iter()
        .find(|s| s.to == addr(CARRIER_A) && s.method().as_deref() == Some("INVITE"))
        .expect("the INVITE again");
    assert!(again.header(HeaderName::ProxyAuthorization).is_empty());
    assert_eq!(
        again.header(HeaderName::CallId),
        b_invite.header(HeaderName::CallId)
    );
    assert_answers(again, HeaderName::Authorization, b"INVITE", b"sbc-secret");
}
