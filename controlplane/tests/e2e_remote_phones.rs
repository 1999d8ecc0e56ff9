//! config/examples/remote-phones.toml with the real binary and stock
//! SIPp: alice's two accounts register, a carrier call to her DID rings
//! both and completes on the one that answers while the other is
//! CANCELled; unregistered, the DID gets 480. A source that keeps failing
//! authentication is challenged again each time, then ignored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const DID: &str = "+390212345100";
const OFF: &str = "{ method = \"off\" }";

/// The example on this test's network. Each phone is its own source; the
/// stranger limit is raised so quick test exchanges are never dropped.
/// Keepalives are off (an OPTIONS would surprise a sipp playing a phone)
/// unless `keepalive` says otherwise.
fn phones_config(net: Net, keepalive: &str) -> String {
    let mut text = example("remote-phones.toml", net).replace(
        "[registrar]\n",
        &format!("[registrar]\nkeepalive = {keepalive}\n"),
    );
    text.push_str(concat!(
        "\n[acl]\nstranger_answers_per_s = 50\n",
        "\n[shards]\ncount = 2\npin_threads = false\n"
    ));
    text
}

#[test]
fn the_did_rings_both_of_alices_phones_and_the_one_that_answers_takes_it() {
    let net = Net(126);
    let sbc = Sbc::start(net, &phones_config(net, OFF));
    let desk = net.ip(51);
    let mobile = net.ip(52);
    for (ip, user, password, k) in [
        (&desk, "alice-desk", "Desk-9f2k-Alice", 0),
        (&mobile, "alice-mobile", "Mob-4h7q-Alice", 10),
    ] {
        let r = registration(net, "uac_register.xml", (ip, user, password), k);
        assert_eq!(
            (r.code, r.successful),
            (Some(0), 1),
            "{}\n{}",
            r.output,
            sbc.log()
        );
    }
    let body = registrations(net, |b| {
        b.contains("alice-desk") && b.contains("alice-mobile")
    });
    assert!(body.contains("\"extension\":\"100\""), "{body}");
    // Neither the bindings nor the metrics show a secret (or its HA1).
    let metrics = http_get(&net.metrics(), "/metrics").unwrap_or_default();
    for (user, secret) in [
        ("alice-desk", "Desk-9f2k-Alice"),
        ("alice-mobile", "Mob-4h7q-Alice"),
    ] {
        let ha1 = md5_hex(&format!("{user}:sbc.example:{secret}"));
        for shown in [&body, &metrics] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
            assert!(!shown.contains(&ha1), "the HA1 of {user} shown: {shown}");
        }
    }

    // The desk phone answers after ringing a moment (so the mobile's sipp
    // has sent its 180 and waits for the CANCEL); the mobile rings until
    // it is CANCELled.
    let answering = phone_sipp(net, &desk, "uas_answer.xml", 20, &["-d", "500"]);
    let ringing = phone_sipp(net, &mobile, "uas_ring_no_answer.xml", 30, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let mut args = uac_args(net, &net.ip(20), "uac_basic.xml", DID, 1, 1, 40);
    args.extend(["-d".into(), "500".into()]);
    let carrier = Sipp::spawn("carrier", &args).wait(Duration::from_secs(60));
    let answering = answering.wait(Duration::from_secs(30));
    let ringing = ringing.wait(Duration::from_secs(30));
    assert_eq!(
        (
            carrier.code,
            carrier.successful,
            answering.successful,
            ringing.successful
        ),
        (Some(0), 1, 1, 1),
        "carrier:\n{}\ndesk:\n{}\nmobile:\n{}\n{}",
        carrier.output,
        answering.output,
        ringing.output,
        sbc.log()
    );

    // Both unregister: the DID is 480.
    for (ip, user, password, k) in [
        (&desk, "alice-desk", "Desk-9f2k-Alice", 50),
        (&mobile, "alice-mobile", "Mob-4h7q-Alice", 60),
    ] {
        let r = registration(net, "uac_unregister.xml", (ip, user, password), k);
        assert_eq!((r.code, r.successful), (Some(0), 1), "{}", r.output);
    }
    let body = registrations(net, |b| !b.contains("alice"));
    assert!(!body.contains("alice"), "{body}");
    let late = Sipp::spawn(
        "carrier",
        &uac_args(net, &net.ip(20), "uac_basic.xml", DID, 1, 1, 70),
    )
    .wait(Duration::from_secs(60));
    assert_eq!(late.successful, 0);
    assert!(
        late.output.contains("received 'SIP/2.0 480"),
        "{}",
        late.output
    );
    assert_eq!(
        sbc.metric("sbc_requests_rejected_total{reason=\"not_registered\"}"),
        1.0
    );
}

