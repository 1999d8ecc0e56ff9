//! A trunk's `register = { ... }`: what is rejected (naming the field,
//! never showing the secret) and what reaches the policy.

use std::time::Duration;

use super::super::{Config, StatsRegistry};

const BASE: &str = "[sip]\nlisten = [\"127.0.0.1:5060\"]\n";

fn trunk(name: &str, source: &str, register: &str) -> String {
    format!(
        "[[trunks]]\nname = \"{name}\"\nsources = [\"{source}\"]\naddress = \"{source}:5060\"\n{register}"
    )
}

fn config(trunks: &str) -> Result<Config, String> {
    Config::from_toml_str(&format!("{BASE}{trunks}")).map_err(|e| e.to_string())
}

#[test]
fn defaults_come_from_the_trunk_and_the_user() {
    let c = config(&trunk(
        "itsp",
        "192.0.2.20",
        "register = { user = \"sbc-user\", secret = \"sbc-secret\" }\n",
    ))
    .unwrap();
    let policy = c.compile(&StatsRegistry::default(), 1);
    let r = policy.trunks[0].registration.as_ref().unwrap();
    assert_eq!(r.registrar, "192.0.2.20:5060".parse().unwrap());
    assert_eq!(&*r.domain, "192.0.2.20");
    assert_eq!(
        (&*r.user, &*r.auth_user, &*r.contact_user),
        ("sbc-user", "sbc-user", "sbc-user")
    );
    assert_eq!(&*r.secret, "sbc-secret");
    assert_eq!(r.realm, None);
    assert_eq!(r.expires, Duration::from_secs(600));
    assert_eq!((r.retry_min.as_secs(), r.retry_max.as_secs()), (10, 300));
    assert!(!format!("{c:?}").contains("sbc-secret"));
    assert!(!format!("{policy:?}").contains("sbc-secret"));
}

#[test]
fn every_field_reaches_the_policy() {
    let c = config(&trunk(
        "itsp",
        "192.0.2.20",
        concat!(
            "register = { user = \"0212345\", secret = \"pw\", registrar = \"192.0.2.21:5070\", ",
            "domain = \"voip.itsp.example\", auth_user = \"auth-0212345\", realm = \"itsp\", ",
            "contact_user = \"sbc-trunk-1\", expires_s = 120, retry_min_s = 5, retry_max_s = 60 }\n"
        ),
    ))
    .unwrap();
    let policy = c.compile(&StatsRegistry::default(), 1);
    let r = policy.trunks[0].registration.as_ref().unwrap();
    assert_eq!(r.registrar, "192.0.2.21:5070".parse().unwrap());
    assert_eq!(&*r.domain, "voip.itsp.example");
    assert_eq!(&*r.auth_user, "auth-0212345");
    assert_eq!(r.realm.as_deref(), Some("itsp"));
    assert_eq!(&*r.contact_user, "sbc-trunk-1");
    assert_eq!(r.expires, Duration::from_secs(120));
    assert_eq!((r.retry_min.as_secs(), r.retry_max.as_secs()), (5, 60));
}

#[test]
fn rejected_settings_name_the_field_and_hide_the_secret() {
    for (register, want) in [
        (
            "register = { user = \"u\", secret = \"hidden-pw\", expires_s = 5 }",
            "trunks[0].register.expires_s: 5 is out of range: must be between 10 and 86400 seconds",
        ),
        (
            "register = { user = \"u\", secret = \"hidden-pw\", retry_min_s = 60, retry_max_s = 30 }",
            "trunks[0].register.retry_max_s: 30 is below retry_min_s (60)",
        ),
        (
            "register = { user = \"a b\", secret = \"hidden-pw\" }",
            "is not a valid username",
        ),
        (
            "register = { user = \"u\", secret = \"hidden-pw\", domain = \"bad/host\" }",
            "is not a host name or IP address",
        ),
        ("register = { user = \"u\" }", "missing field `secret`"),
        (
            "register = { user = \"u\", secret = \"hidden-pw\", password = \"x\" }",
            "unknown field `password`",
        ),
    ] {
        let err = config(&trunk("itsp", "192.0.2.20", &format!("{register}\n"))).unwrap_err();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
        assert!(!err.contains("hidden-pw"), "{err}");
    }
}

