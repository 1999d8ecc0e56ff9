//! The registrar with the real binary and stock SIPp: a phone registers
//! with digest authentication (401, then 200), a wrong password is
//! challenged again and counted, `/registrations` and the metrics show the binding, and
//! the binding survives a restart through the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

/// The example, plus a registrar with extension 201 (account alice) whose
/// bindings are kept in a new temporary directory (which lives as long as
/// the returned handle).
fn registrar_config(net: Net) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registrations.redb");
    let mut text = example_config(net, 2);
    text.push_str(&format!(
        r#"
[acl]
stranger_answers_per_s = 50

[registrar]
realm = "sbc.test"
state_file = "{}"
# An OPTIONS would surprise the sipp playing the phone.
keepalive = {{ method = "off" }}

[[extensions]]
number = "201"
accounts = [{{ username = "alice", secret = "alices-secret" }}]
"#,
        state.display()
    ));
    (dir, text)
}

/// carrier-a calls the DID +3902999 (extension 201): the call reaches a
/// sipp answering at `phone` (where alice registered from) and runs to
/// its end.
fn did_call_reaches(net: Net, phone: &str, sbc: &Sbc) {
    let uas = phone_sipp(net, phone, "uas_answer.xml", 20, &[]);
    let mut args = uac_args(net, &net.carrier_a(), "uac_basic.xml", "+3902999", 1, 1, 60);
    args.extend(["-d".into(), "500".into()]);
    let uac = Sipp::spawn("carrier", &args).wait(Duration::from_secs(60));
    let uas = uas.wait(Duration::from_secs(30));
    assert_one_call(&uac, &uas, sbc);
}

/// The DID +3902999 from carrier-a, to extension 201.
const DID_TO_201: &str =
    "\n[[dids]]\nnumbers = [\"+3902999\"]\nfrom = [\"carrier-a\"]\nextension = \"201\"\n";

/// SIPp registering `user` with `password` from `ip`.
fn register(net: Net, ip: &str, user: &str, password: &str, k: u16) -> SippResult {
    registration(net, "uac_register.xml", (ip, user, password), k)
}

/// The store is written while the SBC runs (at most a second after a
/// change), so even a crash keeps the binding: after SIGKILL and a
/// restart, the shards ring the phone where it registered from.
#[test]
fn a_phone_registers_with_digest_auth_and_survives_a_restart() {
    let net = Net(117);
    let (state_dir, mut config) = registrar_config(net);
    config.push_str(DID_TO_201);
    let state = state_dir.path().join("registrations.redb");
    let phone = net.ip(50);
    {
        let mut sbc = Sbc::start(net, &config);
        let ok = register(net, &phone, "alice", "alices-secret", 0);
        assert_eq!(
            (ok.code, ok.successful),
            (Some(0), 1),
            "{}\n{}",
            ok.output,
            sbc.log()
        );
        let body = registrations(net, |b| b.contains("alice"));
        assert!(body.contains("\"account\":\"alice\""), "{body}");
        assert!(body.contains("\"extension\":\"201\""), "{body}");
        assert!(
            body.contains(&format!("\"source\":\"{phone}:5070\"")),
            "{body}"
        );
        assert!(body.contains("\"transport\":\"UDP\""), "{body}");
        assert_eq!(sbc.wait_metric("sbc_registrations", 1.0), 1.0);
        assert_eq!(
            sbc.metric("sbc_registrar_requests_total{result=\"registered\"}"),
            1.0
        );
        assert_eq!(
            sbc.metric("sbc_registrar_requests_total{result=\"challenged\"}"),
            1.0
        );

        // A wrong password: challenged again, which the scenario does not
        // expect.
        let wrong = register(net, &net.ip(51), "alice", "guess", 10);
        assert_eq!(wrong.successful, 0, "{}", wrong.output);
        assert!(
            wrong.output.contains("received 'SIP/2.0 401"),
            "{}",
            wrong.output
        );
        assert_eq!(
            sbc.metric("sbc_registrar_requests_total{result=\"auth_failed\"}"),
            1.0
        );
        // The password appears nowhere in the log.
        assert!(!sbc.log().contains("alices-secret"));
        assert!(sbc.log().contains("registered"), "{}", sbc.log());
        // Saved within a second or so of the change (waited for, up to
        // 20 s on a busy machine); then a crash.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let saved = || {
            let needle = b"\"account\":\"alice\"";
            std::fs::read(&state).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        };
        while !saved() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        sbc.kill();
    }
    // Killed: the store holds the binding, and no secret.
    let saved = std::fs::read(&state).expect("store written while running");
    let holds = |what: &[u8]| saved.windows(what.len()).any(|w| w == what);
    assert!(holds(b"\"account\":\"alice\""));
    assert!(!holds(b"alices-secret"));
    let sbc = Sbc::start(net, &config);
    let body = registrations(net, |b| b.contains("alice"));
    assert!(
        body.contains(&format!("\"source\":\"{phone}:5070\"")),
        "{body}\n{}",
        sbc.log()
    );
    assert!(
        sbc.log().contains("registrations restored"),
        "{}",
        sbc.log()
    );
    assert_eq!(sbc.metric("sbc_registrations"), 1.0);
    // The shards have the binding too: the carrier's call to the DID
    // reaches the phone where it registered from.
    did_call_reaches(net, &phone, &sbc);
}