#[test]
fn wrong_passwords_are_challenged_again_until_the_source_is_blocked() {
    let net = Net(127);
    let sbc = Sbc::start(net, &phones_config(net, OFF));
    let guesser = net.ip(53);
    // The example blocks a source after 5 failures within a minute.
    for i in 0..5 {
        let r = registration(net, "uac_register.xml", (&guesser, "bob", "guess"), i * 10);
        assert_eq!(r.successful, 0, "{}", r.output);
        assert!(r.output.contains("received 'SIP/2.0 401"), "{}", r.output);
    }
    assert_eq!(
        sbc.metric("sbc_registrar_requests_total{result=\"auth_failed\"}"),
        5.0,
        "{}",
        sbc.log()
    );
    // Blocked: not even a challenge now; another source still gets one.
    let register = |from: &str| {
        format!(
            "REGISTER sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {from}:5060;branch=z9hG4bK-{from}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@{sbc}>;tag=t\r\nTo: <sip:bob@{sbc}>\r\n\
             Call-ID: blocked-{from}\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@{from}:5060>\r\n\
             Content-Length: 0\r\n\r\n",
            sbc = net.sbc()
        )
    };
    // From the port sipp used (the lockout is shared by the shards, so
    // any port would do; this one is the guesser's own).
    let blocked = Peer {
        sock: std::net::UdpSocket::bind(format!("{guesser}:5070")).unwrap(),
    };
    blocked.send(&net.sbc(), &register(&guesser));
    assert!(blocked.recv(Duration::from_secs(2)).is_none());
    let other_ip = net.ip(54);
    let other = Peer::bind(&other_ip);
    other.send(&net.sbc(), &register(&other_ip));
    let (answer, _) = other.recv(Duration::from_secs(5)).expect("a challenge");
    assert!(answer.starts_with("SIP/2.0 401"), "{answer}");
    assert!(sbc.metric("sbc_registrar_requests_total{result=\"blocked\"}") >= 1.0);
    // The operator sees why, and who is blocked.
    assert_eq!(
        sbc.metric("sbc_auth_failures_total{reason=\"wrong_password\"}"),
        5.0
    );
    assert_eq!(sbc.metric("sbc_blocked_sources"), 1.0);
    // No password appears in the log.
    let log = sbc.log();
    for secret in [
        "Desk-9f2k-Alice",
        "Mob-4h7q-Alice",
        "Bob-7x1z-Secret",
        "guess",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn a_phone_that_goes_away_is_marked_unreachable_by_its_keepalives() {
    let net = Net(128);
    let config = phones_config(
        net,
        "{ method = \"options\", interval_s = 5, unreachable_after = 1 }",
    );
    let sbc = Sbc::start(net, &config);
    let phone = net.ip(55);
    // bob registers, and his sipp exits: nobody answers the OPTIONS.
    let r = registration(
        net,
        "uac_register.xml",
        (&phone, "bob", "Bob-7x1z-Secret"),
        0,
    );
    assert_eq!((r.code, r.successful), (Some(0), 1), "{}", r.output);
    let body = registrations(net, |b| b.contains("\"reachable\":true"));
    assert!(body.contains("\"account\":\"bob\""), "{body}");
    // One interval to send, one more without an answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut body = String::new();
    while Instant::now() < deadline && !body.contains("\"reachable\":false") {
        std::thread::sleep(Duration::from_millis(250));
        body = http_get(&net.metrics(), "/registrations").unwrap_or_default();
    }
    assert!(
        body.contains("\"reachable\":false"),
        "{body}\n{}",
        sbc.log()
    );
    assert_eq!(sbc.metric("sbc_registrations_unreachable"), 1.0);
    assert_eq!(
        sbc.metric("sbc_extension_registrations{extension=\"101\"}"),
        1.0
    );
    assert!(sbc.log().contains("phone unreachable"), "{}", sbc.log());
}