#[test]
fn two_registrations_with_one_provider_may_share_its_addresses() {
    let shared = |a: &str, b: &str| {
        config(&format!(
            "{}{}",
            trunk("itsp-1", "192.0.2.20", a),
            trunk("itsp-2", "192.0.2.20", b)
        ))
    };
    let reg = |user: &str| format!("register = {{ user = \"{user}\", secret = \"pw\" }}\n");
    let ok = shared(&reg("acct-1"), &reg("acct-2")).unwrap();
    let policy = ok.compile(&StatsRegistry::default(), 1);
    let ip = sbc_core::net::Flow::udp(
        "192.0.2.20:5060".parse().unwrap(),
        sbc_core::net::LocalId(0),
    );
    assert_eq!(
        policy.trunk_for_request(&ip, Some(b"acct-2")).map(|t| t.0),
        Some(1)
    );
    assert_eq!(
        policy.trunk_for_request(&ip, Some(b"acct-1")).map(|t| t.0),
        Some(0)
    );
    // The same Contact user, or a trunk that does not register: which
    // trunk a call belongs to could not be told.
    let same = shared(&reg("acct-1"), &reg("acct-1")).unwrap_err();
    assert!(
        same.contains(
            "trunks[1].sources[0]: 192.0.2.20/32 is already a source of trunk \"itsp-1\""
        ),
        "{same}"
    );
    assert!(shared(&reg("acct-1"), "").is_err());
}

/// A trunk that registers to the SBC: `host = "dynamic"`.
const GATEWAY: &str = "[[trunks]]\nname = \"isdn-gw\"\nhost = \"dynamic\"\nusername = \"gw1\"\nsecret = \"gw-secret\"\n";

#[test]
fn a_dynamic_trunk_is_an_account_and_a_trunk_without_addresses() {
    let c = config(&format!(
        "{GATEWAY}{}[[routes]]\nname = \"in\"\nfrom = [\"carrier\"]\nnumbers = [\"+4455*\"]\ntargets = [{{ trunk = \"isdn-gw\" }}]\n",
        trunk("carrier", "192.0.2.20", "")
    ))
    .unwrap();
    let policy = c.compile(&StatsRegistry::default(), 1);
    let gw = &policy.trunks[0];
    assert!(gw.dynamic && gw.sources.is_empty());
    assert!(policy.reached_by_binding(sbc_core::policy::TrunkId(0)));
    assert_eq!(policy.fixed_address(sbc_core::policy::TrunkId(0)), None);
    // The registrar is on, and its account is the trunk's, under a name
    // no one can dial.
    assert!(policy.accounts.settings.is_some());
    let account = policy.accounts.account(b"gw1").unwrap();
    assert_eq!(account.trunk, Some(sbc_core::policy::TrunkId(0)));
    assert!(!policy.accounts.is_extension(&account.extension));
    assert!(!format!("{policy:?}").contains("gw-secret"));
    // `password` is accepted for `secret`.
    let alias = GATEWAY.replace("secret =", "password =");
    assert!(config(&alias).is_ok());
}

#[test]
fn dynamic_trunks_are_checked() {
    for (text, want) in [
        (
            GATEWAY.replace("username = \"gw1\"\n", ""),
            "trunks[0].username: required with host = \"dynamic\"",
        ),
        (
            GATEWAY.replace("secret = \"gw-secret\"\n", ""),
            "trunks[0].secret: required with host = \"dynamic\"",
        ),
        (
            format!("{GATEWAY}sources = [\"192.0.2.9\"]\n"),
            "trunks[0].sources: not with host = \"dynamic\"",
        ),
        (
            format!("{GATEWAY}address = \"192.0.2.9:5060\"\n"),
            "trunks[0].address: not with host = \"dynamic\"",
        ),
        (
            GATEWAY.replace("\"dynamic\"", "\"static\""),
            "trunks[0].host: unknown variant `static`",
        ),
        (
            format!("{}username = \"x\"\n", trunk("carrier", "192.0.2.20", "")),
            "trunks[0].username: only a trunk with host = \"dynamic\" has credentials",
        ),
        (
            "[[trunks]]\nname = \"carrier\"\nsources = [\"192.0.2.20\"]\n".to_owned(),
            "trunks[0].address: required",
        ),
        (
            format!(
                "{GATEWAY}[[extensions]]\nnumber = \"100\"\naccounts = [{{ username = \"gw1\", secret = \"x\" }}]\n"
            ),
            "trunks[0].username: duplicate username \"gw1\" (first at extensions[0].accounts[0])",
        ),
    ] {
        let err = config(&text).unwrap_err();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
        assert!(!err.contains("gw-secret"), "{err}");
    }
}