/// A carrier's call to a DID routed to extension 201 reaches the phone
/// that registered for it, at the address it registered from, and runs
/// to its end; with nobody registered the carrier hears 480.
#[test]
fn a_did_rings_the_registered_phone() {
    let net = Net(118);
    let (_state_dir, mut config) = registrar_config(net);
    config.push_str(DID_TO_201);
    let sbc = Sbc::start(net, &config);
    let phone = net.ip(50);

    // Nobody registered yet: 480 (the scenario expects a 200, so it fails).
    let early = Sipp::spawn(
        "uac",
        &uac_args(net, &net.carrier_a(), "uac_basic.xml", "+3902999", 1, 1, 40),
    )
    .wait(Duration::from_secs(60));
    assert_eq!(early.successful, 0);
    assert!(early.output.contains("480"), "{}", early.output);
    assert_eq!(
        sbc.metric("sbc_requests_rejected_total{reason=\"not_registered\"}"),
        1.0
    );

    let ok = register(net, &phone, "alice", "alices-secret", 0);
    assert_eq!(
        (ok.code, ok.successful),
        (Some(0), 1),
        "{}\n{}",
        ok.output,
        sbc.log()
    );
    registrations(net, |b| b.contains("alice"));

    // The phone now answers on the address it registered from.
    did_call_reaches(net, &phone, &sbc);
}

/// A phone calls out: it is asked for its credentials (407), calls again
/// with them, and reaches the carrier with its extension number as the
/// caller; a wrong password is challenged again and gets no call.
#[test]
fn a_phone_authenticates_and_calls_out() {
    let net = Net(119);
    let (_state_dir, mut config) = registrar_config(net);
    config.push_str(concat!(
        "\n[[extensions]]\nnumber = \"202\"\n",
        "accounts = [{ username = \"bob\", secret = \"bobs-secret\" }]\n",
        "\n[[routes]]\nname = \"phones-out\"\nnumbers = [\"+44*\"]\n",
        "targets = [{ trunk = \"carrier-b\" }]\n",
    ));
    let sbc = Sbc::start(net, &config);
    let phone = net.ip(51);
    let call = |password: &str, k: u16| {
        let who = (phone.as_str(), "bob", password);
        let mut args = phone_uac_args(net, "uac_auth_call.xml", "+441234567", who, k);
        args.extend(["-d".to_owned(), "500".to_owned()]);
        Sipp::spawn("phone", &args)
    };
    let carrier = Sipp::spawn(
        "carrier-b",
        &uas_args(net, &net.carrier_b(), "uas_answer.xml", 1, 20),
    );
    let phone_call = call("bobs-secret", 0).wait(Duration::from_secs(60));
    let carrier = carrier.wait(Duration::from_secs(30));
    assert_one_call(&phone_call, &carrier, &sbc);
    // Counted as a phone's request, not as a REGISTER the registrar
    // answered (bob never registered).
    assert!(sbc.metric("sbc_phone_auth_requests_total{result=\"challenged\"}") >= 1.0);
    assert_eq!(
        sbc.metric("sbc_registrar_requests_total{result=\"challenged\"}"),
        0.0
    );

    // A wrong password: challenged again (sipp takes the second 407 for a
    // retransmission of the first and gives up at its timeout).
    let wrong = call("guess", 40).wait(Duration::from_secs(90));
    assert_eq!(wrong.successful, 0, "{}", wrong.output);
    assert_eq!(
        sbc.metric("sbc_phone_auth_requests_total{result=\"auth_failed\"}"),
        1.0
    );
    assert_eq!(
        sbc.metric("sbc_registrar_requests_total{result=\"auth_failed\"}"),
        0.0
    );
}

/// A gateway that registers to the SBC (`host = "dynamic"`): calls routed
/// to it get 480 until it registers, then reach it where it registered
/// from.
#[test]
fn a_dynamic_trunk_is_reached_where_it_registered_from() {
    let net = Net(129);
    let (_state_dir, mut config) = registrar_config(net);
    config.push_str(concat!(
        "\n[[trunks]]\nname = \"isdn-gw\"\nhost = \"dynamic\"\n",
        "username = \"gw1\"\nsecret = \"gw-secret\"\n",
        "\n[[routes]]\nname = \"to-gw\"\nfrom = [\"carrier-a\"]\nnumbers = [\"+4455*\"]\n",
        "targets = [{ trunk = \"isdn-gw\" }]\n",
    ));
    let sbc = Sbc::start(net, &config);
    let call = |k: u16| {
        let mut args = uac_args(net, &net.carrier_a(), "uac_basic.xml", "+445512", 1, 1, k);
        args.extend(["-d".into(), "500".into()]);
        Sipp::spawn("carrier", &args)
    };
    let early = call(0).wait(Duration::from_secs(60));
    assert_eq!(early.successful, 0);
    assert!(
        early.output.contains("received 'SIP/2.0 480"),
        "{}",
        early.output
    );
    let registered = "sbc_dynamic_trunk_registered{trunk=\"isdn-gw\"}";
    assert_eq!(sbc.metric(registered), 0.0);

    let gw = net.ip(60);
    let ok = register(net, &gw, "gw1", "gw-secret", 10);
    assert_eq!((ok.code, ok.successful), (Some(0), 1), "{}", ok.output);
    assert_eq!(sbc.wait_metric(registered, 1.0), 1.0, "{}", sbc.log());

    let uas = phone_sipp(net, &gw, "uas_answer.xml", 20, &[]);
    let uac = call(40).wait(Duration::from_secs(60));
    let uas = uas.wait(Duration::from_secs(30));
    assert_one_call(&uac, &uas, &sbc);
    assert_eq!(
        sbc.metric("sbc_calls_answered_total{trunk=\"isdn-gw\",direction=\"outbound\"}"),
        1.0
    );
    assert!(!sbc.log().contains("gw-secret"));
}
